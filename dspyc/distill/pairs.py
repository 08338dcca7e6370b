"""Preference pairs from the program's own metric: for each input, the best and worst of N sampled outputs
(student samples, plus the teacher's kept output), kept only when their scores differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dspy
from pydantic import BaseModel

from dspyc.adapter import ConstrainedJSONAdapter


class Candidate(BaseModel):
    text: str  # the raw assistant message (compact JSON when well formed)
    score: float
    source: str  # "student" or "teacher"


class CandidateGroup(BaseModel):
    example_id: str
    prompt: list[dict[str, str]]
    candidates: list[Candidate]


class PreferencePair(BaseModel):
    example_id: str
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    chosen_score: float
    rejected_score: float
    chosen_source: str
    rejected_source: str


def build_pairs(groups: list[CandidateGroup], min_margin: float = 0.0) -> list[PreferencePair]:
    """Best vs worst per input; ties (no margin above `min_margin`) give no pair. The first of equal scores wins,
    so the result does not depend on anything but the order of the candidates."""
    pairs = []
    for g in groups:
        cands = [c for c in g.candidates if c.text.strip()]
        if len(cands) < 2:
            continue
        best = max(cands, key=lambda c: c.score)
        worst = min(cands, key=lambda c: c.score)
        if best.score - worst.score <= min_margin or best.text == worst.text:
            continue
        pairs.append(
            PreferencePair(
                example_id=g.example_id,
                prompt=g.prompt,
                chosen=[{"role": "assistant", "content": best.text}],
                rejected=[{"role": "assistant", "content": worst.text}],
                chosen_score=best.score,
                rejected_score=worst.score,
                chosen_source=best.source,
                rejected_source=worst.source,
            )
        )
    return pairs


def score_completion(text: str, signature: type[dspy.Signature], example: dspy.Example, metric: Callable) -> float:
    """The metric's score of one raw completion; output that does not parse scores as an empty prediction."""
    try:
        fields: dict[str, Any] = ConstrainedJSONAdapter().parse(signature, text)
    except Exception:
        fields = {}
    return float(metric(example, dspy.Prediction(**fields)))
