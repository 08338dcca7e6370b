"""Datasets: QA folders (`qa`), their versions (`versions`), the Wikipedia default, BFCL, the tone task."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import dspy

Row = TypeVar("Row")


def seeded_split(
    rows: Sequence[Row],
    to_example: Callable[[Row], dspy.Example],
    seed: int,
    train: int,
    dev: int,
    test: int,
    train_cap_divisor: int,
) -> dict[str, list[dspy.Example]]:
    """Deterministic train/dev/test (and "all") from a seed; sizes are capped by what the data holds: train
    takes at most what leaves dev and test their sizes, or 1/`train_cap_divisor` of the data if that is more,
    and dev at most half of the rest (200 questions: `train=110` with dev 30 and test 60 is all of them)."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train = min(train, max(n // train_cap_divisor, n - dev - test))
    n_dev = min(dev, (n - n_train) // 2)
    parts = {
        "train": order[:n_train],
        "dev": order[n_train : n_train + n_dev],
        "test": order[n_train + n_dev : n_train + n_dev + test],
        "all": order,
    }
    return {k: [to_example(r) for r in v] for k, v in parts.items()}


def outside(splits: dict[str, list[dspy.Example]], *names: str) -> list[dspy.Example]:
    """Every example of `splits["all"]` in none of the splits `names`, in "all" order (e.g. all but dev and test)."""
    held = {ex.id for name in names for ex in splits.get(name, [])}
    return [ex for ex in splits["all"] if ex.id not in held]


SPLIT_KEYS = ("train", "dev", "test")


@runtime_checkable
class ProgramData(Protocol):
    """What a program's `load_data` returns and core code reads: examples split into train/dev/test (and "all"),
    re-splittable by seed and sizes, with a name, a folder and a content version."""

    name: str
    path: Path | str
    version: str  # a content hash: the same data, the same version
    splits: dict[str, list[dspy.Example]]
    split_sizes: tuple[int, int, int] | None  # the (train, dev, test) asked for by the last split()

    def split(self, seed: int, train: int, dev: int, test: int) -> dict[str, list[dspy.Example]]: ...

    def outside(self, *splits: str) -> list[dspy.Example]:
        """Every example in none of `splits` (e.g. more gold labels: all but train, dev and test)."""


@dataclass
class NoData:
    """The data of a program that learns from none (served as built, never compiled): empty splits."""

    name: str = "none"
    path: str = ""
    version: str = "none"
    splits: dict[str, list[dspy.Example]] = field(default_factory=lambda: {k: [] for k in (*SPLIT_KEYS, "all")})
    split_sizes: tuple[int, int, int] | None = None

    def split(self, seed: int, train: int, dev: int, test: int) -> dict[str, list[dspy.Example]]:
        self.split_sizes = (train, dev, test)
        return self.splits

    def outside(self, *splits: str) -> list[dspy.Example]:
        return []


def apply_split_config(
    dataset: ProgramData, config: dict | None, seed: int, sizes: Sequence[int] | None = None
) -> bool:
    """Re-split what a program's `load_data` returned: with `sizes` (train, dev, test) if given, else with the
    `train`/`dev`/`test` keys of the program's merged config (`--set test=60`), a missing key keeping the size
    the data was split with. Returns whether it re-split (not when the sizes are the ones already used)."""
    from dspyc.errors import DataError

    config = config or {}
    if sizes is None:
        if not any(k in config for k in SPLIT_KEYS):
            return False
        current = dataset.split_sizes or tuple(len(dataset.splits.get(k, [])) for k in SPLIT_KEYS)
        try:
            sizes = tuple(int(config[k]) if k in config else int(c) for k, c in zip(SPLIT_KEYS, current))
        except (TypeError, ValueError):
            raise DataError(
                f"split sizes must be whole numbers: { {k: config[k] for k in SPLIT_KEYS if k in config} }"
            ) from None
        if sizes == dataset.split_sizes:
            return False
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) != 3 or min(sizes) < 0:
        raise DataError(f"split sizes (train, dev, test) must be three numbers >= 0, got {sizes}")
    dataset.split(seed, *sizes)
    return True
