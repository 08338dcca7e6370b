"""Answer and retrieval metrics, kept apart (HotPotQA/SQuAD answer normalisation)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import dspy

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    # yes/no/noanswer must match exactly: partial credit on them is meaningless.
    if pred in ("yes", "no", "noanswer") or ref in ("yes", "no", "noanswer"):
        return float(pred == ref)
    p, r = pred.split(), ref.split()
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def title_recall(retrieved_titles: Iterable[str], gold_titles: Iterable[str]) -> float:
    """Fraction of gold titles present in the final context."""
    gold = set(gold_titles)
    return len(gold & set(retrieved_titles)) / len(gold) if gold else 0.0


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def evaluator(devset: list[Any], metric: Callable[..., Any], num_threads: int) -> dspy.Evaluate:
    """DSPy's threaded evaluation with a progress bar, as dspyc runs every one: each example is scored, and a failed
    call counts as a wrong answer (no traceback) instead of stopping the run."""
    return dspy.Evaluate(
        devset=devset,
        metric=metric,
        num_threads=num_threads,
        display_progress=True,
        max_errors=len(devset) + 1,
        provide_traceback=False,
    )
