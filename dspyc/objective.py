"""Compile for cost: the cheapest program that is provably not worse, and the quality–cost frontier.

A compile's objective is `quality` (the compiled program must beat the uncompiled one on dev), `cost` (the
cheapest candidate whose dev score is not worse than the uncompiled program's by more than `margin`: the lower
bound of the paired-bootstrap 95% interval of candidate − uncompiled must be ≥ −margin) or `pareto` (every
candidate scored; the non-dominated set is registered, one version per point).

Candidates are the program's own settings that trade cost for quality (`ProgramSpec.cost_space`: one line per
setting), stored versions of the same program (`--candidate rag@3`), and what the recipe's optimizer compiled,
if it names one. Cost is measured, never estimated: each candidate runs on a few train examples first (the probe)
so candidates can be scored on dev cheapest first, and `cost` stops at the first that passes. Tokens are counted
for cached calls too; a compile minimising latency or $ runs with DSPy's cache off, so every call is timed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import dspy

from dspyc.console import console as make_console
from dspyc.errors import DspycError
from dspyc.stats import format_delta, paired_delta

console = make_console()
Objective = Literal["quality", "cost", "pareto"]
CostMeasure = Literal["tokens", "prompt_tokens", "latency", "usd"]
COST_LABELS = {
    "tokens": "tokens/run",
    "prompt_tokens": "prompt tokens/run",
    "latency": "p50 s/run",
    "usd": "$ per 1k runs",
}


def run_cost(cost: dict[str, float], measure: CostMeasure, price_machine_hour: float) -> float | None:
    """What one program run costs by `measure`, from an evaluation's cost summary (None: not measured)."""
    if not cost.get("runs"):
        return None
    if measure == "tokens":
        return cost["prompt_tokens_per_run"] + cost["output_tokens_per_run"]
    if measure == "prompt_tokens":
        return cost["prompt_tokens_per_run"]
    if measure == "latency":
        return cost.get("run_p50_s")  # None when every run had a cached call
    return usd_per_1k_runs(cost, price_machine_hour)


def usd_per_1k_runs(cost: dict[str, float], price_machine_hour: float) -> float:
    """The machine's share of a run (the evaluation's wall time over its runs), priced per hour, times 1,000."""
    return round(cost.get("machine_s_per_run", 0.0) * price_machine_hour / 3.6, 4)


@dataclass
class Candidate:
    """One program the search may choose: settings on top of the uncompiled config, a stored version, or the recipe's
    compiled program. `probe`/`dev` are its measured costs and dev evaluation once scored."""

    name: str
    module: dspy.Module
    config: dict[str, Any] = field(default_factory=dict)
    origin: Literal["uncompiled", "settings", "version", "recipe"] = "settings"
    probe_cost: float | None = None
    dev: Any = None  # compiler.Evaluation
    dev_cost: float | None = None
    delta: dict[str, float] | None = None
    manifest: Any = None  # a stored version's manifest (origin "version")

    @property
    def quality(self) -> float:
        return float(self.dev.scores.get("metric", 0.0)) if self.dev is not None else float("nan")


def space_candidates(
    space: dict[str, list[Any]],
    config: dict[str, Any],
    build: Callable[[dict[str, Any]], dspy.Module],
    max_candidates: int,
) -> list[Candidate]:
    """Every combination of the declared settings except the uncompiled config itself, each built from config."""
    return [
        Candidate(" ".join(f"{k}={v}" for k, v in c.items()), build(config | c), c)
        for c in space_changes(space, config, max_candidates)
    ]


def space_changes(space: dict[str, list[Any]], config: dict[str, Any], max_candidates: int) -> list[dict[str, Any]]:
    """The grid of the declared settings as changes to `config` (the uncompiled config left out); checked, so a
    compile can refuse a bad space before it spends anything."""
    unknown = [k for k in space if k not in config]
    if unknown:
        raise DspycError(f"cost_space names setting(s) {', '.join(unknown)} the program's config does not have")
    grid = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    changes = [c for c in ({k: v for k, v in g.items() if config[k] != v} for g in grid) if c]
    if len(changes) > max_candidates:
        raise DspycError(
            f"the cost space has {len(changes)} candidates, above max_candidates={max_candidates}: "
            "declare fewer values, or raise DSPYC_COST_MAX_CANDIDATES"
        )
    return changes


def non_inferior(delta: dict[str, float] | None, margin: float) -> bool:
    """The lower bound of candidate − uncompiled's 95% interval is at least −margin."""
    return delta is not None and delta["low"] >= -margin


def frontier(points: list[Candidate]) -> list[Candidate]:
    """The non-dominated candidates (higher dev quality, lower dev cost), cheapest first."""
    scored, seen = [], set()
    for c in points:  # one of each (score, cost): settings a program ignores give the same program twice
        if c.dev is not None and c.dev_cost is not None and (c.quality, c.dev_cost) not in seen:
            seen.add((c.quality, c.dev_cost))
            scored.append(c)
    keep = [
        c
        for c in scored
        if not any(
            o is not c
            and o.quality >= c.quality
            and o.dev_cost <= c.dev_cost
            and (o.quality > c.quality or o.dev_cost < c.dev_cost)
            for o in scored
        )
    ]
    return sorted(keep, key=lambda c: (c.dev_cost, -c.quality))


@dataclass
class SearchResult:
    uncompiled: Candidate
    scored: list[Candidate]  # every candidate scored on dev, in the order scored (cheapest probe first)
    chosen: Candidate | None  # `cost`: the first non-inferior; `pareto`: the cheapest non-inferior frontier point
    points: list[Candidate]  # `pareto`: the frontier (uncompiled included where it is on it)
    probed: list[Candidate] = field(default_factory=list)


Evaluate = Callable[[list[tuple[str, dspy.Module, list[dspy.Example]]]], list[Any]]


def probe(
    candidates: list[Candidate],
    uncompiled: Candidate,
    examples: list[dspy.Example],
    evaluate: Evaluate,
    measure: CostMeasure,
    price: float,
) -> list[Candidate]:
    """Each candidate's cost on the probe examples (train), in one pool; returns them cheapest first, one of each
    that behaved alike (the same outputs at the same token cost: a setting the others made irrelevant, such as
    the query writer's excerpt length with one hop)."""
    every = [uncompiled, *candidates]
    evs = evaluate([(f"probe · {c.name}", c.module, examples) for c in every])
    seen, out = set(), []
    for c, ev in zip(every, evs, strict=True):
        c.probe_cost = run_cost(ev.cost, measure, price)
        key = (
            json.dumps([r["outputs"] for r in ev.rows], sort_keys=True, default=str),
            run_cost(ev.cost, "tokens", price),
        )
        if key not in seen:
            seen.add(key)
            out.append(c)
    return sorted((c for c in out if c is not uncompiled), key=lambda c: (c.probe_cost is None, c.probe_cost or 0.0))


def search(
    objective: Objective,
    candidates: list[Candidate],
    uncompiled: Candidate,
    probe_examples: list[dspy.Example],
    dev: list[dspy.Example],
    evaluate: Evaluate,
    *,
    measure: CostMeasure,
    margin: float,
    price: float,
    resamples: int,
    seed: int,
) -> SearchResult:
    """Score candidates on dev, cheapest (by probe) first. `cost`: only those cheaper than the uncompiled program
    on the probe, stopping at the first non-inferior one; `pareto`: all of them, then the frontier."""
    ordered = probe(candidates, uncompiled, probe_examples, evaluate, measure, price) if probe_examples else candidates
    if objective == "cost" and uncompiled.probe_cost is not None:
        ordered = [c for c in ordered if c.probe_cost is not None and c.probe_cost < uncompiled.probe_cost]
    console.print(
        f"{objective} search: {len(ordered)} candidate(s) on dev, cheapest first "
        f"(uncompiled: {format_cost(uncompiled.probe_cost)} {COST_LABELS[measure]} on the probe)"
    )
    scored, chosen = [], None
    for i, c in enumerate(ordered, 1):
        c.dev = evaluate([(f"candidate {i}/{len(ordered)} · {c.name} · dev", c.module, dev)])[0]
        c.dev_cost = run_cost(c.dev.cost, measure, price)
        c.delta = paired_delta(c.dev.rows, uncompiled.dev.rows, resamples, seed=seed)
        scored.append(c)
        ok = non_inferior(c.delta, margin) and _cheaper(c, uncompiled)
        console.print(
            f"  {c.name}: dev {c.quality:.3f} · Δ {format_delta(c.delta)} · {format_cost(c.dev_cost)} "
            f"{COST_LABELS[measure]} · {'non-inferior' if ok else 'not non-inferior' if not non_inferior(c.delta, margin) else 'not cheaper'}"
        )
        if ok and chosen is None:
            chosen = c
            if objective == "cost":
                break
    points = frontier([uncompiled, *scored]) if objective == "pareto" else []
    if objective == "pareto":  # the cheapest frontier point that is not worse: what `cost` would have shipped
        chosen = next(
            (c for c in points if c is not uncompiled and non_inferior(c.delta, margin) and _cheaper(c, uncompiled)),
            None,
        )
    return SearchResult(uncompiled, scored, chosen, points, ordered)


def decision(result: SearchResult, objective: Objective, margin: float, measure: CostMeasure) -> tuple[str, str]:
    """("compiled" | "uncompiled", the one-line reason) of a cost or pareto compile."""
    rule = f"objective {objective} (non-inferiority at margin {margin:g})"
    c, base = result.chosen, result.uncompiled
    if c is None:
        return "uncompiled", (
            f"{rule}: none of {len(result.scored)} candidate(s) scored on dev is both cheaper and "
            f"not worse by more than {margin:g}: kept the uncompiled program"
        )
    saving = 1 - c.dev_cost / base.dev_cost if base.dev_cost else 0.0
    return "compiled", (
        f"{rule}: {c.name} is not worse on dev (Δ {format_delta(c.delta)}, lower bound ≥ −{margin:g}) "
        f"at {format_cost(base.dev_cost)} → {format_cost(c.dev_cost)} {COST_LABELS[measure]} ({saving:.0%} less)"
    )


def summary(result: SearchResult, measure: CostMeasure) -> list[dict[str, Any]]:
    """One row per candidate (the uncompiled program first) for the manifest, MLflow and the tables."""
    on_frontier = {id(c) for c in result.points}
    return [
        {
            "name": c.name,
            "origin": c.origin,
            "config": c.config,
            "probe_cost": c.probe_cost,
            "dev": c.quality if c.dev is not None else None,
            "dev_cost": c.dev_cost,
            "delta": c.delta,
            "cost": c.dev.cost if c.dev is not None else {},
            "measure": measure,
            "frontier": id(c) in on_frontier,
            "chosen": c is result.chosen,
        }
        for c in [result.uncompiled, *result.probed]
        if c is result.uncompiled or c.dev is not None
    ]


def _cheaper(c: Candidate, base: Candidate) -> bool:
    return c.dev_cost is not None and base.dev_cost is not None and c.dev_cost < base.dev_cost


def format_cost(x: float | None) -> str:
    """A cost as the tables print it: four decimals below 1 ($ per 1k runs), else one (tokens, seconds)."""
    return "–" if x is None else f"{x:,.4f}" if x < 1 else f"{x:,.1f}"
