"""Datasets: QA folders (`qa`), their versions (`versions`), the Wikipedia default, BFCL, the tone task."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

import dspy

Row = TypeVar("Row")


def seeded_split(rows: Sequence[Row], to_example: Callable[[Row], dspy.Example], seed: int, train: int, dev: int,
                 test: int, train_cap_divisor: int) -> dict[str, list[dspy.Example]]:
    """Deterministic train/dev/test (and "all") from a seed; sizes are capped by what the data holds, with
    train at most 1/`train_cap_divisor` of it and dev at most half of the rest."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train = min(train, n // train_cap_divisor)
    n_dev = min(dev, (n - n_train) // 2)
    parts = {"train": order[:n_train], "dev": order[n_train:n_train + n_dev],
             "test": order[n_train + n_dev:n_train + n_dev + test], "all": order}
    return {k: [to_example(r) for r in v] for k, v in parts.items()}
