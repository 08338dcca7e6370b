"""`dspyc compile`: baseline on dev → compile on train → dev and test → artifact, with one table at the end.

LM calls run concurrently against the engine (`num_threads`), every stage shows progress, a token budget
stops the run cleanly, and nothing is written unless the whole run succeeds.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.usage_tracker import UsageTracker
from rich.table import Table

from dspyc import abstention, artifacts, loading, plots, registry
from dspyc.console import console as make_console
from dspyc.data import SPLIT_KEYS, ProgramData, apply_split_config
from dspyc.errors import DspycError
from dspyc.lm import configure, usage_listener
from dspyc.metrics import evaluator
from dspyc.models import served_name
from dspyc.finetune import CompileContext, Finetune, WeightsResult, adapter_lm, release_adapter_lm
from dspyc.retriever_training import EncoderResult, TrainRetriever
from dspyc import retriever_training
from dspyc.distill.student import adapter_ref
from dspyc.objective import (
    COST_LABELS,
    Candidate,
    Objective,
    SearchResult,
    decision,
    format_cost,
    run_cost,
    search,
    space_candidates,
    space_changes,
    summary,
    usd_per_1k_runs,
)
from dspyc.optimizers import Recipe, build_optimizer, load_recipe, prewarm_bootstrap, with_objective
from dspyc.settings import Settings, get_settings
from dspyc.stats import format_delta, paired_delta

console = make_console()
ADAPTER_DIR = "adapter"  # a weights compile's LoRA adapter, in the version folder
ENCODER_DIR = "encoder"  # a retriever compile's trained encoder, in the version folder
EVALUATION_FILE = "evaluation.jsonl"  # per-example rows of the kept program on dev and test
OTHER_EVALUATION_FILE = "evaluation_{which}.jsonl"  # the same for the program not kept (compiled or uncompiled)


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
        return {
            "lm_calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "estimated_cost_usd": round(self.cost(s), 6),
        }


@dataclass
class Evaluation:
    """Every metric of the spec's report, one row per example (inputs, gold, outputs, the metric's score), and what a
    call cost (`CallCosts.summary`)."""

    scores: dict[str, float]
    rows: list[dict[str, Any]]
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def per_example(self) -> list[float]:
        return [r["score"] for r in self.rows]


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)


def evaluate(
    program: dspy.Module, examples: list[dspy.Example], spec: registry.ProgramSpec, num_threads: int, label: str
) -> Evaluation:
    """Run the program on examples concurrently. A failed call leaves an empty Prediction, scored as wrong."""
    return evaluate_many([(label, program, examples)], spec, num_threads)[0]


class CallCosts(BaseCallback):
    """Per evaluation job: each LM call's tokens and latency, and each program run's. A call answered from DSPy's
    cache bills nothing and takes no engine time: it is counted apart (`cached_calls`) and left out of the per-call
    figures and latencies, but its tokens (DSPy keeps a cached response's usage; `dspyc.lm.LM` hands it on) still
    count in the tokens per run, so a re-run compile measures what a run costs from its cache.

    The job is known by thread (`run` marks the worker); a call learns it was billed when the LM hands its usage to
    the usage tracker, which `run` wraps so the compile's own totals (and token budget) still see every call."""

    def __init__(self):
        self._local = threading.local()
        self._lock = threading.Lock()
        self.calls: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}
        # per job: each program run's (wall time, prompt tokens, output tokens, whether any call was cached)
        self.runs: dict[str, list[tuple[float, int, int, bool]]] = {}
        self.machine_s_per_run = 0.0  # the pool's wall time over its runs: the machine's share of one run

    def run(self, label: str, fn):
        self._local.job, self._local.tokens, self._local.cached = label, [0, 0], False
        tracker = _BillingTracker(self, dspy.settings.usage_tracker)
        t0 = time.perf_counter()
        try:
            with dspy.context(usage_tracker=tracker), usage_listener(self.seen):
                return fn()
        finally:
            with self._lock:
                self.runs.setdefault(label, []).append(
                    (time.perf_counter() - t0, *self._local.tokens, self._local.cached)
                )

    def bill(self, usage: dict[str, Any]) -> None:
        self._local.usage = usage

    def seen(self, usage: dict[str, Any]) -> None:
        """Every response's usage, a cached one's included (from `dspyc.lm.LM`, after the tracker billed it or not)."""
        if getattr(self._local, "job", None) is not None:
            self._local.tokens[0] += int(usage.get("prompt_tokens") or 0)
            self._local.tokens[1] += int(usage.get("completion_tokens") or 0)
            self._local.cached |= self._local.usage is None

    def on_lm_start(self, call_id, instance, inputs):
        self._local.usage, self._local.t0 = None, time.perf_counter()

    def on_lm_end(self, call_id, outputs, exception):
        job = getattr(self._local, "job", None)
        if job is None or exception is not None:
            return
        with self._lock:
            self.calls.setdefault(job, []).append((time.perf_counter() - self._local.t0, self._local.usage))

    def summary(self, label: str) -> dict[str, float]:
        """prompt/output tokens and p50/mean latency per billed call, how many calls there were, and per run: tokens
        (cached calls included), p50 wall time (runs with no cached call) and the machine's share."""
        calls = self.calls.get(label, [])
        if not calls:
            return {}
        billed = [(lat, u) for lat, u in calls if u is not None]
        lat = sorted(x for x, _ in billed)
        n = max(1, len(billed))
        out = {
            "lm_calls": len(calls),
            "cached_calls": len(calls) - len(billed),
            "prompt_tokens_per_call": round(sum(int(u.get("prompt_tokens") or 0) for _, u in billed) / n, 1),
            "output_tokens_per_call": round(sum(int(u.get("completion_tokens") or 0) for _, u in billed) / n, 1),
            "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else 0.0,
            "latency_mean_s": round(sum(lat) / n, 3),
        }
        return out | self.per_run(label)

    def per_run(self, label: str) -> dict[str, float]:
        runs = self.runs.get(label, [])
        if not runs:
            return {}
        fresh = sorted(wall for wall, _, _, cached in runs if not cached)
        return {
            "runs": len(runs),
            "prompt_tokens_per_run": round(sum(r[1] for r in runs) / len(runs), 1),
            "output_tokens_per_run": round(sum(r[2] for r in runs) / len(runs), 1),
            **({"run_p50_s": round(fresh[len(fresh) // 2], 3)} if fresh else {}),
            "cached_runs": len(runs) - len(fresh),
            "machine_s_per_run": round(self.machine_s_per_run, 3),
        }


class _BillingTracker(SharedUsageTracker):
    """Tells `CallCosts` that the current call was billed, and hands the usage on to the compile's tracker."""

    def __init__(self, costs: CallCosts, parent: UsageTracker | None):
        super().__init__()
        self.costs, self.parent = costs, parent

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        self.costs.bill(dict(usage_entry))
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)


class _Item:
    """One (job, example) pair of a shared evaluation pool; `inputs()` is what dspy.Evaluate calls the program with."""

    __slots__ = ("label", "module", "example")

    def __init__(self, label: str, module: dspy.Module, example: dspy.Example):
        self.label, self.module, self.example = label, module, example

    def inputs(self) -> dict[str, Any]:
        return {"item": self}

    def __repr__(self) -> str:  # what DSPy logs for a failed call
        return f"{self.label}: {self.example!r}"


def evaluate_many(
    jobs: list[tuple[str, dspy.Module, list[dspy.Example]]], spec: registry.ProgramSpec, num_threads: int
) -> list[Evaluation]:
    """Evaluate (label, module, examples) jobs in ONE pool of `num_threads`: one dspy.Evaluate over every
    (job, example) pair, with one progress bar, so one job's tail overlaps the next one's start and a batching
    engine keeps `num_threads` requests in flight. Each job's Evaluation is the one it gets on its own (rows in
    example order; a failed call leaves an empty Prediction, scored as wrong)."""
    items = [_Item(label, module, ex) for label, module, examples in jobs for ex in examples]
    if not items:
        return [Evaluation({}, []) for _ in jobs]
    for label, _, examples in jobs:
        if examples:
            console.print(f"[bold]{label}[/bold] ({len(examples)} examples)")

    def metric(item: _Item, pred: dspy.Prediction, trace=None):
        return spec.metric(item.example, pred)

    metric.__name__ = getattr(spec.metric, "__name__", "metric")  # MLflow names a trace's assessment after it
    run = evaluator(items, metric, num_threads)
    costs = CallCosts()
    t0 = time.perf_counter()
    with dspy.context(callbacks=[*dspy.settings.callbacks, costs]):
        results = run(lambda item: costs.run(item.label, lambda: item.module(**item.example.inputs()))).results
    costs.machine_s_per_run = (time.perf_counter() - t0) / len(items)
    evs, start = [], 0
    for label, _, examples in jobs:
        part = [(item.example, pred, score) for item, pred, score in results[start : start + len(examples)]]
        start += len(examples)
        evs.append(_evaluation(part, spec))
        evs[-1].cost = costs.summary(label)
    return evs


def check_failures(label: str, ev: Evaluation, n: int, max_fraction: float) -> None:
    """A failed call scores as a wrong answer, which is fair for a few; when many fail the LM or its engine did
    (seen: an engine killed mid-compile, 47 of 60 test calls refused), and the scores would mean nothing."""
    failed = int(ev.scores.get("errors", 0))
    if n and failed > max_fraction * n:
        raise DspycError(
            f"{label}: {failed} of {n} program runs failed, so the LM or its engine did (check `dspyc "
            f"engine status` and `dspyc engine logs`); nothing saved. Re-running reuses every cached call "
            f"(DSPYC_COMPILE_MAX_FAILED_FRACTION={max_fraction} sets the limit)"
        )


def _evaluation(results: list[tuple[dspy.Example, dspy.Prediction, Any]], spec: registry.ProgramSpec) -> Evaluation:
    """Scores and rows of one job, exactly as a dspy.Evaluate of that job alone reports them."""
    if not results:
        return Evaluation({}, [])
    scores = spec.report([(ex, pred) for ex, pred, _score in results])
    scores["metric"] = round(100 * sum(score for *_, score in results) / len(results), 2) / 100.0  # Evaluate's score
    scores["errors"] = sum(1 for _, p, _ in results if not p.keys())
    rows = [
        {
            "id": ex.get("id", str(i)),
            "inputs": {k: _jsonable(ex[k]) for k in ex.inputs().keys()},
            "gold": {k: _jsonable(v) for k, v in ex.labels().items()},
            "outputs": {k: _jsonable(v) for k, v in pred.items()},
            "score": float(score or 0.0),
        }
        for i, (ex, pred, score) in enumerate(results)
    ]
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


@dataclass
class Setup:
    """What a compile starts from: the program's spec, the recipe, the split data, the merged config."""

    name: str
    spec: registry.ProgramSpec
    recipe: Recipe
    dataset: ProgramData
    config: dict[str, Any]
    source: str  # the program's source hash as the compile began: what its prompts were built from


def prepare(
    name: str,
    recipe_name: str | None,
    data: str | None,
    seed: int,
    config: dict[str, Any] | None,
    sizes: tuple[int, int, int] | None,
    objective: Objective | None = None,
    margin: float | None = None,
) -> Setup:
    source = registry.source_hash(name)
    spec = registry.get(name)
    if recipe_name is None and objective in ("cost", "pareto"):
        recipe_name = objective  # optimizers/cost.yaml, pareto.yaml: the declared settings only, no optimizer
    recipe = with_objective(load_recipe(recipe_name or spec.default_recipe), objective, margin)
    cfg = spec.config | (config or {})
    with console.status(f"loading dataset {data or spec.dataset}"):
        dataset = spec.load_data(data or spec.dataset, seed)
    apply_split_config(dataset, cfg, seed, sizes)  # `sizes`, else --set train/dev/test: never silently ignored
    if sizes:
        cfg = cfg | dict(zip(SPLIT_KEYS, sizes))  # the manifest records the sizes actually used
    splits = dataset.splits
    console.print(
        f"[bold]{name}[/bold] · recipe [cyan]{recipe.name}[/cyan] ({recipe.optimizer or ('sequence' if recipe.sequence else f'{recipe.objective} search')}) · dataset "
        f"{dataset.name}@{dataset.version} · train {len(splits['train'])} / dev {len(splits['dev'])} / "
        f"test {len(splits['test'])} · seed {seed}"
    )
    return Setup(name, spec, recipe, dataset, cfg, source)


# The programs a compile scores: the program as built, the compiled one and, for a weights recipe under the spec's
# finetune_config, the program under that config without the adapter ("untrained").
Which = Literal["baseline", "compiled", "untrained"]
WHICH_LABELS: dict[str, str] = {"baseline": "uncompiled", "compiled": "compiled", "untrained": "untrained"}


@dataclass
class Scoreboard:
    """Both programs' scores, per-example rows and per-call costs by split, and each stage's wall time. A stage
    that ends past the token budget stops the compile; an evaluation in which too many runs failed too."""

    setup: Setup
    settings: Settings
    usage: Usage
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=lambda: {"baseline": {}, "compiled": {}})
    rows: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=lambda: {"baseline": {}, "compiled": {}})
    costs: dict[str, dict[str, dict[str, float]]] = field(default_factory=lambda: {"baseline": {}, "compiled": {}})
    stage_times: dict[str, float] = field(default_factory=dict)

    def stage(self, label: str, fn):
        t = time.perf_counter()
        out = fn()
        self.stage_times[label] = round(time.perf_counter() - t, 1)
        if self.usage.exceeded:
            raise BudgetExceeded(
                f"token budget of {self.usage.budget:,} exceeded during {label} "
                f"({self.usage.total:,} tokens used); no artifact written"
            )
        return out

    def record(self, which: str, split: str, ev: Evaluation) -> None:
        for board, value in ((self.results, ev.scores), (self.rows, ev.rows), (self.costs, ev.cost)):
            board.setdefault(which, {})[split] = value

    def evaluate(self, which: Which, module: dspy.Module, splits: list[str]) -> None:
        """`module` as `which` on `splits`, in one pool, timed as one stage (an MLflow metric name, so no "+")."""
        data, s = self.setup.dataset.splits, self.settings
        labels = [f"{WHICH_LABELS[which]} · {split}" for split in splits]
        evs = self.stage(
            f"{which} {' and '.join(splits)}",
            lambda: evaluate_many(
                [(label, module, data[split]) for label, split in zip(labels, splits)], self.setup.spec, s.num_threads
            ),
        )
        for label, split, ev in zip(labels, splits, evs, strict=True):
            check_failures(label, ev, len(data[split]), s.compile_max_failed_fraction)
            self.record(which, split, ev)


def compile_program(
    name: str,
    recipe_name: str | None = None,
    data: str | None = None,
    seed: int = 0,
    token_budget: int | None = None,
    s: Settings | None = None,
    skip_test: bool = False,
    config: dict[str, Any] | None = None,
    sizes: tuple[int, int, int] | None = None,
    lm_overrides: dict[str, Any] | None = None,
    save: bool = True,
    warm_start: Path | None = None,
    auto_champion: bool = True,
    objective: Objective | None = None,
    margin: float | None = None,
    candidates: list[str] | None = None,
) -> artifacts.Manifest:
    """Compile `name` with a recipe. `sizes` overrides the (train, dev, test) split sizes, which otherwise come
    from the config's `train`/`dev`/`test` keys (`--set test=60`); `save=False` is for benchmarks; `warm_start`
    is a program.json whose state the student starts from (instructions carry over for MIPROv2/GEPA;
    bootstrap-style optimizers reset demos by design). If the compiled program scores below the uncompiled one
    on dev, the uncompiled one is what is saved (`kept`). `auto_champion=False` registers the version without
    ever moving `champion` (re-optimization decides that with its own test). `objective`/`margin` override the
    recipe's (`cost`, `pareto`: see dspyc.objective); `candidates` are stored versions the search also scores."""
    s = s or get_settings()
    t0 = time.perf_counter()
    setup = prepare(name, recipe_name, data, seed, config, sizes, objective, margin)
    if setup.recipe.objective != "quality":  # a bad cost_space fails now, not after the baseline
        space_changes(setup.spec.cost_space, setup.config, s.cost_max_candidates)
    lm = configure(s, **(lm_overrides or {}))
    with console.status("building retrieval indexes and the program (cached by corpus hash)"):
        program = setup.spec.build(setup.dataset, setup.config)
    if warm_start:
        program.load(str(warm_start))
    if save:
        from dspyc import tracking

        tracking.enable_traces(name, s)
    board = Scoreboard(setup, s, Usage(budget=token_budget))
    outcome = score_and_compile(
        setup, board, program, seed, ["dev"] + ([] if skip_test else ["test"]), candidates or []
    )
    manifest = build_manifest(setup, board, outcome, seed, round(time.perf_counter() - t0, 1))
    if not save:
        return manifest
    out = save_version(manifest, board, outcome, program)
    print_summary(manifest, lm_model=lm.model)
    console.print(f"[green]✓[/green] {name}@{manifest.version} → {out}")
    from dspyc import tracking

    if outcome.weights and manifest.adapter is None:  # not kept: the engine it was scored on goes
        release_adapter_lm(s, outcome.weights)
    run_id = tracking.log_compile(manifest, out, s, auto_champion=auto_champion)
    if outcome.search is not None:
        tracking.log_candidates(manifest, run_id, s)
        if setup.recipe.objective == "pareto":
            save_frontier(manifest, outcome.search, setup, s)
    return manifest


def score_and_compile(
    setup: Setup, board: Scoreboard, program: dspy.Module, seed: int, splits: list[str], refs: list[str]
) -> Compiled:
    """The uncompiled program on `splits`, then the recipe's optimizer (if it names one), then the compiled program
    on `splits` or, for a cost or pareto objective, the cost search (its choice then scored on test)."""
    recipe, s = setup.recipe, board.settings
    with board.usage.context(), measured(recipe.objective != "quality" and recipe.cost in ("latency", "usd")):
        # The uncompiled program first, on the engine as it is before the compile (a weights stage turns LoRA on:
        # per-call latency is then each program's as served).
        board.evaluate("baseline", program, splits)
        context = CompileContext(
            program=setup.name, spec=setup.spec, dataset=setup.dataset, settings=s, config=setup.config
        )
        outcome = Compiled(program)
        if recipe.optimizes:
            outcome = board.stage(
                "compile",
                lambda: run_recipe(
                    recipe,
                    program,
                    setup.dataset.splits,
                    setup.spec,
                    context,
                    seed,
                    board.results["baseline"]["dev"].get("metric", 0.0),
                ),
            )
        if recipe.objective == "quality":
            board.evaluate("compiled", outcome.program, splits)
            if outcome.untrained is not None:
                board.evaluate("untrained", outcome.untrained, splits)
            return outcome
        outcome = board.stage("cost search", lambda: cost_search(setup, board, program, outcome, refs, seed))
        if outcome.search.chosen is not None and "test" in splits:
            board.evaluate("compiled", outcome.program, ["test"])
        return outcome


def build_manifest(setup: Setup, board: Scoreboard, outcome: Compiled, seed: int, wall: float) -> artifacts.Manifest:
    """The version's manifest: scores of both programs, the keep decision, what the compile cost and learned from."""
    s, splits, cfg = board.settings, setup.dataset.splits, setup.config
    metrics: dict[str, Any] = board.results | {
        "delta": deltas(board.rows, s.reoptimize_resamples, seed),
        "cost": board.costs,
    }
    if "untrained" in board.rows:  # what the weights add over the config they are served under
        metrics["delta_untrained"] = deltas(board.rows, s.reoptimize_resamples, seed, against="untrained")
        metrics["untrained_config"] = outcome.searched_config or {}
    if outcome.stages:
        metrics["stages"] = outcome.stages
    recipe = setup.recipe
    if outcome.search is not None:  # cost, pareto: non-inferiority at the margin, and cheaper
        kept, kept_reason = decision(outcome.search, recipe.objective, recipe.margin, recipe.cost)
        metrics["objective"] = {
            "objective": recipe.objective,
            "margin": recipe.margin,
            "cost": recipe.cost,
            "uncompiled": outcome.search.uncompiled.dev_cost,
            "compiled": outcome.search.chosen.dev_cost if outcome.search.chosen else None,
        }
        metrics["candidates"] = summary(outcome.search, recipe.cost)
    else:
        kept, kept_reason = keep(board.results, metrics["delta"].get("dev"), s.compile_keep_alpha)
    if kept == "compiled" and outcome.searched_config:
        cfg = cfg | outcome.searched_config  # settings ConfigSearch chose: loading rebuilds the program from them
        console.print(f"ConfigSearch chose {outcome.searched_config}")
    weights = outcome.weights if kept == "compiled" else None
    encoder = outcome.encoder if kept == "compiled" and outcome.encoder and outcome.encoder.kept else None
    if outcome.encoder:
        metrics["retriever"] = retriever_metrics(outcome.encoder)
    ds = setup.dataset
    return artifacts.Manifest(
        program=setup.name,
        version=0,
        import_path=setup.spec.import_path,
        source_hash=setup.source,
        recipe=setup.recipe.model_dump(),
        dataset=artifacts.DatasetRef(name=ds.name, path=str(ds.path), version=ds.version),
        lm=artifacts.LMRef(backend=s.lm_backend, model=s.lm_model, served_name=served_name(s.lm_model, s)),
        seed=seed,
        config=cfg,
        metrics=metrics,
        kept=kept,
        kept_reason=kept_reason,
        split_ids={k: ids_hash(splits[k]) for k in ("dev", "test")},
        usage=board.usage.as_dict(s)
        | {"stage_wall_time_s": board.stage_times}
        | ({"training": training_usage(outcome.weights)} if outcome.weights else {})
        | ({"retriever_training": retriever_training.usage(outcome.encoder)} if outcome.encoder else {}),
        wall_time_s=wall,
        library_versions=artifacts.library_versions(),
        git_commit=artifacts.git_commit(s.project_dir),
        trials=outcome.trials,
        trained_on=[str(ex.get("id")) for split in ("train", "dev") for ex in splits[split] if ex.get("id") is not None]
        + (setup.spec.learned_from(ds, cfg) if setup.spec.learned_from else [])
        + (encoder.learned_from if encoder else []),
        adapter=artifacts.AdapterRef(path=ADAPTER_DIR, lora_name=weights.lora_name, base_model=weights.base_model)
        if weights
        else outcome.adapter[0].model_copy(update={"path": ADAPTER_DIR})
        if outcome.adapter and kept == "compiled"
        else None,
        encoder=artifacts.EncoderRef(path=ENCODER_DIR, base_model=encoder.base_model) if encoder else None,
    )


def save_version(manifest: artifacts.Manifest, board: Scoreboard, outcome: Compiled, program: dspy.Module) -> Path:
    """The kept program (its state with no engine URL, and its adapter's files if it has one), both programs'
    per-example rows, and the manifest, as the next version; returns its folder."""
    kept = manifest.kept
    other = "uncompiled" if kept == "compiled" else "compiled"
    files: dict[str, Any] = {
        EVALUATION_FILE: _jsonl(board.rows, kept),
        OTHER_EVALUATION_FILE.format(which=other): _jsonl(board.rows, other),
    }
    if manifest.adapter and outcome.weights:  # the adapter's files, never a merged model; loading attaches it again
        files[ADAPTER_DIR] = Path(outcome.weights.adapter_dir)
    elif manifest.adapter and outcome.adapter:  # a stored version chosen by a cost search: its adapter, copied
        files[ADAPTER_DIR] = outcome.adapter[1]
    if manifest.encoder and outcome.encoder:  # the trained encoder's model folder; loading points the program at it
        files[ENCODER_DIR] = Path(outcome.encoder.path)
    with (
        artifacts.state_file(without_lm(outcome.program if kept == "compiled" else program)) as state_file,
        tempfile.TemporaryDirectory() as tmp,
    ):
        if plot := plots.frontier_plot(manifest, Path(tmp) / plots.FRONTIER_PNG):
            files[plots.FRONTIER_PNG] = plot
        return artifacts.save(manifest.program, files | {artifacts.PROGRAM_FILE: state_file}, manifest, board.settings)


def save_frontier(manifest: artifacts.Manifest, search: SearchResult, setup: Setup, s: Settings) -> list[int]:
    """`pareto`: each frontier point other than the version just saved and the uncompiled program, registered as
    its own version (scored on dev; never champion by itself: `dspyc promote` picks the point you want)."""
    from dspyc import tracking

    saved = []
    for c in search.points:
        if c is search.chosen or c.origin in ("uncompiled", "version"):
            continue
        point = manifest.model_copy(
            deep=True,
            update={
                "config": manifest.config | c.config,
                "kept": "compiled",
                "adapter": None,
                "kept_reason": f"pareto frontier point of {manifest.program}@{manifest.version}: dev {c.quality:.3f}, "
                f"Δ {format_delta(c.delta)}, {format_cost(c.dev_cost)} {COST_LABELS[setup.recipe.cost]}",
            },
        )
        point.metrics["compiled"] = {"dev": c.dev.scores}
        point.metrics["delta"] = {"dev": c.delta} if c.delta else {}
        point.metrics["cost"]["compiled"] = {"dev": c.dev.cost}
        rows = _jsonl({"compiled": {"dev": c.dev.rows}}, "compiled")
        with artifacts.state_file(without_lm(c.module)) as state_file:
            out = artifacts.save(point.program, {EVALUATION_FILE: rows, artifacts.PROGRAM_FILE: state_file}, point, s)
        tracking.log_compile(
            point,
            out,
            s,
            auto_champion=False,
            tags={
                "dspyc.objective": "pareto",
                "dspyc.frontier_of": str(manifest.version),
                "dspyc.dev": f"{c.quality:.4f}",
                "dspyc.cost": f"{c.dev_cost}",
            },
        )
        console.print(f"frontier point {c.name} → {point.program}@{point.version}")
        saved.append(point.version)
    return saved


@dataclass
class Compiled:
    """What a recipe's compile left: the program, the adapter a weights stage trained (with its cost), settings a
    ConfigSearch chose, the optimizer's trial scores, and for a chain each stage's dev score."""

    program: dspy.Module
    weights: WeightsResult | None = None
    searched_config: dict[str, Any] | None = None
    trials: list[float] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    search: SearchResult | None = None  # a cost or pareto compile's candidates, the one chosen, the frontier
    adapter: tuple[artifacts.AdapterRef, Path] | None = None  # a chosen stored version's adapter (and its folder)
    encoder: EncoderResult | None = None  # a retriever stage's trained encoder and its dev recall, kept or not
    untrained: dspy.Module | None = None  # a weights stage's program under its finetune_config, without the adapter


@contextmanager
def measured(on: bool):
    """A compile minimising latency or $ bypasses DSPy's cache, so every call is timed: a cached call takes no time,
    and a candidate sharing calls with one scored before would look faster than it is. (Tokens are measured from
    the cache as well, so a compile minimising tokens keeps it: re-running one reuses every call.)"""
    lm = dspy.settings.lm
    if not on or lm is None:
        yield
        return
    with dspy.context(lm=lm.copy(cache=False)):
        yield


def candidates(setup: Setup, outcome: Compiled, refs: list[str], s: Settings) -> list[Candidate]:
    """The program's cost_space grid, the stored versions named, and the recipe's compiled program if it ran."""
    spec = setup.spec
    out = space_candidates(
        spec.cost_space, setup.config, lambda cfg: spec.build(setup.dataset, cfg), s.cost_max_candidates
    )
    for ref in refs:
        module, manifest, _ = loading.build_version(ref, s=s, adapter=True)
        out.append(
            Candidate(f"{setup.name}@{manifest.version}", module, manifest.config, origin="version", manifest=manifest)
        )
    if setup.recipe.optimizes:
        out.append(
            Candidate(f"recipe {setup.recipe.name}", outcome.program, outcome.searched_config or {}, origin="recipe")
        )
    if not out:
        raise DspycError(
            f"{setup.name} declares no cost_space and no --candidate was given: nothing to search "
            "(add `cost_space` to its ProgramSpec, or name versions with --candidate)"
        )
    return out


def cost_search(
    setup: Setup, board: Scoreboard, program: dspy.Module, outcome: Compiled, refs: list[str], seed: int
) -> Compiled:
    """`--objective cost|pareto`: the candidates scored on dev against the uncompiled program (see dspyc.objective);
    returns the chosen one as the compiled program (the uncompiled one when none is non-inferior and cheaper)."""
    s, spec, recipe, splits = board.settings, setup.spec, setup.recipe, setup.dataset.splits
    base = Candidate(
        "uncompiled",
        program,
        origin="uncompiled",
        dev=Evaluation(board.results["baseline"]["dev"], board.rows["baseline"]["dev"], board.costs["baseline"]["dev"]),
    )
    base.dev_cost = run_cost(base.dev.cost, recipe.cost, s.price_machine_hour)
    result = search(
        recipe.objective,
        candidates(setup, outcome, refs, s),
        base,
        splits["train"][: recipe.probe],
        splits["dev"],
        lambda jobs: evaluate_many(jobs, spec, s.num_threads),
        measure=recipe.cost,
        margin=recipe.margin,
        price=s.price_machine_hour,
        resamples=s.reoptimize_resamples,
        seed=seed,
    )
    shown = result.chosen or (result.scored[-1] if result.scored else None)
    if shown is not None:  # the compiled row of the table: the chosen candidate, else the last one tried
        board.record("compiled", "dev", shown.dev)
    c = result.chosen
    if c is None:
        return Compiled(program, search=result)
    if c.origin == "recipe":
        return dataclasses.replace(outcome, search=result)
    adapter = None
    if c.origin == "version" and (ref := adapter_ref(c.manifest)) is not None:
        adapter = (ref, artifacts.program_dir(setup.name, s) / str(c.manifest.version) / ref.path)
    return Compiled(c.module, searched_config=c.config, search=result, adapter=adapter)


def run_stage(
    recipe: Recipe,
    program: dspy.Module,
    splits: dict[str, list[dspy.Example]],
    spec: registry.ProgramSpec,
    context: CompileContext,
    seed: int,
) -> Compiled:
    """One optimizer over train: Bootstrap* teachers traced concurrently first, then `compile`."""
    s = context.settings
    optimizer, compile_kwargs = build_optimizer(
        recipe, spec.metric, num_threads=s.num_threads, seed=seed, context=context
    )
    console.print(
        f"[bold]compiling[/bold] with {recipe.name} ({recipe.optimizer}) on train ({len(splits['train'])} examples)"
    )
    # Bootstrap* optimizers trace one example at a time: run the teacher over train concurrently first.
    prewarm_bootstrap(optimizer, program, splits["train"], spec.metric, s.num_threads)
    compiled = optimizer.compile(program, trainset=splits["train"], **compile_kwargs)
    weights = optimizer.result if isinstance(optimizer, Finetune) else None
    encoder = optimizer.result if isinstance(optimizer, TrainRetriever) else None
    return Compiled(
        compiled,
        weights,
        getattr(compiled, "searched_config", None),
        optimizer_trials(compiled),
        encoder=encoder,
        untrained=optimizer.untrained if isinstance(optimizer, Finetune) else None,
    )


def run_recipe(
    recipe: Recipe,
    program: dspy.Module,
    splits: dict[str, list[dspy.Example]],
    spec: registry.ProgramSpec,
    context: CompileContext,
    seed: int,
    baseline_dev: float,
) -> Compiled:
    """A recipe, or its `sequence` of stages, each compiling the program the stage before left. A stage is kept only
    if it raises dev above the best so far (the uncompiled program's first); the chain stops at the first that
    does not. A prompt stage after a weights stage keeps the adapter (DSPy's optimizers reset predictors' LMs)."""
    if not recipe.sequence:
        return run_stage(recipe, program, splits, spec, context, seed)
    best, best_dev, stages = Compiled(program), baseline_dev, []
    for i, name in enumerate(recipe.sequence, 1):
        out = run_stage(load_recipe(name), best.program, splits, spec, context, seed)
        weights = out.weights or best.weights
        if weights and out.weights is None:
            out.program.set_lm(adapter_lm(context.settings, weights))
        dev = evaluate(out.program, splits["dev"], spec, context.settings.num_threads, f"stage {i} · {name} · dev")
        score = dev.scores.get("metric", 0.0)
        stages.append({"stage": i, "recipe": name, "dev": score, "kept": score > best_dev})
        console.print(
            f"stage {i} ({name}): dev {best_dev:.3f} → {score:.3f}"
            + ("" if score > best_dev else " · no gain: the chain stops here, keeping the stage before")
        )
        if score <= best_dev:
            break
        best = Compiled(
            out.program,
            weights,
            (best.searched_config or {}) | (out.searched_config or {}) or None,
            best.trials + out.trials,
            encoder=out.encoder or best.encoder,
        )
        best_dev = score
    best.stages = stages
    return best


def retriever_metrics(r: EncoderResult) -> dict[str, Any]:
    """A retriever stage's dev recall before and after, as the manifest records it beside the program's scores."""
    return {
        "retriever": r.retriever,
        "k": r.k,
        "dev_recall_before": r.recall_before,
        "dev_recall_after": r.recall_after,
        "delta": r.delta,
        "kept": r.kept,
    }


def training_usage(w: WeightsResult) -> dict[str, Any]:
    """A weights stage's cost, as the manifest and MLflow record it (numbers only, so MLflow logs each)."""
    return {
        "rows": w.rows,
        "epochs": w.epochs,
        "steps": w.steps,
        "train_wall_s": w.train_wall_s or 0.0,
        "reused": int(w.train_wall_s is None),
        "lora_rank": w.lora["r"],
        "lora_layers": w.lora.get("layers") or 0,
        "peak_rss_gb": w.peak_rss_gb,
        **{k.replace(" ", "_"): v for k, v in w.rows_by_source.items()},
        "losses": w.losses,
    }


def without_lm(module: dspy.Module) -> dspy.Module:
    """A copy whose predictors name no LM: a stored program.json holds no engine URL; loading attaches the LM."""
    copy = module.deepcopy()
    copy.set_lm(None)
    return copy


def keep(
    results: dict[str, dict[str, dict[str, float]]], dev_delta: dict[str, float] | None = None, alpha: float = 0.05
) -> tuple[str, str]:
    """("compiled" | "uncompiled", why). The compiled program is kept only when it beats the uncompiled one on dev
    with paired-bootstrap p < alpha: on 30 dev examples a gain inside the noise (rag on wiki: dev +0.017
    [-0.058, +0.084]) came out -0.120 on test, and the uncompiled program is the cheaper of two equals."""
    base, comp = (results.get(w, {}).get("dev", {}).get("metric") for w in ("baseline", "compiled"))
    if base is None or comp is None:
        return "compiled", ""
    if comp < base:
        return "uncompiled", KEPT_UNCOMPILED
    if dev_delta and dev_delta.get("p", 0.0) >= alpha:
        return "uncompiled", KEPT_WITHIN_NOISE.format(p=dev_delta["p"], alpha=alpha)
    return "compiled", ""


def deltas(
    rows: dict[str, dict[str, list[dict[str, Any]]]], n_resamples: int, seed: int, against: Which = "baseline"
) -> dict[str, dict[str, float]]:
    """Per split: compiled − `against` (the uncompiled program) over the same examples, with its paired-bootstrap
    95% interval."""
    out = {}
    for split in ("dev", "test"):
        d = paired_delta(rows["compiled"].get(split, []), rows[against].get(split, []), n_resamples, seed=seed)
        if d:
            out[split] = d
    return out


def ids_hash(examples: list[dspy.Example]) -> str:
    """Which examples a split holds, as a short hash of their sorted ids (positions when they have none)."""
    import hashlib

    ids = sorted(str(ex.get("id", i)) for i, ex in enumerate(examples))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _jsonl(rows: dict[str, dict[str, list[dict[str, Any]]]], which: str) -> str:
    key = "baseline" if which == "uncompiled" else "compiled"
    return "".join(
        json.dumps({"split": split, "program": which, **row}, default=str) + "\n"
        for split in ("dev", "test")
        for row in rows[key].get(split, [])
    )


KEPT_UNCOMPILED = "compiled scored below uncompiled on dev: kept the uncompiled program"
KEPT_WITHIN_NOISE = (
    "compiled is not better than uncompiled on dev beyond noise (paired bootstrap p = {p:.2f} ≥ {alpha:g}): "
    "kept the uncompiled program"
)
DELTA_COLUMN = "compiled − uncompiled [95% CI]"


def print_summary(m: artifacts.Manifest, lm_model: str = "") -> None:
    # every metric the program's report gives (e.g. per-category accuracy), the DSPy metric last
    first = m.metrics.get("compiled", {}).get("test") or m.metrics.get("compiled", {}).get("dev", {})
    keys = [k for k in first if k not in ("errors", "metric")] + ["metric"] * ("metric" in first)
    table = Table(
        title=f"{m.program}@{m.version} · {m.recipe.get('name')} · {lm_model or m.lm.served_name}",
        caption=(m.kept_reason or KEPT_UNCOMPILED) if m.kept == "uncompiled" else None,
    )
    table.add_column("split")
    table.add_column("program")
    for k in keys:
        table.add_column(k, justify="right")
    delta = m.metrics.get("delta", {})
    if delta:
        table.add_column(DELTA_COLUMN, justify="right")
    costs = m.metrics.get("cost", {})
    for header in COST_COLUMNS.values() if costs else ():
        table.add_column(header, justify="right")
    served = " ".join(f"{k}={v}" for k, v in m.metrics.get("untrained_config", {}).items())
    labels = WHICH_LABELS | {"untrained": f"untrained, {served}" if served else "untrained"}
    for split in ("dev", "test"):
        for which in ("baseline", "untrained", "compiled"):
            row = m.metrics.get(which, {}).get(split)
            if row:
                label = labels[which]
                cost = costs.get(which, {}).get(split, {})
                table.add_row(
                    split,
                    f"{label} (kept)" if m.kept == "uncompiled" and which == "baseline" else label,
                    *(f"{row.get(k, 0.0):.3f}" for k in keys),
                    *([format_delta(delta.get(split)) if which == "compiled" else ""] if delta else []),
                    *(_cost_cell(cost, k) for k in (COST_COLUMNS if costs else ())),
                )
    console.print(table)
    if weights_alone := m.metrics.get("delta_untrained"):
        console.print(
            f"what the weights add (compiled − {labels['untrained']}): "
            + " · ".join(f"{split} {format_delta(d)}" for split, d in weights_alone.items()),
            soft_wrap=True,
        )
    if m.metrics.get("candidates"):
        print_candidates(m)
        console.print(f"decision: {m.kept_reason}")
    for st in m.metrics.get("stages", []):
        console.print(
            f"stage {st['stage']} · {st['recipe']}: dev {st['dev']:.3f}"
            + ("" if st["kept"] else " (no gain: chain stopped)")
        )
    u = m.usage
    if tr := u.get("training"):
        console.print(
            f"training: LoRA r={tr['lora_rank']} on {m.lm.model}"
            + (f" (top {tr['lora_layers']} layers)" if tr.get("lora_layers") else "")
            + f" · {tr['rows']} rows × {tr['epochs']:g} epochs = {tr['steps']} steps "
            + ("(trained before: reused)" if tr.get("reused") else f"in {tr['train_wall_s']:.0f}s")
            + f" · peak RSS {tr.get('peak_rss_gb', 0):.1f} GB"
            + ("" if m.adapter else " · adapter not kept (the uncompiled program was)")
        )
    console.print(
        f"LM calls {u.get('lm_calls', 0):,} · tokens in {u.get('input_tokens', 0):,} / out "
        f"{u.get('output_tokens', 0):,} · est. cost ${u.get('estimated_cost_usd', 0):.4f} · "
        f"wall time {m.wall_time_s:.0f}s {u.get('stage_wall_time_s', '')}"
    )
    if r := m.metrics.get("retriever"):
        d = r["delta"]
        console.print(
            f"retriever training: {r['retriever']} recall@{r['k']} on dev {r['dev_recall_before']:.3f} → "
            f"{r['dev_recall_after']:.3f} ({format_delta(d)})"
            + (" · encoder stored with the version" if m.encoder else " · encoder not kept")
        )
    if m.adapter:
        console.print(
            f"stored as adapter {m.adapter.lora_name} on {m.adapter.base_model} (never merged in the store); "
            f"served as DSPYC_ADAPTER_SERVING says ({get_settings().adapter_serving})"
        )


COST_COLUMNS = {
    "prompt_tokens_per_call": "prompt tok/call",
    "output_tokens_per_call": "out tok/call",
    "latency_p50_s": "p50 s/call",
    "tokens_per_run": "tok/run",
    "usd_per_1k_runs": "$/1k runs",
}


def _cost_cell(cost: dict[str, float], key: str) -> str:
    """A per-call or per-run figure, or "cached" when every call of that evaluation came from DSPy's cache (no
    time measured; tokens per run are known from the cache all the same)."""
    if not cost:
        return "–"
    if key == "tokens_per_run":
        value = run_cost(cost, "tokens", 0.0)
        return "–" if value is None else f"{value:,.0f}"
    if cost.get("lm_calls") and cost.get("lm_calls") == cost.get("cached_calls"):
        return "cached"
    if key == "usd_per_1k_runs":
        return f"{usd_per_1k_runs(cost, get_settings().price_machine_hour):.4f}" if cost.get("runs") else "–"
    return f"{cost.get(key, 0.0):.2f}" if key == "latency_p50_s" else f"{cost.get(key, 0.0):.0f}"


def print_candidates(m: artifacts.Manifest) -> None:
    """A cost or pareto compile's candidates as scored on dev, cheapest probe first (the uncompiled program first)."""
    obj = m.metrics["objective"]
    table = Table(
        title=f"{m.program}@{m.version} · objective {obj['objective']} · margin {obj['margin']:g} · dev",
        caption="★ chosen · ◆ on the quality-cost frontier",
    )
    for col in (
        "candidate",
        "dev",
        "Δ vs uncompiled [95% CI]",
        COST_LABELS[obj["cost"]],
        "probe",
        "tok/run",
        "p50 s/run",
        "$/1k runs",
        "",
    ):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for c in m.metrics["candidates"]:
        cost = c.get("cost") or {}
        table.add_row(
            c["name"],
            "–" if c["dev"] is None else f"{c['dev']:.3f}",
            format_delta(c.get("delta")),
            format_cost(c.get("dev_cost")),
            format_cost(c.get("probe_cost")),
            _cost_cell(cost, "tokens_per_run"),
            _run_p50(cost),
            _cost_cell(cost, "usd_per_1k_runs"),
            ("★" if c["chosen"] else "") + ("◆" if c["frontier"] else ""),
        )
    console.print(table)


def _run_p50(cost: dict[str, float]) -> str:
    """A run's p50 wall time, "cached" where every run had a call answered from DSPy's cache (no time measured)."""
    if not cost.get("runs"):
        return "–"
    return f"{cost['run_p50_s']:.2f}" if "run_p50_s" in cost else "cached"


def build_uncompiled(
    name: str,
    data: str | None = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    dataset: ProgramData | None = None,
) -> tuple[dspy.Module, ProgramData, dict[str, Any]]:
    """The program as compile starts from it (spec.build on the data with its default config, `config` on top),
    the data it was built over (`dataset`, or `data` loaded and split by the config) and the merged config."""
    spec = registry.get(name)
    cfg = spec.config | (config or {})
    if dataset is None:
        dataset = spec.load_data(data or spec.dataset, seed)
        apply_split_config(dataset, cfg, seed)
    return spec.build(dataset, cfg), dataset, cfg


def evaluate_answerability(
    ref: str, data: str | None = None, split: str = "test", s: Settings | None = None, uncompiled: bool = False
) -> abstention.Answerability:
    """`dspyc eval PROGRAM --unanswerable`: half of `split` made unanswerable (dspyc.abstention); abstention there,
    false abstention and the metric (with the program's rule and without it) on the answerable half."""
    s = s or get_settings()
    name, tag = artifacts.parse_ref(ref)
    spec = registry.get(name)
    abstention.check_program(spec)  # before any index is built
    with console.status("building retrieval indexes and the program, over the data and without half its answers"):
        if uncompiled and tag is None:
            module, dataset, config = build_uncompiled(name, data)
            label, seed = "uncompiled", 0
        else:
            module, manifest, dataset = loading.build_version(ref, data=data, s=s, adapter=not uncompiled)
            label, seed, config = f"{name}@{manifest.version}", manifest.seed, manifest.config
            if uncompiled:  # the version's own starting point: its config, uncompiled
                module, label = build_uncompiled(name, config=config, dataset=dataset)[0], "uncompiled"
        reduced, gone, kept = abstention.unanswerable_data(spec, dataset, split, seed)
        with_rule = abstention.rebuild(spec, module, reduced, config)
        without_rule = abstention.rebuild(spec, module, reduced, config | spec.abstain_off)
    configure(s)
    ids = {ex.id for ex in gone + kept}
    examples = [ex for ex in dataset.splits[split] if ex.id in ids]
    title = f"{label} on {dataset.name}/{split}, half of it unanswerable"
    # one after the other: the run without the rule makes the same LM calls, answered from DSPy's cache
    on = evaluate(with_rule, examples, spec, s.num_threads, f"{title} · abstention rule on")
    off = evaluate(without_rule, examples, spec, s.num_threads, f"{title} · rule off")
    result = abstention.score(on.rows, off.rows, {ex.id for ex in gone}, s.reoptimize_resamples)
    console.print(abstention.table(result, title))
    return result


def evaluate_version(
    ref: str,
    data: str | None = None,
    split: str = "test",
    s: Settings | None = None,
    uncompiled: bool = False,
    with_baseline: bool = False,
) -> dict[str, Any]:
    """Evaluate a compiled version on any dataset folder without compiling. `uncompiled`: the uncompiled program
    instead (`rag`: the default config; `rag@3`: that version's config); `with_baseline`: the version and its
    uncompiled program on the same examples, with compiled − uncompiled and its paired-bootstrap 95% interval."""
    s = s or get_settings()
    name, tag = artifacts.parse_ref(ref)
    spec = registry.get(name)
    if uncompiled and with_baseline:
        raise DspycError("--uncompiled and --with-baseline exclude each other (--with-baseline already scores both)")
    systems: list[tuple[str, dspy.Module]] = []  # (label, module): the first is what the scores returned are of
    with console.status("building retrieval indexes and the program"):
        if uncompiled and tag is None:
            module, dataset, _ = build_uncompiled(name, data)
            systems.append(("uncompiled", module))
            version = None
        else:
            program, manifest, dataset = loading.build_version(ref, data=data, s=s, adapter=not uncompiled)
            version = manifest.version
            if not uncompiled:
                systems.append((f"{name}@{version}", program))
            if uncompiled or with_baseline:  # the version's own starting point: its config, uncompiled
                systems.append(("uncompiled", build_uncompiled(name, config=manifest.config, dataset=dataset)[0]))
    if split not in dataset.splits:
        raise DspycError(f"unknown split {split!r}; choose one of {', '.join(dataset.splits)}")
    examples = dataset.splits[split]
    configure(s)
    from dspyc import tracking

    tracking.enable_traces(name, s)
    usage = Usage()
    t0 = time.perf_counter()
    with usage.context():  # the version and its baseline share one pool
        evs = evaluate_many(
            [(f"{label} · {dataset.name} · {split}", module, examples) for label, module in systems],
            spec,
            s.num_threads,
        )
    scores = evs[0].scores
    if not uncompiled:
        shown = f"{name}@{version}"
    else:
        shown = f"{name} (uncompiled{f', config of {name}@{version}' if version is not None else ''})"
    table = Table(
        "metric",
        *(label for label, _ in systems),
        title=f"{shown} on {dataset.name}/{split} ({len(examples)} examples)",
    )
    for k in scores:
        table.add_row(k, *(_cell(ev.scores.get(k)) for ev in evs))
    console.print(table)
    delta = None
    if with_baseline:
        delta = paired_delta(evs[0].rows, evs[1].rows, s.reoptimize_resamples, seed=manifest.seed)
        console.print(
            f"{name}@{version} − uncompiled [95% CI]: {format_delta(delta)}"
            + (f" (paired bootstrap over n={delta['n']})" if delta else "")
        )
    console.print(f"LM calls {usage.calls:,} · tokens in {usage.input_tokens:,} / out {usage.output_tokens:,}")
    params = {
        "ref": ref,
        "version": "uncompiled" if uncompiled else version,
        "dataset": dataset.name,
        "dataset_hash": dataset.version,
        "split": split,
        "lm": served_name(s.lm_model, s),
        "with_baseline": with_baseline,
    }
    metrics = {f"eval.{k}": float(v) for k, v in scores.items()} | {
        f"usage.{k}": float(v) for k, v in usage.as_dict(s).items()
    }
    if with_baseline:
        metrics |= {f"baseline.{k}": float(v) for k, v in evs[1].scores.items()}
        metrics |= {f"delta.{k}": float(v) for k, v in (delta or {}).items()}
    tags = (
        {tracking.VERSION_TAG: str(version)} if version is not None and not uncompiled else {"dspyc.uncompiled": "true"}
    )
    try:
        tracking.log_run(
            name,
            "eval",
            f"eval {shown} on {dataset.name}/{split}",
            params,
            metrics | {"wall_time_s": time.perf_counter() - t0},
            s,
            tags=tags,
            tables={
                "evaluation.json": [
                    {"program": label, **row} for (label, _), ev in zip(systems, evs) for row in ev.rows
                ]
            },
        )
    except Exception as exc:  # the numbers are printed above; tracking is best effort here
        console.print(f"[yellow]tracking skipped[/yellow] ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    if with_baseline:
        return scores | {"baseline": evs[1].scores, "delta": delta}
    return scores


def _cell(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
