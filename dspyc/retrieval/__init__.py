"""The retrieval layer: chunking, BM25, dense (Qdrant), hybrid RRF, a trained reranker, routing, metrics.

`build_retrievers(docs)` is the one-call entry point; every index is cached on disk by corpus hash."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dspyc.retrieval.bm25 import BM25Retriever
from dspyc.retrieval.chunking import chunk_documents, corpus_hash, index_text, split_sentences
from dspyc.retrieval.dense import DenseRetriever
from dspyc.retrieval.embeddings import embedding_model_path, load_embedder, load_encoder
from dspyc.retrieval.evaluate import evaluate_retrievers, format_report, mrr, recall_at_k
from dspyc.retrieval.hybrid import HybridRetriever, rrf
from dspyc.retrieval.rerank import (
    CrossEncoderReranker,
    RerankedRetriever,
    build_training_pairs,
    train_reranker,
)
from dspyc.retrieval.router import SemanticRouter, describe_with_samples
from dspyc.retrieval.types import Hit, Passage, Retriever, search_many

__all__ = [
    "BM25Retriever",
    "CrossEncoderReranker",
    "DenseRetriever",
    "Hit",
    "HybridRetriever",
    "Passage",
    "RerankedRetriever",
    "Retriever",
    "SemanticRouter",
    "build_retrievers",
    "build_training_pairs",
    "chunk_documents",
    "corpus_hash",
    "describe_with_samples",
    "embedding_model_path",
    "evaluate_retrievers",
    "format_report",
    "index_text",
    "load_embedder",
    "load_encoder",
    "mrr",
    "recall_at_k",
    "rrf",
    "search_many",
    "split_sentences",
    "train_reranker",
]

log = logging.getLogger(__name__)


def build_retrievers(
    docs: Iterable[Mapping[str, str]],
    train_questions: Sequence[tuple[str, set[str]]] | None = None,
    cache_dir: Path | None = None,
    chunk_size: int = 120,
    overlap: int = 20,
    qdrant_url: str | None = None,
    embedder: object | None = None,
    rerank_fanout: int = 20,
) -> dict[str, Retriever]:
    """{"bm25", "dense", "hybrid"} over the chunked corpus, plus "hybrid+rerank" when `train_questions`
    (question, gold titles) are given. `cache_dir`, `qdrant_url` and the embedder default to the settings."""
    from dspyc.settings import get_settings

    settings = get_settings()
    cache_dir = Path(cache_dir) if cache_dir is not None else settings.cache_dir
    qdrant_url = qdrant_url or settings.qdrant_url
    passages = chunk_documents(docs, size=chunk_size, overlap=overlap)
    if not passages:
        from dspyc.errors import DataError

        raise DataError("the corpus has no text to index")
    embedder = embedder if embedder is not None else load_embedder(settings.embed_model)

    bm25 = BM25Retriever(passages, cache_dir=cache_dir)
    dense = DenseRetriever(
        # Local mode persists one SQLite commit per point (minutes for a few thousand passages), so the
        # default keeps vectors in a file cache and serves them from an in-memory Qdrant. With a Qdrant server
        # the file cache still lets a grown corpus (a new collection) embed only its new passages.
        passages,
        embedder=embedder,
        url=qdrant_url,
        location=None if qdrant_url else ":memory:",
        vectors_cache=cache_dir / "embeddings",
    )
    hybrid = HybridRetriever([bm25, dense])
    out: dict[str, Retriever] = {"bm25": bm25, "dense": dense, "hybrid": hybrid}
    if train_questions:
        pairs = build_training_pairs(train_questions, bm25, hybrid)
        log.info("reranker: %d training pairs from %d questions", len(pairs), len(train_questions))
        reranker = CrossEncoderReranker.train_or_load(pairs, cache_dir)
        out["hybrid+rerank"] = RerankedRetriever(hybrid, reranker, fanout=rerank_fanout)
    return out
