"""The small vocabulary every retriever speaks: passages, scored hits, and the `Retriever` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Passage:
    """One retrievable chunk. `id` is stable across runs (`"<title>#<i>"`) so caches and labels survive."""

    id: str
    title: str
    text: str


@dataclass
class Hit:
    """A passage with the score its retriever gave it (higher is better; scales differ between retrievers)."""

    passage: Passage
    score: float


@runtime_checkable
class Retriever(Protocol):
    """Anything with a `name` and `search(query, k)`; `search_many` has a default loop."""

    name: str

    def search(self, query: str, k: int) -> list[Hit]: ...

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]

    def __deepcopy__(self, memo):  # an index is shared, never copied: optimizers deepcopy the programs holding one
        return self


def search_many(retriever: Retriever, queries: Sequence[str], k: int) -> list[list[Hit]]:
    """Batch search on any retriever, also one that does not inherit the protocol's default."""
    fn = getattr(retriever, "search_many", None)
    if callable(fn):
        return fn(queries, k)
    return [retriever.search(q, k) for q in queries]
