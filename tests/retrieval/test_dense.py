import zlib
from pathlib import Path

import numpy as np
import pytest

from dspyc.retrieval.chunking import chunk_documents
from dspyc.retrieval.dense import DenseRetriever, embedder_fingerprint, encode, qdrant_client

DOCS = [
    {"title": "Eiffel Tower", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."},
    {"title": "Great Wall", "text": "The Great Wall of China was built across northern China over centuries."},
    {"title": "Colosseum", "text": "The Colosseum is an oval amphitheatre in the centre of Rome, Italy."},
    {"title": "Big Ben", "text": "Big Ben is the nickname for the Great Bell of the clock at Westminster in London."},
]


class HashingEmbedder:
    """Bag of words hashed into 64 buckets; counts how many texts it embedded."""

    def __init__(self, dim=64):
        self.dim = dim
        self.encoded = 0

    def encode(self, sentences, **_):
        self.encoded += len(sentences)
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for i, s in enumerate(sentences):
            for w in s.lower().replace(",", " ").replace(".", " ").replace("?", " ").split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return out


@pytest.fixture()
def passages():
    return chunk_documents(DOCS)


def test_encode_normalises_rows():
    v = encode(HashingEmbedder(), ["a b c", "a"])
    assert v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1.0)


def test_fingerprint_tells_models_apart():
    assert embedder_fingerprint(HashingEmbedder(64)) == embedder_fingerprint(HashingEmbedder(64))
    assert embedder_fingerprint(HashingEmbedder(64)) != embedder_fingerprint(HashingEmbedder(32))


def test_in_memory_search_finds_the_right_passage(passages):
    r = DenseRetriever(passages, embedder=HashingEmbedder(), location=":memory:")
    assert r.name == "dense"
    hits = r.search("amphitheatre in Rome", 2)
    assert hits[0].passage.title == "Colosseum"
    assert hits[0].score >= hits[1].score
    assert r.collection.split("-")[1] == r.corpus_hash
    assert r.search_many(["clock Westminster London", "lattice tower Paris"], 1)[1][0].passage.title == "Eiffel Tower"
    assert r.search("x", 0) == []


def test_a_large_in_memory_store_is_an_exact_matrix_that_ranks_as_qdrant_does(passages, tmp_path, monkeypatch):
    import dspyc.retrieval.dense as dense

    queries = ["amphitheatre in Rome", "clock Westminster London", "lattice tower Paris", "Great Wall China", "x"]
    qdrant = DenseRetriever(passages, embedder=HashingEmbedder(), location=":memory:")
    monkeypatch.setattr(dense, "EXACT_FROM", len(passages) - 1)
    emb = HashingEmbedder()
    exact = DenseRetriever(passages, embedder=emb, location=":memory:", vectors_cache=tmp_path)
    assert exact.client is None and exact.matrix.shape == (len(passages), exact.dimension)
    for got, want in zip(exact.search_many(queries, 3), qdrant.search_many(queries, 3)):
        assert [round(h.score, 5) for h in got] == [round(h.score, 5) for h in want]  # ties may order apart
        assert got[0].passage.id == want[0].passage.id or got[0].score == want[1].score
    assert exact.search("x", 0) == [] and len(exact.search("x", 99)) == len(passages)
    encoded = emb.encoded
    DenseRetriever(passages, embedder=emb, location=":memory:", vectors_cache=tmp_path)
    assert emb.encoded - encoded == 1  # rebuilt from the vector cache: only the fingerprint probe


def test_vectors_cache_rebuilds_in_memory_store_without_reembedding(passages, tmp_path: Path):
    emb = HashingEmbedder()
    first = DenseRetriever(passages, embedder=emb, location=":memory:", vectors_cache=tmp_path)
    assert (tmp_path / f"{first.collection}.npy").is_file()
    after_build = emb.encoded
    second = DenseRetriever(passages, embedder=emb, location=":memory:", vectors_cache=tmp_path)
    assert emb.encoded - after_build == 1  # only the fingerprint probe
    assert second.search("Great Wall China", 1)[0].passage.title == "Great Wall"


@pytest.mark.integration
def test_on_disk_collection_is_reused_not_reembedded(passages, tmp_path: Path):
    location = str(tmp_path / "qdrant")
    emb = HashingEmbedder()
    first = DenseRetriever(passages, embedder=emb, location=location)
    after_build = emb.encoded
    assert after_build >= len(passages)
    second = DenseRetriever(passages, embedder=emb, location=location)
    assert emb.encoded - after_build == 1  # only the fingerprint probe
    assert first.client is second.client  # one local-mode client per folder
    assert second.search("Great Wall China", 1)[0].passage.title == "Great Wall"
    # a different corpus gets its own collection in the same store
    other = DenseRetriever(passages[:2], embedder=emb, location=location)
    assert other.collection != first.collection
    assert qdrant_client(location) is first.client


@pytest.mark.integration
def test_real_minilm_dense_retrieval(passages, tmp_path: Path):
    from dspyc.retrieval.embeddings import embedding_model_path, load_embedder

    assert (embedding_model_path() / "model.safetensors").is_file()
    emb = load_embedder()
    assert load_embedder("all-minilm-l6-v2") is emb  # one model per process, whatever it is called
    r = DenseRetriever(passages, embedder=emb, location=str(tmp_path / "q"))
    assert r.search("Which ancient arena stands in Italy's capital?", 1)[0].passage.title == "Colosseum"
    assert r.search("famous clock bell in England", 1)[0].passage.title == "Big Ben"


@pytest.mark.integration
def test_build_retrievers_without_training(tmp_path: Path):
    from dspyc.retrieval import build_retrievers

    rs = build_retrievers(DOCS, cache_dir=tmp_path, embedder=HashingEmbedder())
    assert set(rs) == {"bm25", "dense", "hybrid"}
    for r in rs.values():
        assert r.search("amphitheatre Rome", 1)[0].passage.title == "Colosseum"
    # vectors are cached as a file and served from an in-memory Qdrant by default
    assert (tmp_path / "bm25").is_dir() and any((tmp_path / "embeddings").glob("*.npy"))


def test_missing_model_path_is_a_one_line_error(tmp_path: Path):
    from dspyc.errors import DspycError
    from dspyc.retrieval.embeddings import load_embedder

    with pytest.raises(DspycError) as e:
        load_embedder(str(tmp_path / "no-such-model"))
    assert "\n" not in str(e.value)
