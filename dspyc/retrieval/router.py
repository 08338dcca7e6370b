"""Route a query to one of several corpora by embedding similarity to each corpus's description."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from dspyc.errors import DspycError
from dspyc.retrieval.dense import Embedder, encode
from dspyc.retrieval.types import Hit, Passage, Retriever, search_many


def describe_with_samples(passages: Sequence[Passage], n: int = 16, seed: int = 0) -> list[str]:
    """A source's description from `n` random passages of it: cheap and needs no hand-written text."""
    picked = random.Random(seed).sample(list(passages), min(n, len(passages)))
    return [f"{p.title}. {p.text}" for p in picked]


class SemanticRouter(Retriever):
    """Picks the source whose description centroid (mean of unit embeddings) has the highest cosine."""

    def __init__(
        self,
        sources: Mapping[str, Retriever],
        descriptions: Mapping[str, Sequence[str]],
        embedder: Embedder | None,
        name: str = "router",
    ):
        if not sources:
            raise DspycError("SemanticRouter needs at least one source")
        self.sources = dict(sources)
        self.names = list(self.sources)
        self.embedder = embedder
        self.name = name
        self._centroids: np.ndarray | None = None
        if len(self.sources) == 1:  # nothing to choose: no embedder needed, no model loaded
            return
        missing = [s for s in self.names if not descriptions.get(s)]
        if missing:
            raise DspycError(f"SemanticRouter: no description for source(s) {', '.join(missing)}")
        if embedder is None:
            raise DspycError("SemanticRouter with several sources needs an embedder")
        rows = []
        for s in self.names:
            centroid = encode(embedder, list(descriptions[s])).mean(axis=0)
            rows.append(centroid / (np.linalg.norm(centroid) or 1.0))
        self._centroids = np.stack(rows)

    def similarities(self, queries: Sequence[str]) -> np.ndarray:
        """Cosine of each query to each source centroid, shape (len(queries), len(sources))."""
        if self._centroids is None:
            return np.ones((len(queries), 1), dtype=np.float32)
        return encode(self.embedder, list(queries)) @ self._centroids.T

    def route(self, query: str) -> str:
        return self.route_many([query])[0]

    def route_many(self, queries: Sequence[str]) -> list[str]:
        if not queries:
            return []
        if self._centroids is None:
            return [self.names[0]] * len(queries)
        return [self.names[int(i)] for i in self.similarities(queries).argmax(axis=1)]

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        routes = self.route_many(queries)
        out: list[list[Hit]] = [[] for _ in queries]
        # One batched call per source rather than one call per query.
        for source in set(routes):
            idx = [i for i, r in enumerate(routes) if r == source]
            for i, hits in zip(idx, search_many(self.sources[source], [queries[i] for i in idx], k), strict=True):
                out[i] = hits
        return out
