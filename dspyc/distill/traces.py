"""Teacher → traces → SFT dataset.

The teacher program runs over train inputs; each run's trace (every predictor's inputs and outputs) is
kept only where the program's metric passes. Each kept predictor call becomes one chat example holding the
exact messages the *student* program sends for those inputs (its own signature, no demos), so the student
is trained on the prompts it will see at inference, and on the compact JSON the engine's grammar allows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dspy
from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python
from rich.progress import Progress

from dspyc.adapter import ConstrainedJSONAdapter, text_field


class PredictorCall(BaseModel):
    predictor: str  # the predictor's name in the program (named_predictors)
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    # How many times this step's row is trained. A program's `gold_trace` raises it for a rare step that decides
    # the run (the agent's split into several tasks); 1 everywhere else.
    weight: int = Field(1, ge=1)


class TeacherRun(BaseModel):
    example_id: str
    inputs: dict[str, Any]
    calls: list[PredictorCall]
    score: float
    passed: bool
    error: str | None = None
    source: str = "teacher"  # or "gold": a labelled answer the program supplies (`gold_trace`), not a teacher run


def gold_runs(
    gold_trace: Callable[[dspy.Example], list[dict[str, Any]]], examples: Iterable[dspy.Example]
) -> list[TeacherRun]:
    """A program's gold labels as passing runs (score 1), one per example: SFT data beside the teacher's traces."""
    runs = []
    for ex in examples:
        calls = [PredictorCall(**c) for c in gold_trace(ex)]
        runs.append(
            TeacherRun(
                example_id=str(ex.get("id")),
                inputs=dict(ex.inputs()),
                calls=calls,
                score=1.0,
                passed=True,
                source="gold",
            )
        )
    return runs


class SFTRow(BaseModel):
    """One chat example: `prompt` (system + user messages) and `completion` (the assistant message)."""

    example_id: str
    predictor: str
    score: float
    source: str = "teacher"  # the run's: "teacher" (a passing trace) or "gold" (a label)
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
        return TeacherRun(
            example_id=ex_id,
            inputs=inputs,
            calls=[],
            score=0.0,
            passed=False,
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
    score = float(metric(example, pred))
    passed = score >= min_score if min_score is not None else bool(metric(example, pred, trace))
    calls = [
        PredictorCall(predictor=names.get(id(p), type(p).__name__), inputs=dict(i), outputs=dict(o))
        for p, i, o in trace
    ]
    return TeacherRun(example_id=ex_id, inputs=inputs, calls=calls, score=score, passed=passed)


def collect(
    teacher: dspy.Module,
    examples: list[dspy.Example],
    metric: Callable,
    *,
    repeats: int = 1,
    min_score: float | None = None,
    num_threads: int = 4,
    lm: dspy.LM | None = None,
    progress: Progress | None = None,
) -> list[TeacherRun]:
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


def relabelled_runs(
    relabel: Callable[[dspy.Example, list[PredictorCall]], list[dict[str, Any]]],
    runs: Iterable[TeacherRun],
    examples: dict[str, dspy.Example],
) -> list[TeacherRun]:
    """A program's gold outputs written over its own runs (rag: the gold answer over the passages it retrieved, where
    they hold it), one gold run per run that yields any call; passing or not, the run's inputs were the program's."""
    out = []
    for run in runs:
        calls = [PredictorCall(**c) for c in relabel(examples[run.example_id], run.calls)] if run.calls else []
        if calls:
            out.append(
                TeacherRun(
                    example_id=run.example_id, inputs=run.inputs, calls=calls, score=1.0, passed=True, source="gold"
                )
            )
    return out


def compact_json(outputs: dict[str, Any], signature: type[dspy.Signature]) -> str:
    """The assistant message as the engine emits it: compact JSON, the signature's output fields in order."""
    # typed outputs (the agent's FunctionCall models) as the JSON the engine would have sent
    fields = to_jsonable_python({k: outputs.get(k) for k in signature.output_fields}, fallback=str)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def chat_row(
    adapter: ConstrainedJSONAdapter, pred: dspy.Predict, inputs: dict[str, Any], outputs: dict[str, Any]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(prompt, completion): the messages `pred` sends for `inputs` (its instructions and demos as they stand, in its
    reply mode) and the reply that gives `outputs`, exactly as the engine would see and emit them."""
    if pred.config.get("reply") == "text":  # a plain-text predictor (rag's answer): no JSON around the reply
        name, bound = text_field(pred.signature)
        request = adapter._text_request(name, bound, {}, pred.signature, list(pred.demos), inputs)
        messages, reply = request["messages"], str(outputs.get(name, ""))[:bound]
    else:
        messages = adapter.format(pred.signature, demos=list(pred.demos), inputs=inputs)
        reply = compact_json(outputs, pred.signature)
    return [{"role": m["role"], "content": m["content"]} for m in messages], [{"role": "assistant", "content": reply}]


def sft_rows(runs: Iterable[TeacherRun], student: dspy.Module, dedupe: bool = False) -> list[SFTRow]:
    """Chat examples from the kept runs, formatted with the student's own predictors as they stand (a student built
    fresh has no demos; a compiled program's demos are part of its prompt). With `dedupe`, a row repeated verbatim (a
    teacher that answers every repeat alike) is kept once instead of weighing N times. A step's `weight` repeats its
    row."""
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
            prompt, completion = chat_row(adapter, pred, call.inputs, call.outputs)
            if dedupe:
                key = json.dumps([prompt, completion])
                if key in seen:
                    continue
                seen.add(key)
            row = SFTRow(
                example_id=run.example_id,
                predictor=call.predictor,
                score=run.score,
                source=run.source,
                prompt=prompt,
                completion=completion,
            )
            rows += [row] * call.weight
    return rows


def dataset_version(rows: Iterable[BaseModel]) -> str:
    """Content hash of a dataset's rows: the same traces give the same version."""
    h = hashlib.sha256()
    for row in rows:
        h.update(row.model_dump_json().encode() + b"\n")
    return h.hexdigest()[:16]


def write_dataset(program: str, kind: str, rows: list[BaseModel], s) -> tuple[str, Path]:
    """Rows as `artifacts/<program>/datasets/<kind>-<content hash>.jsonl` (written atomically); (version, path)."""
    from dspyc import artifacts

    version = dataset_version(rows)
    d = artifacts.program_dir(program, s) / "datasets"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{kind}-{version}.jsonl"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(to_jsonl(rows))
    os.replace(tmp, path)
    return version, path


def to_jsonl(rows: Iterable[BaseModel]) -> str:
    return "".join(r.model_dump_json() + "\n" for r in rows)
