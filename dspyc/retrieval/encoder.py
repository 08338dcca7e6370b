"""A bi-encoder fine-tuned from the packaged MiniLM on (question, gold passage, hard negative) triplets.

The triplets come from `build_training_pairs`: the positive is each gold title's passage that BM25 ranks best for the
question, the negative a top candidate of BM25 whose title is not gold (the passages lexical search confuses).
Training is sentence-transformers' in-batch-negatives loss (MultipleNegativesRankingLoss): every other passage of
the batch is a negative too, which is what makes a few hundred pairs enough for a 22M-parameter encoder on a CPU."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from dspyc.retrieval.embeddings import offline_hub, resolve_model
from dspyc.retrieval.rerank import DONE, Pair, model_folder, trainer_settings

Triplet = tuple[str, str, str]  # (question, gold passage, hard negative), as the encoder reads them


def triplets(pairs: Sequence[Pair], seed: int = 0) -> list[Triplet]:
    """Each question's positives matched with its negatives in turn (a negative is reused when there are fewer);
    a question without a negative gives no triplet. Shuffled, so a batch mixes questions."""
    by_question: dict[str, tuple[list[str], list[str]]] = {}
    for q, passage, label in pairs:
        by_question.setdefault(q, ([], []))[0 if label > 0.5 else 1].append(passage)
    out = [
        (q, pos, negs[i % len(negs)])
        for q, (positives, negs) in by_question.items()
        if negs
        for i, pos in enumerate(positives)
    ]
    random.Random(seed).shuffle(out)
    return out


def train_encoder(
    data: Sequence[Triplet],
    out_dir: Path,
    epochs: int = 2,
    batch_size: int = 32,
    learning_rate: float = 3e-5,
    max_length: int = 256,
    base_model: str | None = None,
    seed: int = 0,
) -> Path:
    """Fine-tune the bi-encoder on `data`; returns `out_dir` (an existing complete one is returned as is)."""
    out_dir = Path(out_dir)
    if (out_dir / DONE).is_file():
        return out_dir
    if not data:
        raise ValueError("train_encoder needs at least one triplet")
    offline_hub()
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    model = SentenceTransformer(resolve_model(base_model), device="cpu", local_files_only=True)
    model.max_seq_length = max_length
    rows = Dataset.from_dict(
        {"anchor": [q for q, _, _ in data], "positive": [p for _, p, _ in data], "negative": [n for *_, n in data]}
    )
    with model_folder(out_dir) as tmp:
        args = SentenceTransformerTrainingArguments(
            **trainer_settings(tmp, len(data), epochs, batch_size, learning_rate, seed),
            # two positives of one question in a batch would be each other's "negative"
            batch_sampler=BatchSamplers.NO_DUPLICATES,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=rows, loss=MultipleNegativesRankingLoss(model)
        )
        trainer.train()
        model.save_pretrained(str(tmp / "model"))
    return out_dir
