from pathlib import Path

import pytest

from dspyc.retrieval.bm25 import BM25Retriever
from dspyc.retrieval.chunking import chunk_documents, index_text
from dspyc.retrieval.rerank import RerankedRetriever, build_training_pairs, pairs_hash, train_reranker
from dspyc.retrieval.types import Hit, Passage, Retriever

DOCS = [
    {"title": "Paris", "text": "Paris is the capital of France. It hosts the Louvre museum."},
    {"title": "Paris", "text": "The Seine river flows through Paris. Many bridges cross it."},
    {"title": "Louvre", "text": "The Louvre is the world's most-visited museum, home of the Mona Lisa."},
    {"title": "Berlin", "text": "Berlin is the capital of Germany. It has many museums."},
    {"title": "Rome", "text": "Rome is the capital of Italy. The Vatican museums are nearby."},
    {"title": "Madrid", "text": "Madrid is the capital of Spain. The Prado museum is there."},
]


@pytest.fixture()
def corpus():
    passages = chunk_documents(DOCS)
    return passages, BM25Retriever(passages)


def test_pairs_have_bm25_positive_per_gold_title_and_hard_negatives(corpus):
    passages, bm25 = corpus
    pairs = build_training_pairs(
        [("Which river flows through Paris?", {"Paris"})], bm25, bm25, negatives_per_question=2
    )
    positives = [p for _, p, y in pairs if y == 1.0]
    negatives = [p for _, p, y in pairs if y == 0.0]
    # the best-matching Paris passage, not just the first one
    assert positives == [index_text(next(p for p in passages if p.id == "Paris#1"))]
    assert len(negatives) <= 2 and all(not n.startswith("Paris.") for n in negatives)


def test_pairs_cap_drops_whole_questions_and_skips_unknown_gold(corpus):
    _, bm25 = corpus
    qs = [(f"capital museum {i}", {"Berlin", "Rome"}) for i in range(10)] + [("x", {"Atlantis"})]
    pairs = build_training_pairs(qs, bm25, bm25, negatives_per_question=3, max_pairs=12)
    assert len(pairs) <= 12
    by_q: dict[str, int] = {}
    for q, _, y in pairs:
        by_q[q] = by_q.get(q, 0) + int(y == 1.0)
    assert all(n == 2 for n in by_q.values())  # both positives of each kept question
    assert "x" not in by_q


def test_pairs_hash_depends_on_data_and_settings():
    pairs = [("q", "p", 1.0), ("q", "n", 0.0)]
    assert pairs_hash(pairs, epochs=1) == pairs_hash(list(pairs), epochs=1)
    assert pairs_hash(pairs, epochs=1) != pairs_hash(pairs, epochs=2)
    assert pairs_hash(pairs, epochs=1) != pairs_hash(pairs[:1], epochs=1)


def test_train_reranker_returns_a_finished_folder_untouched(tmp_path: Path):
    done = tmp_path / "model"
    done.mkdir()
    (done / "config.json").write_text("{}")
    assert train_reranker([], done) == done


class Fixed(Retriever):
    name = "base"

    def __init__(self, titles):
        self.titles = titles
        self.asked = []

    def search(self, query, k):
        self.asked.append(k)
        return [Hit(Passage(f"{t}#0", t, t), 1.0 / (i + 1)) for i, t in enumerate(self.titles[:k])]


class LengthReranker:
    """Scores a passage by its title length: an order unrelated to the base retriever's."""

    def score(self, query, passages):
        return [float(len(p.title)) for p in passages]


def test_reranked_retriever_reorders_the_fanout():
    base = Fixed(["a", "bbbb", "cc", "ddd", "eeeee"])
    r = RerankedRetriever(base, LengthReranker(), fanout=4)
    assert r.name == "base+rerank"
    hits = r.search("q", 2)
    assert [h.passage.title for h in hits] == ["bbbb", "ddd"]  # "eeeee" is beyond the fanout
    assert hits[0].score == 4.0 and base.asked == [4]
    assert r.search_many(["q1", "q2"], 3) == [r.search("q1", 3)] * 2


@pytest.mark.integration
def test_train_a_tiny_reranker_and_rerank(corpus, tmp_path: Path):
    from dspyc.retrieval.rerank import CrossEncoderReranker

    passages, bm25 = corpus
    qs = [
        ("Which river flows through Paris?", {"Paris"}),
        ("Where is the Mona Lisa shown?", {"Louvre"}),
        ("What is the capital of Germany?", {"Berlin"}),
        ("Which museum is in Madrid?", {"Madrid"}),
    ]
    pairs = build_training_pairs(qs, bm25, bm25, negatives_per_question=2)
    reranker = CrossEncoderReranker.train_or_load(pairs, tmp_path, epochs=1, batch_size=4, max_length=128)
    model_dir = reranker.model_path
    assert model_dir.parent == tmp_path / "reranker" and (model_dir / "config.json").is_file()
    assert sorted(p.name for p in model_dir.parent.iterdir()) == [model_dir.name]  # no temp leftovers
    scores = reranker.score("capital of Italy", passages)
    assert len(scores) == len(passages) and all(isinstance(s, float) for s in scores)
    hits = RerankedRetriever(bm25, reranker, fanout=5).search("capital of Italy", 3)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    # same pairs and settings: loaded from the cache, not retrained
    again = CrossEncoderReranker.train_or_load(pairs, tmp_path, epochs=1, batch_size=4, max_length=128)
    assert again.model_path == model_dir
