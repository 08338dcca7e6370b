from pathlib import Path

import pytest

from dspyc.retrieval.bm25 import BM25Retriever
from dspyc.retrieval.chunking import chunk_documents, corpus_hash

DOCS = [
    {"title": "Eiffel Tower", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."},
    {"title": "Great Wall", "text": "The Great Wall of China was built across northern China over centuries."},
    {"title": "Colosseum", "text": "The Colosseum is an oval amphitheatre in the centre of Rome, Italy."},
    {"title": "Big Ben", "text": "Big Ben is the nickname for the Great Bell of the clock at Westminster in London."},
]


@pytest.fixture()
def passages():
    return chunk_documents(DOCS)


def test_finds_the_obvious_document(passages):
    r = BM25Retriever(passages)
    assert r.name == "bm25"
    assert r.search("Which amphitheatre is in Rome?", 1)[0].passage.title == "Colosseum"
    # stemming: "towers" matches "tower"; the title is indexed too
    assert r.search("towers of Paris", 2)[0].passage.title == "Eiffel Tower"
    assert r.search("Westminster", 3)[0].passage.title == "Big Ben"


def test_scores_are_descending_and_only_matches_return(passages):
    hits = BM25Retriever(passages).search("Great Wall China", 10)
    assert [h.passage.title for h in hits][0] == "Great Wall"
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) < len(passages) + 1  # k larger than the corpus is fine


def test_unknown_or_stopword_query_matches_nothing(passages):
    r = BM25Retriever(passages)
    assert r.search("zzzyx qqq", 5) == []
    assert r.search("the of is", 5) == []
    assert r.search("anything", 0) == []


def test_search_many_matches_search(passages):
    r = BM25Retriever(passages)
    queries = ["Rome amphitheatre", "London clock", "nothingmatches"]
    assert r.search_many(queries, 2) == [r.search(q, 2) for q in queries]


def test_index_is_cached_by_corpus_hash(passages, tmp_path: Path, monkeypatch):
    r1 = BM25Retriever(passages, cache_dir=tmp_path)
    index_dir = tmp_path / "bm25" / corpus_hash(passages)
    assert r1.index_dir == index_dir and index_dir.is_dir()
    assert not [p for p in index_dir.parent.iterdir() if p.name.startswith(".tmp-")]

    def no_build(self):
        raise AssertionError("should have loaded the cached index")

    monkeypatch.setattr(BM25Retriever, "_build", no_build)
    r2 = BM25Retriever(passages, cache_dir=tmp_path)
    assert r2.search("Rome", 1) == r1.search("Rome", 1)


def test_scores_cover_every_passage(passages):
    r = BM25Retriever(passages)
    s = r.scores("Paris tower")
    assert s.shape == (len(passages),)
    assert passages[int(s.argmax())].title == "Eiffel Tower"
    assert not r.scores("zzzyx").any()


def test_an_index_is_shared_not_copied(passages):
    import copy

    retriever = BM25Retriever(passages)
    assert copy.deepcopy({"r": retriever})["r"] is retriever
