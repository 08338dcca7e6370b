"""Paired comparisons of two programs scored on the same examples: how large a difference is, and how sure.

Used by `dspyc compile` (compiled − uncompiled), `dspyc eval --with-baseline` and re-optimization
(challenger − champion). Seeded, so the same scores always give the same interval.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def _check_paired(x: list[float], y: list[float]) -> None:
    if len(x) != len(y) or not y:
        raise ValueError("paired scores must be non-empty and of equal length")


def paired_bootstrap(
    challenger: list[float], champion: list[float], n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, tuple[float, float], float]:
    """(mean difference, 95% interval, one-sided p-value that the challenger is not better), resampling
    examples with their pair of scores: the comparison is on the same inputs, so pairing removes their variance."""
    _check_paired(challenger, champion)
    diffs = [a - b for a, b in zip(challenger, champion)]
    n = len(diffs)
    mean = sum(diffs) / n
    rng = random.Random(seed)
    boots = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_resamples))
    p = (sum(1 for b in boots if b <= 0) + 1) / (n_resamples + 1)
    return mean, (boots[int(0.025 * n_resamples)], boots[int(0.975 * n_resamples) - 1]), p


def paired_ratio(
    x: list[float], y: list[float], n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, tuple[float, float]] | None:
    """mean(x) / mean(y) over the same examples (a student's share of its teacher's score) with its
    paired-bootstrap 95% interval; None when y scores nothing. Resamples where y scores nothing are skipped."""
    _check_paired(x, y)
    if not sum(y):
        return None
    n, rng, boots = len(x), random.Random(seed), []
    for _ in range(n_resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        den = sum(y[i] for i in idx)
        if den:
            boots.append(sum(x[i] for i in idx) / den)
    boots.sort()
    return sum(x) / sum(y), (boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1])


def pair_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The `score` of each example in both row lists, paired by example id (by position when ids are missing
    or repeat); examples scored by only one side are left out."""
    ids_a, ids_b = [r.get("id") for r in a], [r.get("id") for r in b]
    if None in ids_a or None in ids_b or len(set(ids_a)) < len(ids_a) or len(set(ids_b)) < len(ids_b):
        n = min(len(a), len(b))
        return [float(r["score"]) for r in a[:n]], [float(r["score"]) for r in b[:n]]
    by_id = {r["id"]: float(r["score"]) for r in b}
    kept = [r for r in a if r["id"] in by_id]
    return [float(r["score"]) for r in kept], [by_id[r["id"]] for r in kept]


def paired_delta(
    new: list[dict[str, Any]], old: list[dict[str, Any]], n_resamples: int = 10_000, seed: int = 0
) -> dict[str, float] | None:
    """mean(new − old) over the same examples with its paired-bootstrap 95% interval, as recorded in manifests:
    {"mean", "low", "high", "p", "n"}; None when no example was scored by both."""
    x, y = pair_rows(new, old)
    if not x:
        return None
    mean, (low, high), p = paired_bootstrap(x, y, n_resamples, seed=seed)
    return {"mean": mean, "low": low, "high": high, "p": p, "n": len(x)}


def format_delta(d: dict[str, float] | None) -> str:
    """`+0.100 [-0.050, +0.250]`, or `–` when there is nothing to compare."""
    if not d:
        return "–"
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported number is a latency that happened)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]
