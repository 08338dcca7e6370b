"""`dspyc compile`: baseline on dev → compile on train → dev and test → artifact, with one table at the end.

LM calls run concurrently against the engine (`num_threads`), every stage shows progress, a token budget
stops the run cleanly, and nothing is written unless the whole run succeeds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.usage_tracker import UsageTracker
from rich.console import Console
from rich.table import Table

from dspyc import artifacts, registry
from dspyc.errors import DspycError
from dspyc.lm import configure
from dspyc.models import served_name
from dspyc.optimizers import build_optimizer, load_recipe
from dspyc.settings import Settings, get_settings

console = Console()
EVALUATION_FILE = "evaluation.jsonl"  # per-example rows of the compiled program on dev and test


class BudgetExceeded(DspycError):
    pass


class SharedUsageTracker(UsageTracker):
    """DSPy deep-copies the usage tracker into each worker thread; this one is shared so totals add up."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        with self._lock:
            super().add_usage(lm, usage_entry)

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return super().get_total_tokens()


@dataclass
class Usage(BaseCallback):
    """Counts LM calls and billed tokens (DSPy's usage tracker; cache hits cost nothing) and enforces a token budget."""

    budget: int | None = None
    calls: int = 0
    tracker: SharedUsageTracker = field(default_factory=SharedUsageTracker)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _sum(self, key: str) -> int:
        return sum(int(v.get(key) or 0) for v in self.tracker.get_total_tokens().values())

    @property
    def input_tokens(self) -> int:
        return self._sum("prompt_tokens")

    @property
    def output_tokens(self) -> int:
        return self._sum("completion_tokens")

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def exceeded(self) -> bool:
        return self.budget is not None and self.total > self.budget

    def on_lm_start(self, call_id, instance, inputs):
        if self.exceeded:
            raise BudgetExceeded(f"token budget of {self.budget:,} exceeded")

    def on_lm_end(self, call_id, outputs, exception):
        with self._lock:
            self.calls += 1

    def context(self):
        return dspy.context(callbacks=[*dspy.settings.callbacks, self], usage_tracker=self.tracker)

    def cost(self, s: Settings) -> float:
        return (self.input_tokens * s.price_input_per_mtok + self.output_tokens * s.price_output_per_mtok) / 1e6

    def as_dict(self, s: Settings) -> dict[str, Any]:
        return {"lm_calls": self.calls, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "estimated_cost_usd": round(self.cost(s), 6)}


@dataclass
class Evaluation:
    """Every metric of the spec's report, and one row per example (inputs, gold, outputs, the metric's score)."""

    scores: dict[str, float]
    rows: list[dict[str, Any]]

    @property
    def per_example(self) -> list[float]:
        return [r["score"] for r in self.rows]


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)


def evaluate(program: dspy.Module, examples: list[dspy.Example], spec: registry.ProgramSpec, num_threads: int,
             label: str) -> Evaluation:
    """Run the program on examples concurrently. A failed call leaves an empty Prediction, scored as wrong."""
    if not examples:
        return Evaluation({}, [])
    console.print(f"[bold]{label}[/bold] ({len(examples)} examples)")
    evaluator = dspy.Evaluate(devset=examples, metric=spec.metric, num_threads=num_threads, display_progress=True,
                              max_errors=len(examples) + 1, provide_traceback=False)
    result = evaluator(program)
    scores = spec.report([(ex, pred) for ex, pred, _score in result.results])
    scores["metric"] = float(result.score) / 100.0
    scores["errors"] = sum(1 for _, p, _ in result.results if not p.keys())
    rows = [{"id": ex.get("id", str(i)), "inputs": {k: _jsonable(ex[k]) for k in ex.inputs().keys()},
             "gold": {k: _jsonable(v) for k, v in ex.labels().items()},
             "outputs": {k: _jsonable(v) for k, v in pred.items()}, "score": float(score or 0.0)}
            for i, (ex, pred, score) in enumerate(result.results)]
    return Evaluation(scores, rows)


def optimizer_trials(compiled: dspy.Module) -> list[float]:
    """The optimizer's score per trial, where it exposes them (MIPROv2, random search, GEPA, SIMBA)."""
    logs = getattr(compiled, "trial_logs", None)
    if isinstance(logs, dict) and logs:
        series = [v.get("full_eval_score", v.get("mb_score")) for _, v in sorted(logs.items()) if isinstance(v, dict)]
        return [float(x) for x in series if isinstance(x, (int, float))]
    detailed = getattr(compiled, "detailed_results", None)
    if detailed is not None and getattr(detailed, "val_aggregate_scores", None):
        return [float(x) for x in detailed.val_aggregate_scores]
    candidates = getattr(compiled, "candidate_programs", None)
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        ordered = sorted(candidates, key=lambda c: c.get("seed", 0)) if "seed" in candidates[0] else candidates
        return [float(c["score"]) for c in ordered if isinstance(c.get("score"), (int, float))]
    return []


def compile_program(name: str, recipe_name: str | None = None, data: str | None = None, seed: int = 0,
                    token_budget: int | None = None, s: Settings | None = None, skip_test: bool = False,
                    config: dict[str, Any] | None = None, sizes: tuple[int, int, int] | None = None,
                    lm_overrides: dict[str, Any] | None = None, save: bool = True,
                    warm_start: Path | None = None) -> artifacts.Manifest:
    """Compile `name` with a recipe. `sizes` overrides the (train, dev, test) split sizes; `save=False` is for
    benchmarks; `warm_start` is a program.json whose state the student starts from (instructions carry over
    for MIPROv2/GEPA; bootstrap-style optimizers reset demos by design)."""
    s = s or get_settings()
    t0 = time.perf_counter()
    spec = registry.get(name)
    recipe = load_recipe(recipe_name or spec.default_recipe)
    cfg = spec.config | (config or {})
    with console.status(f"loading dataset {data or spec.dataset}"):
        dataset = spec.load_data(data or spec.dataset, seed)
    if sizes:
        dataset.split(seed, *sizes)
    splits = dataset.splits
    console.print(f"[bold]{name}[/bold] · recipe [cyan]{recipe.name}[/cyan] ({recipe.optimizer}) · dataset "
                  f"{dataset.name}@{dataset.version} · train {len(splits['train'])} / dev {len(splits['dev'])} / "
                  f"test {len(splits['test'])} · seed {seed}")
    lm = configure(s, **(lm_overrides or {}))
    usage = Usage(budget=token_budget)
    with console.status("building retrieval indexes and the program (cached by corpus hash)"):
        program = spec.build(dataset, cfg)
    if warm_start:
        program.load(str(warm_start))
    results: dict[str, dict[str, dict[str, float]]] = {"baseline": {}, "compiled": {}}
    table: list[dict[str, Any]] = []  # per-example rows of the compiled program's evaluations
    stage_times: dict[str, float] = {}
    if save:
        from dspyc import tracking

        tracking.enable_traces(name, s)
    with usage.context():
        def stage(label: str, fn):
            t = time.perf_counter()
            out = fn()
            stage_times[label] = round(time.perf_counter() - t, 1)
            if usage.exceeded:
                raise BudgetExceeded(f"token budget of {token_budget:,} exceeded during {label} "
                                     f"({usage.total:,} tokens used); no artifact written")
            return out

        def run_eval(which: str, module: dspy.Module, split: str) -> None:
            ev = stage(f"{which} {split}", lambda: evaluate(module, splits[split], spec, s.num_threads,
                                                            f"{'uncompiled' if which == 'baseline' else which} · {split}"))
            results[which][split] = ev.scores
            if which == "compiled":
                table.extend({"split": split, **row} for row in ev.rows)

        run_eval("baseline", program, "dev")
        optimizer, compile_kwargs = build_optimizer(recipe, spec.metric, num_threads=s.num_threads, seed=seed)
        console.print(f"[bold]compiling[/bold] with {recipe.optimizer} on train ({len(splits['train'])} examples)")
        compiled = stage("compile", lambda: optimizer.compile(program, trainset=splits["train"], **compile_kwargs))
        run_eval("compiled", compiled, "dev")
        if not skip_test:
            run_eval("baseline", program, "test")
            run_eval("compiled", compiled, "test")
    wall = round(time.perf_counter() - t0, 1)
    manifest = artifacts.Manifest(
        program=name, version=0, import_path=spec.import_path, source_hash=registry.source_hash(name),
        recipe=recipe.model_dump(), dataset=artifacts.DatasetRef(name=dataset.name, path=str(dataset.path), version=dataset.version),
        lm=artifacts.LMRef(backend=s.lm_backend, model=s.lm_model, served_name=served_name(s.lm_model, s)),
        seed=seed, config=cfg, metrics=results, usage=usage.as_dict(s) | {"stage_wall_time_s": stage_times},
        wall_time_s=wall, library_versions=artifacts.library_versions(), git_commit=artifacts.git_commit(s.project_dir),
        trials=optimizer_trials(compiled),
        trained_on=[str(ex.get("id")) for split in ("train", "dev") for ex in splits[split] if ex.get("id") is not None]
        + (spec.learned_from(dataset, cfg) if spec.learned_from else []))
    if not save:
        return manifest
    with artifacts.state_file(compiled) as state_file:
        evaluation = "".join(json.dumps(row, default=str) + "\n" for row in table)
        out = artifacts.save(name, {artifacts.PROGRAM_FILE: state_file, EVALUATION_FILE: evaluation}, manifest, s)
    print_summary(manifest, lm_model=lm.model)
    console.print(f"[green]✓[/green] {name}@{manifest.version} → {out}")
    from dspyc import tracking

    tracking.log_compile(manifest, out, s)
    return manifest


def print_summary(m: artifacts.Manifest, lm_model: str = "") -> None:
    # every metric the program's report gives (e.g. per-category accuracy), the DSPy metric last
    first = m.metrics.get("compiled", {}).get("test") or m.metrics.get("compiled", {}).get("dev", {})
    keys = [k for k in first if k not in ("errors", "metric")] + ["metric"] * ("metric" in first)
    table = Table(title=f"{m.program}@{m.version} · {m.recipe.get('name')} · {lm_model or m.lm.served_name}")
    table.add_column("split")
    table.add_column("program")
    for k in keys:
        table.add_column(k, justify="right")
    for split in ("dev", "test"):
        for which in ("baseline", "compiled"):
            row = m.metrics.get(which, {}).get(split)
            if row:
                table.add_row(split, "uncompiled" if which == "baseline" else "compiled",
                              *(f"{row.get(k, 0.0):.3f}" for k in keys))
    console.print(table)
    u = m.usage
    console.print(f"LM calls {u.get('lm_calls', 0):,} · tokens in {u.get('input_tokens', 0):,} / out "
                  f"{u.get('output_tokens', 0):,} · est. cost ${u.get('estimated_cost_usd', 0):.4f} · "
                  f"wall time {m.wall_time_s:.0f}s {u.get('stage_wall_time_s', '')}")


def evaluate_version(ref: str, data: str | None = None, split: str = "test", s: Settings | None = None) -> dict[str, float]:
    """Evaluate a compiled version on any dataset folder without compiling."""
    s = s or get_settings()
    name, _ = artifacts.parse_ref(ref)
    spec = registry.get(name)
    with console.status("building retrieval indexes and the program"):
        program, manifest, dataset = artifacts.build_version(ref, data=data, s=s)
    version = manifest.version
    if split not in dataset.splits:
        raise DspycError(f"unknown split {split!r}; choose one of {', '.join(dataset.splits)}")
    configure(s)
    from dspyc import tracking

    tracking.enable_traces(name, s)
    usage = Usage()
    t0 = time.perf_counter()
    with usage.context():
        ev = evaluate(program, dataset.splits[split], spec, s.num_threads, f"{name}@{version} · {dataset.name} · {split}")
    scores = ev.scores
    table = Table("metric", "value", title=f"{name}@{version} on {dataset.name}/{split} ({len(dataset.splits[split])} examples)")
    for k, v in scores.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    console.print(table)
    console.print(f"LM calls {usage.calls:,} · tokens in {usage.input_tokens:,} / out {usage.output_tokens:,}")
    params = {"ref": ref, "version": version, "dataset": dataset.name, "dataset_hash": dataset.version, "split": split,
              "lm": served_name(s.lm_model, s)}
    metrics = {f"eval.{k}": float(v) for k, v in scores.items()} | {f"usage.{k}": float(v) for k, v in usage.as_dict(s).items()}
    try:
        tracking.log_run(name, "eval", f"eval {name}@{version} on {dataset.name}/{split}", params,
                         metrics | {"wall_time_s": time.perf_counter() - t0}, s,
                         tags={tracking.VERSION_TAG: str(version)}, tables={"evaluation.json": ev.rows})
    except Exception as exc:  # the numbers are printed above; tracking is best effort here
        console.print(f"[yellow]tracking skipped[/yellow] ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    return scores
