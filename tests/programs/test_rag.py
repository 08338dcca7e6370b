"""The rag program's retrieval wiring: several corpora behind the semantic router (real MiniLM embeddings)."""

import json

import pytest

from dspyc import registry
from dspyc.retrieval import SemanticRouter

CORPORA = {
    "football": [
        ("Arsenal", "Arsenal is a football club in London that plays in the Premier League."),
        ("Offside", "The offside rule in football stops attackers waiting near the goal."),
        ("World Cup", "The FIFA World Cup is the football tournament between national teams."),
    ],
    "baking": [
        ("Sourdough", "Sourdough bread is leavened with a starter of wild yeast and flour."),
        ("Croissant", "A croissant is a buttery laminated pastry baked in the oven."),
        ("Oven", "Bake the dough in a hot oven until the crust is golden brown."),
    ],
}


def qa_folder(root, name, passages):
    d = root / name
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in passages))
    rows = [
        {"id": f"{name}-{i}", "question": f"What is {t}?", "answer": t, "supporting_titles": [t]}
        for i, (t, _) in enumerate(passages)
    ]
    (d / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.mark.integration
def test_sources_are_routed_by_query(tmp_path):
    folders = {name: qa_folder(tmp_path, name, passages) for name, passages in CORPORA.items()}
    spec = registry.get("rag")
    data = spec.load_data(str(folders["football"]), 0)
    program = spec.build(data, {"sources": [str(folders["baking"])], "retriever": "bm25"})
    router = program.retriever
    assert isinstance(router, SemanticRouter) and set(router.names) == {"football", "baking"}
    assert router.route("how long should bread dough rise before baking?") == "baking"
    assert router.route("who won the league title and how many goals were scored?") == "football"
    assert router.search("laminated pastry with butter", 1)[0].passage.title == "Croissant"


@pytest.mark.integration
def test_one_corpus_needs_no_router(tmp_path):
    spec = registry.get("rag")
    data = spec.load_data(str(qa_folder(tmp_path, "football", CORPORA["football"])), 0)
    program = spec.build(data, {"retriever": "bm25"})
    assert not isinstance(program.retriever, SemanticRouter)


@pytest.mark.integration
def test_a_links_hop_is_built_over_the_retrievers_own_passages(tmp_path):
    spec = registry.get("rag")
    data = spec.load_data(str(qa_folder(tmp_path, "football", CORPORA["football"])), 0)
    program = spec.build(data, {"retriever": "bm25", "second_hop": "links", "abstain": False})
    named = program.links.named_in(["The World Cup and Arsenal."], {"Arsenal"}, 3)
    assert [p.id for p in named] == ["World Cup#0"]  # a passage id the context and the retriever share
    assert spec.build(data, {"retriever": "bm25", "second_hop": "query", "abstain": False}).links is None


def test_the_rerankers_questions_count_as_learned_from(tmp_path):
    spec = registry.get("rag")
    data = spec.load_data(str(qa_folder(tmp_path, "football", CORPORA["football"] * 4)), 0)
    held = {ex.id for name in ("dev", "test") for ex in data.splits[name]}
    assert spec.learned_from(data, {"retriever": "hybrid"}) == []
    pool = spec.learned_from(data, {"retriever": "hybrid+rerank"})
    assert pool and not set(pool) & held and set(pool) | held == {ex.id for ex in data.splits["all"]}


class _P:
    def __init__(self, pid, title, text=""):
        self.id, self.title, self.text = pid, title, text


def test_a_later_hop_adds_its_best_new_passages_without_pushing_out_the_questions():
    from programs.rag import MultiHopRAG

    rag = MultiHopRAG(retriever=None, max_passages=6, later_hop_passages=2)
    hop1 = [_P(i, f"q{i}") for i in range(6)]
    hop2 = [_P(3, "q3"), _P(10, "b0"), _P(11, "b1"), _P(12, "b2")]
    assert [p.title for p in rag._context([hop1, hop2])] == ["q0", "q1", "q2", "q3", "b0", "b1"]
    assert [p.title for p in rag._context([hop1])] == [f"q{i}" for i in range(6)]
    assert [p.title for p in rag._context([hop1[:2], hop2])] == ["q0", "q1", "q3", "b0", "b1", "b2"]


def test_citations_are_the_passages_that_hold_the_answer():
    from programs.rag import cite

    ps = [
        _P(1, "Paris", "Paris is the capital of France."),
        _P(2, "Lyon", "Lyon is a city on the Rhone."),
        _P(3, "Eiffel Tower", "The tower in Paris was built by Gustave Eiffel."),
    ]
    assert [p.title for p in cite("Gustave Eiffel", ps)] == ["Eiffel Tower"]
    assert [p.title for p in cite("Paris", ps)] == ["Paris", "Eiffel Tower"]
    assert cite("Marseille", ps) == [] and cite("yes", ps) == [] and cite("unknown", ps) == []


def test_the_program_reflects_when_no_passage_holds_the_answer():
    import dspy

    from dspyc.adapter import ConstrainedJSONAdapter
    from programs.rag import MultiHopRAG

    class Retriever:
        def search(self, query, k):
            hits = (
                [_P(1, "Lyon", "Lyon is a city.")]
                if "rewritten" not in query
                else [_P(2, "Paris", "Paris is the capital.")]
            )
            return [type("Hit", (), {"passage": p}) for p in hits]

    class LM(dspy.BaseLM):
        def __init__(self):
            super().__init__("fake")
            self.calls = []

        def __call__(self, prompt=None, messages=None, **kw):
            user = messages[-1]["content"]
            self.calls.append(user)
            if "Failed query" in user:
                return ['{"query":"rewritten capital"}']
            if "Name the person" in messages[0]["content"]:
                return ['{"query":"France"}']
            return ["Paris"]

        def forward(self, *a, **k):
            raise NotImplementedError

    lm = LM()
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = MultiHopRAG(Retriever(), hops=2, k=2)(question="What is the capital of France?")
    assert pred.answer == "Paris" and pred.rewrites == 1 and pred.citations == ["Paris"]
    assert len(lm.calls) == 4  # query, answer (ungrounded), rewrite, answer


def test_a_title_is_cited_once_when_two_of_its_chunks_hold_the_answer():
    import dspy

    from programs.rag import MultiHopRAG

    class Retriever:
        def search(self, query, k):
            hits = [_P(1, "France", "The capital is Paris."), _P(2, "France", "Paris has 2 million people.")]
            return [type("Hit", (), {"passage": p}) for p in hits]

    # the adapter is named: another test may have configured dspyc's JSON adapter process-wide
    with dspy.context(lm=dspy.utils.DummyLM([{"answer": "Paris"}]), adapter=dspy.ChatAdapter()):
        pred = MultiHopRAG(Retriever(), hops=1, k=2)(question="What is the capital of France?")
    assert pred.answer == "Paris" and pred.citations == ["France"]


class _Dense:
    """A dense index whose best cosine for a question is given: 0.9 for a question about Paris, else 0.3."""

    def search(self, query, k):
        score = 0.9 if "Paris" in query or "France" in query else 0.3
        hits = [_P(1, "France", "The capital is Paris."), _P(2, "Gold", "gold")]
        return [type("Hit", (), {"passage": p, "score": score - 0.1 * i}) for i, p in enumerate(hits)][:k]


def _ask(question, answer, abstain=True, threshold=0.5, check_echo=False):
    import dspy

    from programs.rag import MultiHopRAG, Support

    class Retriever:
        def search(self, query, k):
            return [type("Hit", (), {"passage": _P(1, "France", "The capital is Paris, on the Seine.")})]

    support = Support(_Dense(), threshold)
    program = MultiHopRAG(
        Retriever(), hops=1, k=1, max_rewrites=0, abstain=abstain, support=support, check_echo=check_echo
    )
    with dspy.context(lm=dspy.utils.DummyLM([{"answer": answer}] * 3), adapter=dspy.ChatAdapter()):
        return program(question=question)


def test_the_program_says_it_does_not_know_instead_of_a_span_no_passage_supports():
    assert (p := _ask("What is the capital of France?", "Paris")).answer == "Paris" and not p.abstained
    # a grounded word for a question the corpus holds nothing about: declined, the span not handed back
    assert (p := _ask("Which country is Lyon in?", "Paris")).answer == "" and p.abstained
    assert (p := _ask("What is the capital of France?", "Berlin")).answer == "" and p.abstained  # in no passage
    assert (p := _ask("What is the capital of France?", "unknown")).abstained
    # yes/no needs no passage to hold it; with the rule off nothing is declined
    assert not _ask("Is Paris in France?", "yes").abstained
    assert (p := _ask("Which country is Lyon in?", "Paris", abstain=False)).answer == "Paris" and not p.abstained


def test_an_answer_that_restates_the_question_is_declined():
    from programs.rag import echoes

    assert echoes("What year did he star in the remake of the 2002 Hong Kong film?", "2002")  # a phrase of it
    assert echoes("Where does the motorway end that runs south of Preston?", "The motorway ends that runs south")
    assert not echoes("Where does the motorway end that runs south of Preston?", "Colne")
    assert not echoes("Which came first, Paris or the Seine?", "Paris")  # a choice is answered in its own words
    assert not echoes("What did he write about in Beer Hunter, Whisky Chaser?", "beer and whisky")  # not in a row
    assert not echoes("Which Native American tribes is it named after?", "Lakota and Dakota Native American tribes")
    assert (p := _ask("Is Paris on the Seine, in France?", "Paris", check_echo=True)).abstained and p.answer == ""
    assert not _ask("What river runs through Paris?", "Seine", check_echo=True).abstained
    assert not _ask("Is Paris on the Seine, in France?", "Paris").abstained  # the check off


@pytest.mark.filterwarnings("ignore:rag. no question outside")
def test_the_support_threshold_declines_the_target_share_unless_that_declines_answerable_questions():
    import dspy

    from programs.rag import calibrate

    def dense(gold_score):  # question i: its gold passage scores gold_score(i), its best other passage i/10
        class Dense:
            def search(self, query, k):
                i = int(query.split()[-1])
                return [
                    type("Hit", (), {"passage": _P(0, f"gold {i}", ""), "score": gold_score(i)}),
                    type("Hit", (), {"passage": _P(1, "other", ""), "score": i / 10}),
                ]

        return Dense()

    qs = [dspy.Example(question=f"q {i}", gold_titles=[f"gold {i}"]) for i in range(10)]
    titles = {f"gold {i}" for i in range(10)}
    # gold passages score far above the rest (wiki): 8 of 10 declined without them, none with them
    t = calibrate(dense(lambda i: 0.99), qs, titles, target=0.8, max_false=0.1)
    assert t == 0.8 and sum(i / 10 < t for i in range(10)) == 8
    # gold passages no closer than distractors (HotPotQA): the threshold drops so at most 1 of 10 answerable goes
    t = calibrate(dense(lambda i: i / 10), qs, titles, target=0.8, max_false=0.1)
    assert t == 0.1 and sum(i / 10 < t for i in range(10)) == 1
    # a question whose gold passage is not in the corpus is no evidence of an answerable one's score
    lost = [dspy.Example(question=f"q {i}", gold_titles=[f"gone {i}"]) for i in range(10)]
    assert calibrate(dense(lambda i: 0.99), qs + lost, titles, target=0.8, max_false=0.1) == 0.8
    assert calibrate(dense(lambda i: 0.99), [], titles, target=0.8, max_false=0.1) == 0.0  # nothing to calibrate on

    # questions 0-4 name their gold title: never declined with it in, so the cap on false declines rises (0.1 -> 0.6)
    from dspyc.retrieval.links import TitleLinks
    from programs.rag import Support

    links = TitleLinks([_P(i, f"Gold{i}", "") for i in range(10)])
    named = [
        dspy.Example(question=f"{'Is Gold' if i < 5 else 'Is it'}{i} big {i}", gold_titles=[f"Gold{i}"])
        for i in range(10)
    ]
    named_titles = {f"Gold{i}" for i in range(10)}
    t = calibrate(dense(lambda i: i / 10), named, named_titles, target=0.8, max_false=0.1, links=links)
    assert t == 0.6
    support = Support(dense(lambda i: i / 10), t, links=links)
    assert support.holds("Is Gold1 big 1") and not support.holds("Is it big 1") and support.holds("Is it big 7")


def test_a_question_naming_what_no_passage_mentions_is_not_supported_whatever_its_cosine():
    from dspyc.retrieval.mentions import Mentions
    from programs.rag import Support

    mentions = Mentions([_P(1, "France", "The capital is Paris, on the Seine.")])
    support = Support(_Dense(), 0.5, mentions=mentions)
    assert support.holds("What river runs through Paris?")  # close, and every name mentioned
    assert not support.holds("Which river runs through Paris and Toad Hall?")  # close, but Toad Hall is nowhere
    assert not support.holds("Which country is Lyon in?")  # far and unmentioned
    assert Support(_Dense(), 0.5).holds("Which river runs through Paris and Toad Hall?")  # the rule off
    # a named title does not hold a question that also names what no passage mentions
    from dspyc.retrieval.links import TitleLinks

    named = Support(_Dense(), 0.5, links=TitleLinks([_P(1, "France", "")]), mentions=mentions)
    assert named.holds("Is France big?") and not named.holds("Did Toad Hall ever see France?")


def test_a_links_hop_takes_the_bridge_entitys_passage_without_asking_the_lm():
    import dspy

    from dspyc.adapter import ConstrainedJSONAdapter
    from dspyc.retrieval.links import TitleLinks
    from programs.rag import MultiHopRAG

    film = _P(1, "Alien (film)", "Alien is a 1979 film directed by Ridley Scott.")
    scott, other = _P(2, "Ridley Scott", "Ridley Scott was born in South Shields."), _P(3, "Ridley", "A town.")

    class Retriever:
        def search(self, query, k):
            return [type("Hit", (), {"passage": film})]

    class LM(dspy.BaseLM):
        def __init__(self):
            super().__init__("fake")
            self.calls = []

        def __call__(self, prompt=None, messages=None, **kw):
            self.calls.append(messages[0]["content"])
            return ["South Shields"]

        def forward(self, *a, **k):
            raise NotImplementedError

    lm = LM()
    program = MultiHopRAG(Retriever(), hops=2, k=2, links=TitleLinks([film, scott, other]))
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = program(question="Where was the director of Alien born?")
    assert pred.context_titles == ["Alien (film)", "Ridley Scott"]  # the longest title named, not "Ridley"
    assert pred.queries[1] == "links: Ridley Scott" and pred.answer == "South Shields"
    assert len(lm.calls) == 1 and "Name the person" not in lm.calls[0]  # the answer step only


def test_a_program_copied_by_an_optimizer_shares_its_retriever():
    import copy

    from dspyc.retrieval.bm25 import BM25Retriever
    from dspyc.retrieval.chunking import chunk_documents
    from programs.rag import MultiHopRAG

    retriever = BM25Retriever(chunk_documents([{"title": t, "text": x} for t, x in CORPORA["baking"]]))
    program = MultiHopRAG(retriever)
    assert program.deepcopy().retriever is retriever and copy.deepcopy(program).retriever is retriever
