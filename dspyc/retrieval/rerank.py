"""A cross-encoder reranker fine-tuned from the packaged MiniLM on (question, passage, label) pairs.

Positives: for each gold title, its passage that BM25 ranks best for the question. Negatives: the top
candidates of the first-stage retriever whose titles are not gold (hard negatives, the ones it confuses)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dspyc.retrieval.bm25 import BM25Retriever
from dspyc.retrieval.chunking import index_text
from dspyc.retrieval.embeddings import DEFAULT_EMBED_MODEL, offline_hub, resolve_model
from dspyc.retrieval.types import Hit, Passage, Retriever, search_many

log = logging.getLogger(__name__)

Pair = tuple[str, str, float]  # (question, passage as the reranker reads it, label 1.0 or 0.0)

DEFAULT_MAX_PAIRS = 600  # 3 epochs of 600 pairs: ~110 steps, ~10-15 min of CPU training for MiniLM-L6 at 256 tokens
DONE = "config.json"  # a finished model folder always holds this


def build_training_pairs(
    questions: Sequence[tuple[str, set[str]]],
    bm25: BM25Retriever,
    candidates: Retriever,
    negatives_per_question: int = 3,
    fanout: int = 20,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
) -> list[Pair]:
    """Labelled pairs, at most `max_pairs` (whole questions are dropped, never half of one)."""
    by_title: dict[str, list[int]] = {}
    for i, p in enumerate(bm25.passages):
        by_title.setdefault(p.title, []).append(i)
    results = search_many(candidates, [q for q, _ in questions], fanout)
    groups: list[list[Pair]] = []
    for (question, gold), hits in zip(questions, results, strict=True):
        group: list[Pair] = []
        scores = bm25.scores(question)
        for title in sorted(gold):
            ids = by_title.get(title)
            if not ids:  # a gold title missing from the corpus: nothing to learn from
                continue
            # argmax over this title's passages; ties (e.g. all zero) pick the first, the lead paragraph.
            best = max(ids, key=lambda i: (scores[i], -i))
            group.append((question, index_text(bm25.passages[best]), 1.0))
        if not group:
            continue
        seen: set[str] = set()
        for h in hits:
            # One negative per title: more would teach "not this article" rather than "not this content".
            if h.passage.title in gold or h.passage.title in seen:
                continue
            seen.add(h.passage.title)
            group.append((question, index_text(h.passage), 0.0))
            if len(seen) >= negatives_per_question:
                break
        groups.append(group)
    random.Random(seed).shuffle(groups)
    pairs: list[Pair] = []
    for group in groups:
        if len(pairs) + len(group) > max_pairs:
            break
        pairs.extend(group)
    return pairs


@contextmanager
def model_folder(out_dir: Path) -> Iterator[Path]:
    """A temp folder beside `out_dir` to train in; on success its `model/` becomes `out_dir` (renamed, so `out_dir`
    is either absent or complete; a concurrent trainer that finished first wins)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".tmp-"))
    try:
        yield tmp
        try:
            (tmp / "model").rename(out_dir)
        except OSError:
            if not (out_dir / DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trainer_settings(
    tmp: Path, rows: int, epochs: int, batch_size: int, learning_rate: float, seed: int
) -> dict[str, Any]:
    """The training arguments the reranker and the encoder share (sentence-transformers' TrainingArguments)."""
    return {
        "output_dir": str(tmp / "trainer"),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": 0.1,  # a float < 1 is a ratio of all steps in transformers 5
        "save_strategy": "no",
        "report_to": "none",  # mlflow is installed; the Trainer must not open runs on its own
        "logging_steps": max(1, rows // batch_size // 5),
        "seed": seed,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,  # pinning only helps GPU copies and warns on CPU-only machines
    }


def pairs_hash(pairs: Iterable[Pair], **params: Any) -> str:
    """Cache key of a trained reranker: the data and every setting that changes the weights."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for q, p, y in pairs:
        h.update(f"{q}\0{p}\0{y}\n".encode())
    return h.hexdigest()[:16]


def train_reranker(
    pairs: Sequence[Pair],
    out_dir: Path,
    epochs: int = 3,
    batch_size: int = 16,
    base_model: str | None = None,
    max_length: int = 256,
    learning_rate: float = 5e-5,
    seed: int = 0,
) -> Path:
    """Fine-tune a 1-label cross-encoder from the MiniLM bi-encoder weights; returns `out_dir`.

    Trains in `model_folder(out_dir)`; an existing complete `out_dir` is returned as is."""
    out_dir = Path(out_dir)
    if (out_dir / DONE).is_file():
        return out_dir
    if not pairs:
        raise ValueError("train_reranker needs at least one pair")
    offline_hub()
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    # The packaged folder is a SentenceTransformer; CrossEncoder keeps its BERT encoder and adds a fresh head.
    model = CrossEncoder(resolve_model(base_model), num_labels=1, max_length=max_length, local_files_only=True)
    data = Dataset.from_dict(
        {"query": [q for q, _, _ in pairs], "passage": [p for _, p, _ in pairs], "label": [float(y) for *_, y in pairs]}
    )
    with model_folder(out_dir) as tmp:
        args = CrossEncoderTrainingArguments(
            **trainer_settings(tmp, len(pairs), epochs, batch_size, learning_rate, seed)
        )
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model))
        trainer.train()
        model.save_pretrained(str(tmp / "model"))
    return out_dir


class Reranker(Protocol):
    """Scores passages for a query; higher is more relevant. A `score_many(items)` method, if present,
    is used to batch several queries at once."""

    def score(self, query: str, passages: Sequence[Passage]) -> list[float]: ...


class CrossEncoderReranker:
    """A trained cross-encoder (a folder from `train_reranker`) used to rescore candidates."""

    def __init__(self, model_path: str | Path, max_length: int = 256, batch_size: int = 32):
        offline_hub()
        import torch
        from sentence_transformers.cross_encoder import CrossEncoder

        self.model_path = Path(model_path)
        self.batch_size = batch_size
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = CrossEncoder(str(model_path), max_length=max_length, device=device, local_files_only=True)
        self._lock = threading.Lock()  # one tokenizer must not be used by two threads at once

    @classmethod
    def train_or_load(
        cls,
        pairs: Sequence[Pair],
        cache_dir: Path,
        epochs: int = 3,
        batch_size: int = 16,
        max_length: int = 256,
        **kw: Any,
    ) -> CrossEncoderReranker:
        """Train once per distinct pair set and settings, under `cache_dir/reranker/<hash>/`."""
        key = pairs_hash(
            pairs,
            epochs=epochs,
            batch_size=batch_size,
            max_length=max_length,
            base=kw.get("base_model") or DEFAULT_EMBED_MODEL,
            **kw,
        )
        path = train_reranker(
            pairs, Path(cache_dir) / "reranker" / key, epochs=epochs, batch_size=batch_size, max_length=max_length, **kw
        )
        return cls(path, max_length=max_length)

    def score(self, query: str, passages: Sequence[Passage]) -> list[float]:
        return self.score_many([(query, passages)])[0]

    def score_many(self, items: Sequence[tuple[str, Sequence[Passage]]]) -> list[list[float]]:
        # One predict call for every (query, passage) pair: batches fill up across queries.
        flat = [(q, index_text(p)) for q, ps in items for p in ps]
        if not flat:
            return [[] for _ in items]
        # Raw logits: the sigmoid would squash high scores together and only the order matters.
        with self._lock:
            logits = self.model.predict(
                flat, batch_size=self.batch_size, activation_fn=_identity(), show_progress_bar=False
            )
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        out: list[list[float]] = []
        start = 0
        for _, ps in items:
            out.append([float(x) for x in logits[start : start + len(ps)]])
            start += len(ps)
        return out


def _identity() -> Any:
    import torch

    return torch.nn.Identity()


class RerankedRetriever(Retriever):
    """Takes `fanout` candidates from `base` and reorders them by the reranker's score."""

    def __init__(self, base: Retriever, reranker: Reranker, fanout: int = 20, name: str | None = None):
        self.base = base
        self.reranker = reranker
        self.fanout = fanout
        self.name = name or f"{base.name}+rerank"

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        candidates = search_many(self.base, list(queries), max(k, self.fanout))
        items = [(q, [h.passage for h in hits]) for q, hits in zip(queries, candidates, strict=True)]
        score_many = getattr(self.reranker, "score_many", None)
        scores = score_many(items) if callable(score_many) else [self.reranker.score(q, ps) for q, ps in items]
        out: list[list[Hit]] = []
        for hits, s in zip(candidates, scores, strict=True):
            # Stable sort: equal scores keep the first-stage order.
            order = sorted(range(len(hits)), key=lambda i: -s[i])
            out.append([Hit(hits[i].passage, s[i]) for i in order[:k]])
        return out
