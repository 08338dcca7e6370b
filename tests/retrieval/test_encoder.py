"""The retriever's encoder, trained for real: a few triplets move the packaged MiniLM toward the gold passages."""

from pathlib import Path

import numpy as np
import pytest

from dspyc.retrieval import BM25Retriever, build_training_pairs, chunk_documents, load_embedder, load_encoder
from dspyc.retrieval.encoder import train_encoder, triplets

DOCS = [
    {"title": "Paris", "text": "Paris is the capital of France. The Seine flows through the city."},
    {"title": "Louvre", "text": "The Louvre is an art museum in Paris. It shows the Mona Lisa."},
    {"title": "Berlin", "text": "Berlin is the capital of Germany. The Spree flows through it."},
    {"title": "Madrid", "text": "Madrid is the capital of Spain. The Prado museum is there."},
    {"title": "Rome", "text": "Rome is the capital of Italy. The Tiber flows through the city."},
]
QUESTIONS = [
    ("Which river flows through Paris?", {"Paris"}),
    ("Where is the Mona Lisa shown?", {"Louvre"}),
    ("Which river runs through the German capital?", {"Berlin"}),
    ("Which city holds the Prado?", {"Madrid"}),
]


def _margin(model, data) -> float:
    """Mean cos(question, gold) − cos(question, negative) over the triplets."""
    vecs = [np.asarray(model.encode(list(t), normalize_embeddings=True)) for t in data]
    return float(np.mean([v[0] @ v[1] - v[0] @ v[2] for v in vecs]))


@pytest.mark.integration
def test_a_trained_encoder_separates_gold_from_hard_negatives_better(tmp_path: Path):
    bm25 = BM25Retriever(chunk_documents(DOCS))
    data = triplets(build_training_pairs(QUESTIONS, bm25, bm25, negatives_per_question=1))
    assert len(data) >= 3  # a question BM25 finds no other title for has no hard negative
    out = train_encoder(data, tmp_path / "enc", epochs=4, batch_size=4, learning_rate=1e-4, max_length=64)
    assert (out / "config.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["enc"]
    assert _margin(load_encoder(out), data) > _margin(load_embedder(), data)
    stamp = (out / "config.json").stat().st_mtime
    assert train_encoder(data, out, epochs=4) == out and (out / "config.json").stat().st_mtime == stamp  # reused
