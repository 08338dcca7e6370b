"""Does the program say when its data does not hold the answer? (`dspyc eval PROGRAM --unanswerable`)

The standard measurement: half of a split (seeded) is made unanswerable by the program's own `without_answers`
(rag: their gold passages leave the corpus); the program runs over that data on the whole split. Reported:
abstention on the unanswerable half (it said it does not know: a true `abstained` output), false abstention on the
answerable half (questions that kept every gold passage), and the metric on the answerable half with the program's
abstention rule and without it (`ProgramSpec.abstain_off`, the same LM calls: DSPy's cache answers the second run).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from dspyc import registry
from dspyc.data import ProgramData
from dspyc.errors import DspycError
from dspyc.metrics import mean
from dspyc.stats import paired_delta


@dataclass
class Answerability:
    """One program on one split: the halves' sizes, the shares that abstained, and the metric where answerable."""

    unanswerable: int
    answerable: int
    abstention: float  # share of the unanswerable half that abstained (higher is better)
    false_abstention: float  # share of the answerable half that abstained (lower is better)
    declined_scoring: float  # share of the answerable half that abstained where the rule off scored above 0
    score: float  # the metric on the answerable half, abstentions scored as the metric scores them (wrong)
    score_without_rule: float  # the same half with the abstention rule off
    delta: dict[str, float] | None  # score − score_without_rule, paired-bootstrap 95% interval


def halves(examples: Sequence[dspy.Example], seed: int) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """(to make unanswerable, the rest): a seeded half of the split, in split order."""
    picked = set(random.Random(f"unanswerable:{seed}").sample(range(len(examples)), len(examples) // 2))
    return [ex for i, ex in enumerate(examples) if i in picked], [
        ex for i, ex in enumerate(examples) if i not in picked
    ]


def check_program(spec: registry.ProgramSpec) -> None:
    """A one-line error for a program that cannot take its answers out of its data."""
    if spec.without_answers is None:
        raise DspycError(
            f"{spec.name} cannot be made unanswerable: its ProgramSpec sets no `without_answers` "
            "(a program that grounds answers in a corpus declares how to take the answers out)"
        )


def unanswerable_data(
    spec: registry.ProgramSpec, dataset: ProgramData, split: str, seed: int
) -> tuple[ProgramData, list[dspy.Example], list[dspy.Example]]:
    """The data with half of `split` made unanswerable; (data, unanswerable half, answerable half). A question of
    the other half that lost a gold passage too (shared with one removed) is in neither."""
    check_program(spec)
    if split not in dataset.splits:
        raise DspycError(f"unknown split {split!r}; choose one of {', '.join(dataset.splits)}")
    gone, rest = halves(dataset.splits[split], seed)
    reduced, lost = spec.without_answers(dataset, gone)
    return reduced, gone, [ex for ex in rest if ex.id not in lost]


def rebuild(spec: registry.ProgramSpec, module: dspy.Module, dataset: ProgramData, config: dict[str, Any]):
    """`module` built again over other data with `config`: its compiled state (demos, instructions) and each
    predictor's LM (an adapter) carried over."""
    other = spec.build(dataset, spec.config | config)
    other.load_state(module.dump_state())
    for (_, old), (_, new) in zip(module.named_predictors(), other.named_predictors(), strict=True):
        new.lm = old.lm
    return other


def score(
    rows: list[dict[str, Any]], rows_without_rule: list[dict[str, Any]], unanswerable: set[str], n_resamples: int
) -> Answerability:
    """Answerability from the evaluation rows (`id`, `outputs.abstained`, `score`) of both halves, with the rule and
    without it: a row whose id is in `unanswerable` is of that half, every other of the answerable one."""
    u = [r for r in rows if r["id"] in unanswerable]
    a = [r for r in rows if r["id"] not in unanswerable]
    off = [r for r in rows_without_rule if r["id"] not in unanswerable]
    scored_off = {r["id"] for r in off if r["score"] > 0}
    return Answerability(
        unanswerable=len(u),
        answerable=len(a),
        abstention=mean(float(bool(r["outputs"].get("abstained"))) for r in u),
        false_abstention=mean(float(bool(r["outputs"].get("abstained"))) for r in a),
        declined_scoring=mean(float(bool(r["outputs"].get("abstained")) and r["id"] in scored_off) for r in a),
        score=mean(r["score"] for r in a),
        score_without_rule=mean(r["score"] for r in off),
        delta=paired_delta(a, off, n_resamples),
    )


def table(a: Answerability, title: str):
    from rich.table import Table

    from dspyc.stats import format_delta

    t = Table(
        "half",
        "questions",
        "abstained",
        "of them scoring without the rule",
        "metric",
        "without the rule",
        "Δ [95% CI]",
        title=title,
    )
    t.add_row("unanswerable (gold removed)", str(a.unanswerable), f"{a.abstention:.3f}", "", "", "", "")
    t.add_row(
        "answerable",
        str(a.answerable),
        f"{a.false_abstention:.3f}",
        f"{a.declined_scoring:.3f}",
        f"{a.score:.3f}",
        f"{a.score_without_rule:.3f}",
        format_delta(a.delta),
    )
    return t
