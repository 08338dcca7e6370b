"""Teacher → traces → SFT dataset.

The teacher program runs over train inputs; each run's trace (every predictor's inputs and outputs) is
kept only where the program's metric passes. Each kept predictor call becomes one chat example holding the
exact messages the *student* program sends for those inputs (its own signature, no demos), so the student
is trained on the prompts it will see at inference, and on the compact JSON the engine's grammar allows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.progress import Progress

from dspyc.adapter import ConstrainedJSONAdapter


class PredictorCall(BaseModel):
    predictor: str  # the predictor's name in the program (named_predictors)
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class TeacherRun(BaseModel):
    example_id: str
    inputs: dict[str, Any]
    calls: list[PredictorCall]
    score: float
    passed: bool
    error: str | None = None
    source: str = "teacher"  # or "gold": a labelled answer the program supplies (`gold_trace`), not a teacher run


def gold_runs(gold_trace: Callable[[dspy.Example], list[dict[str, Any]]], examples: Iterable[dspy.Example]) -> list[TeacherRun]:
    """A program's gold labels as passing runs (score 1), one per example: SFT data beside the teacher's traces."""
    runs = []
    for ex in examples:
        calls = [PredictorCall(**c) for c in gold_trace(ex)]
        runs.append(TeacherRun(example_id=str(ex.get("id")), inputs=dict(ex.inputs()), calls=calls, score=1.0,
                               passed=True, source="gold"))
    return runs


class SFTRow(BaseModel):
    """One chat example: `prompt` (system + user messages) and `completion` (the assistant message)."""

    example_id: str
    predictor: str
    score: float
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]


def _run_one(teacher: dspy.Module, example: dspy.Example, metric: Callable, min_score: float | None) -> TeacherRun:
    inputs = dict(example.inputs())
    # Names from the module that runs: a repeat runs a copy, whose predictors are new objects.
    names = {id(p): n for n, p in teacher.named_predictors()}
    ex_id = str(example.get("id", json.dumps(inputs, sort_keys=True)[:80]))
    try:
        with dspy.context(trace=[]):
            pred = teacher(**inputs)
            trace = list(dspy.settings.trace)
    except Exception as exc:  # a failed call is a failed trace, not a failed run
        return TeacherRun(example_id=ex_id, inputs=inputs, calls=[], score=0.0, passed=False,
                          error=f"{type(exc).__name__}: {exc}"[:300])
    score = float(metric(example, pred))
    passed = score >= min_score if min_score is not None else bool(metric(example, pred, trace))
    calls = [PredictorCall(predictor=names.get(id(p), type(p).__name__), inputs=dict(i), outputs=dict(o))
             for p, i, o in trace]
    return TeacherRun(example_id=ex_id, inputs=inputs, calls=calls, score=score, passed=passed)


def collect(teacher: dspy.Module, examples: list[dspy.Example], metric: Callable, *, repeats: int = 1,
            min_score: float | None = None, num_threads: int = 4, lm: dspy.LM | None = None,
            progress: Progress | None = None) -> list[TeacherRun]:
    """Run the teacher `repeats` times over each example; every run with its trace, score and pass flag.
    With repeats > 1 the LM should sample (temperature > 0); each repeat has its own rollout_id, so a cached LM
    returns the same samples to a re-run and distinct ones across repeats."""
    jobs = [(ex, r) for ex in examples for r in range(repeats)]
    task = progress.add_task("teacher traces", total=len(jobs)) if progress else None
    lm = lm or dspy.settings.lm
    adapter = dspy.settings.adapter

    def work(job: tuple[dspy.Example, int]) -> TeacherRun:
        ex, r = job
        # rollout_id makes each repeat a distinct request (and cache key) in DSPy 3.
        with dspy.context(lm=lm, adapter=adapter):
            run = _run_one(teacher if r == 0 else _with_rollout(teacher, lm, r), ex, metric, min_score)
        if progress:
            progress.advance(task)
        return run

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return list(pool.map(work, jobs))


def _with_rollout(teacher: dspy.Module, lm: dspy.LM, r: int) -> dspy.Module:
    t = teacher.deepcopy()
    t.set_lm(lm.copy(rollout_id=r))
    return t


def compact_json(outputs: dict[str, Any], signature: type[dspy.Signature]) -> str:
    """The assistant message as the engine emits it: compact JSON, the signature's output fields in order."""
    # typed outputs (the agent's FunctionCall models) as the JSON the engine would have sent
    fields = to_jsonable_python({k: outputs.get(k) for k in signature.output_fields}, fallback=str)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def sft_rows(runs: Iterable[TeacherRun], student: dspy.Module, dedupe: bool = False) -> list[SFTRow]:
    """Chat examples from the kept runs, formatted with the student's own predictors (no demos). With `dedupe`, a
    row repeated verbatim (a teacher that answers every repeat alike) is kept once instead of weighing N times."""
    adapter = ConstrainedJSONAdapter()
    predictors = dict(student.named_predictors())
    rows, seen = [], set()
    for run in runs:
        if not run.passed:
            continue
        for call in run.calls:
            pred = predictors.get(call.predictor)
            if pred is None:
                continue
            messages = adapter.format(pred.signature, demos=[], inputs=call.inputs)
            prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
            completion = [{"role": "assistant", "content": compact_json(call.outputs, pred.signature)}]
            if dedupe:
                key = json.dumps([prompt, completion])
                if key in seen:
                    continue
                seen.add(key)
            rows.append(SFTRow(example_id=run.example_id, predictor=call.predictor, score=run.score,
                               prompt=prompt, completion=completion))
    return rows


def dataset_version(rows: Iterable[BaseModel]) -> str:
    """Content hash of a dataset's rows: the same traces give the same version."""
    h = hashlib.sha256()
    for row in rows:
        h.update(row.model_dump_json().encode() + b"\n")
    return h.hexdigest()[:16]


def to_jsonl(rows: Iterable[BaseModel]) -> str:
    return "".join(r.model_dump_json() + "\n" for r in rows)
