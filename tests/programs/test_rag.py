"""The rag program's retrieval wiring: several corpora behind the semantic router (real MiniLM embeddings)."""

import json

import pytest

from dspyc import registry
from dspyc.retrieval import SemanticRouter

CORPORA = {
    "football": [("Arsenal", "Arsenal is a football club in London that plays in the Premier League."),
                 ("Offside", "The offside rule in football stops attackers waiting near the goal."),
                 ("World Cup", "The FIFA World Cup is the football tournament between national teams.")],
    "baking": [("Sourdough", "Sourdough bread is leavened with a starter of wild yeast and flour."),
               ("Croissant", "A croissant is a buttery laminated pastry baked in the oven."),
               ("Oven", "Bake the dough in a hot oven until the crust is golden brown.")],
}


def qa_folder(root, name, passages):
    d = root / name
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in passages))
    rows = [{"id": f"{name}-{i}", "question": f"What is {t}?", "answer": t, "supporting_titles": [t]}
            for i, (t, _) in enumerate(passages)]
    (d / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.mark.integration
def test_sources_are_routed_by_query(tmp_path):
    folders = {name: qa_folder(tmp_path, name, passages) for name, passages in CORPORA.items()}
    spec = registry.get("rag")
    data = spec.load_data(str(folders["football"]), 0)
    program = spec.build(data, {"sources": [str(folders["baking"])], "retriever": "bm25"})
    router = program.retriever.retriever
    assert isinstance(router, SemanticRouter) and set(router.names) == {"football", "baking"}
    assert router.route("how long should bread dough rise before baking?") == "baking"
    assert router.route("who won the league title and how many goals were scored?") == "football"
    assert router.search("laminated pastry with butter", 1)[0].passage.title == "Croissant"


@pytest.mark.integration
def test_one_corpus_needs_no_router(tmp_path):
    spec = registry.get("rag")
    data = spec.load_data(str(qa_folder(tmp_path, "football", CORPORA["football"])), 0)
    program = spec.build(data, {"retriever": "bm25"})
    assert not isinstance(program.retriever.retriever, SemanticRouter)


def test_the_rerankers_questions_count_as_learned_from(tmp_path):
    spec = registry.get("rag")
    data = spec.load_data(str(qa_folder(tmp_path, "football", CORPORA["football"] * 4)), 0)
    held = {ex.id for name in ("dev", "test") for ex in data.splits[name]}
    assert spec.learned_from(data, {"retriever": "hybrid"}) == []
    pool = spec.learned_from(data, {"retriever": "hybrid+rerank"})
    assert pool and not set(pool) & held and set(pool) | held == {ex.id for ex in data.splits["all"]}
