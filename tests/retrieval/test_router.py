import zlib

import numpy as np
import pytest

from dspyc.errors import DspycError
from dspyc.retrieval.router import SemanticRouter, describe_with_samples
from dspyc.retrieval.types import Hit, Passage, Retriever


class HashingEmbedder:
    """Bag of words hashed into 64 buckets: similar vocabularies give similar vectors."""

    def __init__(self):
        self.calls = 0

    def encode(self, sentences, **_):
        self.calls += 1
        out = np.zeros((len(sentences), 64), dtype=np.float32)
        for i, s in enumerate(sentences):
            for w in s.lower().replace(".", " ").replace("?", " ").split():
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        return out


class Source(Retriever):
    def __init__(self, name):
        self.name = name
        self.queries = []

    def search(self, query, k):
        self.queries.append(query)
        return [Hit(Passage(f"{self.name}#0", self.name, query), 1.0)][:k]


DESCRIPTIONS = {
    "sports": ["football match goals league", "tennis player tournament", "basketball team scored points"],
    "cooking": ["recipe flour butter oven", "bake the bread dough", "soup with onions garlic and salt"],
}


def make_router():
    sources = {"sports": Source("sports"), "cooking": Source("cooking")}
    return SemanticRouter(sources, DESCRIPTIONS, HashingEmbedder()), sources


def test_routes_to_the_closest_description():
    router, _ = make_router()
    assert router.route("which team scored the most goals in the league") == "sports"
    assert router.route("how long to bake bread dough in the oven") == "cooking"
    assert router.route_many(["tennis tournament", "garlic soup"]) == ["sports", "cooking"]


def test_router_is_a_retriever():
    router, sources = make_router()
    hits = router.search_many(["football league", "butter and flour", "tennis player"], 1)
    assert [h[0].passage.title for h in hits] == ["sports", "cooking", "sports"]
    assert sources["sports"].queries == ["football league", "tennis player"]
    assert router.search("onions garlic", 1)[0].passage.title == "cooking"


def test_single_source_passes_through_without_embedding():
    emb = HashingEmbedder()
    only = Source("only")
    router = SemanticRouter({"only": only}, {}, emb)
    assert router.route("anything") == "only"
    assert router.search("anything", 3)[0].passage.title == "only"
    assert emb.calls == 0


def test_missing_description_is_an_error():
    with pytest.raises(DspycError):
        SemanticRouter({"a": Source("a"), "b": Source("b")}, {"a": ["x"]}, HashingEmbedder())


def test_describe_with_samples_is_deterministic():
    ps = [Passage(f"T{i}#0", f"T{i}", f"text {i}") for i in range(30)]
    d = describe_with_samples(ps, n=5)
    assert len(d) == 5 and d == describe_with_samples(ps, n=5)
    assert len(describe_with_samples(ps[:3], n=5)) == 3
