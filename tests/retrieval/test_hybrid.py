import pytest

from dspyc.retrieval.hybrid import HybridRetriever, rrf
from dspyc.retrieval.types import Hit, Passage, Retriever


def test_rrf_math():
    fused = dict(rrf([["a", "b", "c"], ["b", "a"]], k0=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)


def test_rrf_order_and_ties():
    # "b" is second in both lists; "a" and "c" are first once each and absent once.
    out = rrf([["a", "b"], ["c", "b"]], k0=1)
    assert [x for x, _ in out] == ["b", "a", "c"]  # 1/3+1/3 > 1/2; a before c: first seen wins ties
    assert out[0][1] == pytest.approx(2 / 3)


def test_rrf_small_k0_rewards_top_ranks_more():
    lists = [["x", "y", "z"], ["z"]]
    assert rrf(lists, k0=1)[0][0] == "z"  # 1/4 + 1/2 > 1/2
    assert rrf(lists, k0=1000)[0][0] == "z"
    assert dict(rrf(lists, k0=0))["x"] == pytest.approx(1.0)


def test_rrf_ignores_repeats_and_empty():
    assert rrf([]) == []
    assert dict(rrf([["a", "a", "b"]], k0=0)) == pytest.approx({"a": 1.0, "b": 0.5})


class Fixed(Retriever):
    def __init__(self, name, ids):
        self.name = name
        self.ids = ids
        self.asked = []

    def search(self, query, k):
        self.asked.append(k)
        return [Hit(Passage(i, i.split("#")[0], f"text of {i}"), 10.0 - n) for n, i in enumerate(self.ids[:k])]


def test_hybrid_fuses_by_rank_and_asks_for_fanout():
    a = Fixed("a", ["P#0", "Q#0", "R#0"])
    b = Fixed("b", ["Q#0", "S#0"])
    h = HybridRetriever([a, b], k0=60, fanout=30)
    hits = h.search("q", 2)
    assert [x.passage.id for x in hits] == ["Q#0", "P#0"]
    assert hits[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert a.asked == [30] and b.asked == [30]
    assert h.search_many(["q1", "q2"], 3) == [h.search("q1", 3)] * 2


def test_hybrid_needs_a_retriever():
    with pytest.raises(ValueError):
        HybridRetriever([])
