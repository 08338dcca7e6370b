"""Reciprocal-rank fusion: combine retrievers whose scores live on different scales by rank alone."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from dspyc.retrieval.types import Hit, Passage, Retriever, search_many


def rrf(rank_lists: Sequence[Sequence[Hashable]], k0: int = 60) -> list[tuple[Hashable, float]]:
    """Fused `(item, score)` best first, score = sum over lists of 1 / (k0 + rank), rank starting at 1.

    A larger `k0` flattens the bonus for being first; ties keep first-seen order (stable sort)."""
    scores: dict[Hashable, float] = {}
    for ranking in rank_lists:
        # A list that repeats an item votes for it once, at its best rank; repeats do not push others down.
        for rank, item in enumerate(dict.fromkeys(ranking), start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k0 + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)


class HybridRetriever(Retriever):
    """Asks each retriever for `fanout` hits and fuses their passage rankings with RRF."""

    def __init__(self, retrievers: Sequence[Retriever], k0: int = 60, fanout: int = 30, name: str = "hybrid"):
        if not retrievers:
            raise ValueError("HybridRetriever needs at least one retriever")
        self.retrievers = list(retrievers)
        self.k0 = k0
        self.fanout = fanout
        self.name = name

    def search(self, query: str, k: int) -> list[Hit]:
        return self._fuse([r.search(query, max(k, self.fanout)) for r in self.retrievers], k)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        # Let each retriever batch its own queries (dense encodes them in one call).
        per_retriever = [search_many(r, list(queries), max(k, self.fanout)) for r in self.retrievers]
        return [self._fuse([hits[i] for hits in per_retriever], k) for i in range(len(queries))]

    def _fuse(self, hit_lists: list[list[Hit]], k: int) -> list[Hit]:
        by_id: dict[str, Passage] = {}
        for hits in hit_lists:
            for h in hits:
                by_id.setdefault(h.passage.id, h.passage)
        fused = rrf([[h.passage.id for h in hits] for hits in hit_lists], self.k0)
        return [Hit(by_id[str(pid)], score) for pid, score in fused[:k]]
