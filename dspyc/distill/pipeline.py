"""`dspyc distill PROGRAM`: teacher traces → SFT dataset → LoRA SFT → preference pairs → DPO → student versions,
ending with the honest table (teacher vs student after SFT vs after DPO on a held-out split).

Every intermediate is kept: the SFT dataset and the pairs (with scores) are versioned by content hash under
`artifacts/<program>/datasets/`; training checkpoints live under `<cache>/distill/` keyed by the run's
inputs, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dspyc import artifacts, engine, loading, registry
from dspyc.adapter import ConstrainedJSONAdapter
from dspyc.console import console as make_console
from dspyc.distill import pairs as P
from dspyc.distill import recipe as R
from dspyc.distill import student as S
from dspyc.distill import traces as T
from dspyc.distill import train
from dspyc.data import SPLIT_KEYS, ProgramData
from dspyc.errors import DspycError
from dspyc.lm import build_lm
from dspyc.models import resolve_lm, served_name
from dspyc.optimizers import Recipe, build_optimizer, check_takes_teacher, load_recipe, prewarm_bootstrap
from dspyc.settings import Settings, get_settings
from dspyc.stats import paired_ratio

console = make_console()


@dataclass
class CallStats(BaseCallback):
    """Wall time of every LM call (per call id, so concurrent calls are timed separately)."""

    starts: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_lm_start(self, call_id, instance, inputs):
        self.starts[call_id] = time.perf_counter()

    def on_lm_end(self, call_id, outputs, exception):
        with self._lock:
            if call_id in self.starts:
                self.latencies.append(time.perf_counter() - self.starts.pop(call_id))


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def evaluate_system(
    label: str,
    program: dspy.Module,
    lm: dspy.LM,
    examples: list[dspy.Example],
    spec: registry.ProgramSpec,
    num_threads: int,
    s: Settings | None = None,
) -> dict[str, Any]:
    """Quality (the spec's report and `metric`, and each example's score under `per_example`, in `examples`' order),
    tokens per call, p50 latency per call and the machine cost of 1,000 calls (wall time of the evaluation per
    call, priced at `price_machine_hour`), uncached, through the engine."""
    from dspyc.compiler import evaluate

    s = s or get_settings()
    stats = CallStats()
    lm = lm.copy(cache=False)
    lm.history.clear()
    t0 = time.perf_counter()
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter(), callbacks=[*dspy.settings.callbacks, stats]):
        ev = evaluate(program, examples, spec, num_threads, label)
    scores: dict[str, Any] = ev.scores | {"per_example": ev.per_example}
    wall = time.perf_counter() - t0
    usage = [h.get("usage") or {} for h in lm.history]
    calls = max(1, len(usage))
    lat = sorted(stats.latencies)
    scores["prompt_tokens_per_call"] = sum(int(u.get("prompt_tokens") or 0) for u in usage) / calls
    scores["completion_tokens_per_call"] = sum(int(u.get("completion_tokens") or 0) for u in usage) / calls
    scores["latency_s_per_call"] = sum(lat) / max(1, len(lat))
    scores["latency_p50_s"] = lat[len(lat) // 2] if lat else 0.0
    scores["lm_calls"] = len(usage)
    scores["wall_s"] = round(wall, 1)
    scores["cost_per_1k_calls_usd"] = wall / calls * 1000 / 3600 * s.price_machine_hour
    return scores


def choose_decoding(
    label: str,
    program: dspy.Module,
    model: str,
    adapter: str | None,
    candidates: list[dict[str, float]],
    examples: list[dspy.Example],
    spec: registry.ProgramSpec,
    num_threads: int,
    s: Settings,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The decoding settings (of the recipe's candidates) under which the student scores best on `examples` (dev:
    choosing them on the table's split would fit to it); ties go to the earlier, simpler candidate."""
    tried = []
    for cand in candidates or [{}]:
        lm = build_lm(s, model=model, adapter=adapter, temperature=0.0, **S.decoding_overrides(cand))
        row = evaluate_system(f"{label} · dev · {cand or 'greedy'}", program, lm, examples, spec, num_threads, s)
        tried.append(
            {
                "decoding": cand,
                "metric": row.get("metric", 0.0),
                "completion_tokens_per_call": row["completion_tokens_per_call"],
            }
        )
    best = max(tried, key=lambda r: r["metric"])  # max keeps the first of equals
    console.print(
        "decoding on dev: "
        + " · ".join(f"{r['decoding'] or 'greedy'} {r['metric']:.3f}" for r in tried)
        + f" → {best['decoding'] or 'greedy'}"
    )
    return best["decoding"], tried


def prompt_pass(
    recipe: Recipe,
    student: dspy.Module,
    student_lm: dspy.LM,
    teacher_lm: dspy.LM,
    train_ex: list[dspy.Example],
    spec: registry.ProgramSpec,
    num_threads: int,
    seed: int,
) -> dspy.Module:
    """BetterTogether's last step (prompt → weights → prompt): the fine-tuned student's prompt optimized again by
    a prompt recipe (`bootstrap`, ...). The teacher LM runs the student's own prompt, so the demos it bootstraps
    pass the metric and have the format the student was trained on."""
    optimizer, kwargs = build_optimizer(
        recipe, spec.metric, num_threads=num_threads, seed=seed, teacher=teacher_lm.copy(cache=True)
    )
    with dspy.context(lm=student_lm, adapter=ConstrainedJSONAdapter()):
        prewarm_bootstrap(optimizer, student, train_ex, spec.metric, num_threads)
        return optimizer.compile(student.deepcopy(), trainset=train_ex, **kwargs)


def _teacher(spec, dataset, teacher_ref: str | None, s: Settings) -> tuple[dspy.Module, str]:
    if teacher_ref:
        module, manifest, _ = loading.build_version(teacher_ref, s=s)
        if manifest.kind != "program":
            raise DspycError(f"teacher {teacher_ref} is a {manifest.kind}, not a compiled program")
        return module, f"{manifest.program}@{manifest.version}"
    return spec.build(dataset, spec.config), f"{spec.name} (uncompiled, default config)"


@dataclass
class Recipes:
    """The run's recipes, all loaded before any data or model is touched: a misspelt one, or a prompt pass whose
    optimizer takes no teacher, fails in a line instead of after hours of training."""

    sft: R.SFTRecipe
    dpo: R.DPORecipe | None
    prompt: Recipe | None


def load_recipes(
    spec: registry.ProgramSpec, sft_recipe: str | None, dpo_recipe: str | None, prompt_recipe: str | None
) -> Recipes:
    sft = R.load(sft_recipe or spec.sft_recipe, "sft")
    dpo = R.load(dpo_recipe, "dpo") if dpo_recipe else None
    prompt_opt = load_recipe(prompt_recipe) if prompt_recipe else None
    if prompt_opt:
        check_takes_teacher(prompt_opt)
    return Recipes(sft, dpo, prompt_opt)


@dataclass
class DistillSetup:
    """What every step reads and none changes: the program, its recipes and split data, the teacher and the
    student as built, the LM the teacher samples with, and the run's seed, split and thread counts."""

    program: str
    spec: registry.ProgramSpec
    source: str  # the program's source hash as the run began: what the student's prompts were built from
    recipes: Recipes
    dataset: ProgramData
    train_ex: list[dspy.Example]
    held_out: list[dspy.Example]
    base_path: str  # the student's base model as training loads it
    teacher: dspy.Module
    teacher_label: str
    teacher_settings: Settings  # the settings with --teacher-url's engine, where one is named
    teacher_lm: dspy.LM
    student: dspy.Module
    student_config: dict[str, Any]
    seed: int
    eval_split: str
    num_threads: int
    eval_threads: int
    settings: Settings

    @property
    def work(self) -> Path:
        """Checkpoints and sampled candidates, in folders keyed by their inputs: a killed run resumes from them."""
        return self.settings.cache_dir / "distill" / self.program


def prepare(
    program: str,
    sft_recipe: str | None,
    dpo_recipe: str | None,
    prompt_recipe: str | None,
    *,
    teacher: str | None,
    teacher_url: str | None,
    data: str | None,
    seed: int,
    sizes: tuple[int, int, int] | None,
    eval_split: str,
    num_threads: int,
    eval_threads: int,
    s: Settings,
) -> DistillSetup:
    """Everything the steps share, built before the teacher runs: the recipes first, so a bad one fails before the
    data loads, then the data, both programs and the teacher's LM; prints the run's one-line header."""
    spec = registry.get(program)
    source = registry.source_hash(program)  # the prompts the student is trained on: the source as the run began
    recipes = load_recipes(spec, sft_recipe, dpo_recipe, prompt_recipe)
    sft = recipes.sft
    dataset = spec.load_data(data or spec.dataset, seed)
    if sizes:
        dataset.split(seed, *sizes)
    train_ex = dataset.splits["train"][: sft.max_examples] if sft.max_examples else dataset.splits["train"]
    held_out = dataset.splits.get(eval_split) or []
    base_path = resolve_lm(sft.base_model, s)
    teacher_module, teacher_label = _teacher(spec, dataset, teacher, s)
    # the split sizes too, so the student loads (and `dspyc distill-table` re-scores it) on this held-out split
    s_cfg = spec.config | spec.student_config | (dict(zip(SPLIT_KEYS, sizes)) if sizes else {})
    student_module = spec.build(dataset, s_cfg)
    teacher_settings = s.model_copy(update={"lm_url": teacher_url, "lm_backend": "url"}) if teacher_url else s
    # Cached: each repeat is its own request by rollout_id, so a killed run gets the same traces back (and the
    # same SFT dataset, so training resumes from its checkpoint) instead of sampling new ones.
    t_lm = build_lm(teacher_settings, temperature=sft.teacher_temperature, cache=True)
    console.print(
        f"[bold]distill {program}[/bold] · teacher {teacher_label} on {t_lm.model} · student "
        f"{served_name(sft.base_model, s)} + LoRA · sft [cyan]{sft.name}[/cyan] · dpo "
        f"[cyan]{recipes.dpo.name if recipes.dpo else '-'}[/cyan] · "
        f"train {len(train_ex)} / {eval_split} {len(held_out)} · seed {seed}"
    )
    return DistillSetup(
        program,
        spec,
        source,
        recipes,
        dataset,
        train_ex,
        held_out,
        base_path,
        teacher_module,
        teacher_label,
        teacher_settings,
        t_lm,
        student_module,
        s_cfg,
        seed,
        eval_split,
        num_threads,
        eval_threads,
        s,
    )


@dataclass
class SFTData:
    """The SFT dataset and what it came from: every teacher run (with its pass flag), the gold-labelled runs
    beside them, and the rows as written under `artifacts/<program>/datasets/` (`version` is their content hash)."""

    runs: list[T.TeacherRun]
    gold: list[T.TeacherRun]
    rows: list[T.SFTRow]
    version: str
    path: Path
    passed: int  # runs that passed the metric
    kept: int  # of those, runs the program's own test kept as clean traces

    @property
    def traces(self) -> list[T.TeacherRun]:
        return self.runs + self.gold


def collect_sft_data(setup: DistillSetup) -> SFTData:
    """Teacher traces, kept where the metric (and the program's `keep_trace`) passes, and gold labels where the
    program has them, as SFT rows in the student's own prompts."""
    spec, sft = setup.spec, setup.recipes.sft
    with _progress() as progress, dspy.context(adapter=ConstrainedJSONAdapter()):
        runs = T.collect(
            setup.teacher,
            setup.train_ex,
            spec.metric,
            repeats=sft.teacher_repeats,
            min_score=sft.min_score,
            num_threads=setup.num_threads,
            lm=setup.teacher_lm,
            progress=progress,
        )
    passed = sum(r.passed for r in runs)
    if keep_trace := spec.keep_trace:  # the program's own test of a clean trace
        by_id = {str(ex.get("id")): ex for ex in setup.train_ex}
        for r in runs:
            r.passed = r.passed and keep_trace(by_id[r.example_id], r.calls)
    kept = sum(r.passed for r in runs)
    gold_trace, gold = spec.gold_trace, []
    if gold_trace:  # labels of train, and of examples in no split: never dev or test
        extra = setup.dataset.outside("train", "dev", "test")[: sft.gold_extra] if sft.gold_extra else []
        gold = T.gold_runs(gold_trace, setup.train_ex + extra)
    rows = T.sft_rows(runs + gold, setup.student, dedupe=sft.dedupe_rows)
    version, path = T.write_dataset(setup.program, "sft", rows, setup.settings)
    console.print(
        f"teacher traces: {passed}/{len(runs)} passed the metric"
        + (f", {kept} kept as clean traces" if kept != passed else "")
        + (f", + {len(gold)} gold-labelled" if gold else "")
        + f" → {len(rows)} SFT examples (dataset sft-{version}: {path})"
    )
    return SFTData(runs, gold, rows, version, path, passed, kept)


@dataclass
class SFTResult:
    """The SFT adapter, the trainer's report (steps, losses, precision, runtime), and the key of its work folder."""

    key: str  # the dataset, the recipe and the base model: DPO's key and the sample cache build on it
    out: dict[str, Any]
    adapter: Path


def train_sft(setup: DistillSetup, data: SFTData) -> SFTResult:
    """LoRA SFT, resumable: the work folder is keyed by the dataset and the recipe, so a rerun continues from its
    checkpoint (or finds the adapter done)."""
    sft = setup.recipes.sft
    key = hashlib.sha256(f"{data.version}{sft.model_dump_json()}{setup.base_path}".encode()).hexdigest()[:12]
    out = train.run_sft([r.model_dump() for r in data.rows], setup.base_path, sft, setup.work / f"sft-{key}")
    console.print(f"SFT: {out['steps']} steps {_took(out)} ({out['precision']}); loss {_loss_span(out['losses'])}")
    return SFTResult(key, out, Path(out["adapter"]))


@dataclass
class DPOResult:
    """The preference pairs (their dataset version) and the DPO adapter trained on them; empty without a DPO
    recipe, so the table and the store simply have no DPO student."""

    pairs: list[P.PreferencePair] = field(default_factory=list)
    version: str | None = None
    out: dict[str, Any] | None = None
    adapter: Path | None = None


def train_dpo(setup: DistillSetup, data: SFTData, sft: SFTResult) -> DPOResult:
    """Preference pairs from the metric (the SFT student's samples against each other and the teacher's best),
    then DPO from the SFT adapter, resumable like SFT."""
    dpo, program = setup.recipes.dpo, setup.program
    if not dpo:
        return DPOResult()
    groups = _candidate_groups(
        data.traces,
        setup.train_ex,
        setup.student,
        setup.spec,
        setup.recipes.sft.base_model,
        sft.adapter,
        dpo,
        setup.seed,
        setup.num_threads,
        setup.settings,
        cache=setup.work / f"samples-{sft.key}.json",
    )
    pairs = P.build_pairs(groups, dpo.min_margin)
    version, path = T.write_dataset(program, "pairs", pairs, setup.settings)
    console.print(
        f"preference pairs: {len(pairs)} of {len(groups)} inputs had a score gap (dataset pairs-{version}: {path})"
    )
    key = hashlib.sha256(f"{version}{sft.key}{dpo.model_dump_json()}".encode()).hexdigest()[:12]
    out = train.run_dpo([p.model_dump() for p in pairs], setup.base_path, sft.adapter, dpo, setup.work / f"dpo-{key}")
    console.print(f"DPO: {out['steps']} steps {_took(out)}; loss {_loss_span(out['losses'])}")
    return DPOResult(pairs, version, out, Path(out["adapter"]))


@dataclass
class Scores:
    """The honest table's systems in row order, each student's decoding (and how it was chosen), the adapter each
    stored student is served through, and the prompt pass's program where it ran."""

    systems: dict[str, dict[str, Any]] = field(default_factory=dict)
    decodings: dict[str, dict[str, Any]] = field(default_factory=dict)
    adapters: dict[str, Path | None] = field(default_factory=dict)
    prompted: dspy.Module | None = None


def score_systems(setup: DistillSetup, sft: SFTResult, dpo: DPOResult) -> Scores:
    """The honest table: every system through the engine on the held-out split. Each student decodes with the
    settings it scored best with on dev; the untuned base gets the student's prompt and greedy decoding."""
    s, split, held_out = setup.settings, setup.eval_split, setup.held_out
    scores = Scores(adapters={"sft": sft.adapter, "dpo": dpo.adapter})
    dev = setup.dataset.splits.get("dev") or []
    base_lm = build_lm(setup.teacher_settings, temperature=0.0)
    scores.systems["teacher"] = evaluate_system(
        f"teacher · {split}", setup.teacher, base_lm, held_out, setup.spec, setup.eval_threads, s
    )
    for stage, adapter in (("student_sft", sft.adapter), ("student_dpo", dpo.adapter)):
        if adapter is not None:
            _score_student(setup, scores, stage, adapter, dev)
    if setup.recipes.prompt and not dev:
        console.print(
            "[yellow]prompt pass skipped[/yellow]: it is judged against the student on dev, and there is no dev split"
        )
    elif setup.recipes.prompt:
        _score_prompt_pass(setup, scores, base_lm, dev)
    untuned = build_lm(s, model=setup.recipes.sft.base_model, temperature=0.0)  # same engine, no adapter
    scores.systems["student_base"] = evaluate_system(
        f"untuned base · {split}", setup.student, untuned, held_out, setup.spec, setup.eval_threads, s
    )
    return scores


def _score_student(setup: DistillSetup, scores: Scores, stage: str, adapter: Path, dev: list[dspy.Example]) -> None:
    """A student's row, through its base model's engine with its adapter loaded, under the decoding it scored best
    with on dev (greedy without a dev split)."""
    s, sft = setup.settings, setup.recipes.sft
    name = S.lora_name(setup.program, adapter)
    engine.load_lora(name, adapter, s, model=sft.base_model)  # the base model's engine, with LoRA
    decoding, tried = (
        choose_decoding(
            stage, setup.student, sft.base_model, name, sft.decoding_candidates, dev, setup.spec, setup.eval_threads, s
        )
        if dev
        else ({}, [])
    )
    scores.decodings[stage] = {"decoding": decoding, "tried_on_dev": tried}
    student_lm = build_lm(s, model=sft.base_model, adapter=name, temperature=0.0, **S.decoding_overrides(decoding))
    scores.systems[stage] = evaluate_system(
        f"{stage} · {setup.eval_split}", setup.student, student_lm, setup.held_out, setup.spec, setup.eval_threads, s
    )


def _score_prompt_pass(setup: DistillSetup, scores: Scores, teacher_lm: dspy.LM, dev: list[dspy.Example]) -> None:
    """BetterTogether's order: prompt (the teacher) → weights (SFT, DPO) → prompt (this), on the student that scored
    best on dev. Its row is kept in the table even without a gain on dev, which the console says."""
    s, prompt_opt, base_model = setup.settings, setup.recipes.prompt, setup.recipes.sft.base_model
    dev_best = {
        st.removeprefix("student_"): max(t["metric"] for t in d["tried_on_dev"]) for st, d in scores.decodings.items()
    }
    on = max(dev_best, key=dev_best.get)
    decoding = scores.decodings[f"student_{on}"]["decoding"]
    student_lm = build_lm(
        s,
        model=base_model,
        adapter=S.lora_name(setup.program, scores.adapters[on]),
        temperature=0.0,
        **S.decoding_overrides(decoding),
    )
    prompted = prompt_pass(
        prompt_opt, setup.student, student_lm, teacher_lm, setup.train_ex, setup.spec, setup.num_threads, setup.seed
    )
    before = dev_best[on]
    after = evaluate_system("student_prompt · dev", prompted, student_lm, dev, setup.spec, setup.eval_threads, s).get(
        "metric", 0.0
    )
    console.print(
        f"prompt pass ({prompt_opt.name}) on the {on.upper()} student: dev {before:.3f} → {after:.3f}"
        + ("" if after > before else " (no gain: keep the student without it)")
    )
    scores.decodings["student_prompt"] = {
        "decoding": decoding,
        "prompt_pass": {"recipe": prompt_opt.name, "on": on, "dev_before": before, "dev_after": after},
    }
    scores.systems["student_prompt"] = evaluate_system(
        f"student_prompt · {setup.eval_split}", prompted, student_lm, setup.held_out, setup.spec, setup.eval_threads, s
    )
    scores.adapters["prompt"] = scores.adapters[on]
    scores.prompted = prompted


def save_students(
    setup: DistillSetup, data: SFTData, sft: SFTResult, dpo: DPOResult, scores: Scores, track: bool, t0: float
) -> dict[str, int]:
    """Each student (after SFT, after DPO, with the prompt pass) as a version in the artifact store, with its
    adapter's files (never a merged model) and the data it was trained on, tracked like a compile; `t0` is when the
    run began (the manifests' wall time)."""
    s, program, recipes = setup.settings, setup.program, setup.recipes
    common = dict(
        teacher=setup.teacher_label,
        teacher_lm=setup.teacher_lm.model,
        base_model=recipes.sft.base_model,
        sft_dataset={
            "version": data.version,
            "examples": len(data.rows),
            "traces_kept": data.kept,
            "traces": len(data.runs),
        },
        sft_train=sft.out,
    )
    dpo_info = {"pairs": {"version": dpo.version, "pairs": len(dpo.pairs)}, "dpo_train": dpo.out}
    versions = {}
    for stage, adapter in scores.adapters.items():
        if adapter is None:
            continue
        extra = dpo_info if adapter == dpo.adapter else {}  # the DPO student, or the prompt pass on it
        files: dict[str, Any] = {S.ADAPTER_DIR: adapter, "sft.jsonl": data.path.read_text()}
        if extra:
            files["pairs.jsonl"] = T.to_jsonl(dpo.pairs)
        with artifacts.state_file(scores.prompted if stage == "prompt" else setup.student) as state:
            files[artifacts.PROGRAM_FILE] = state.read_bytes()
        info = (
            {"stage": stage, "adapter": S.ADAPTER_DIR, "lora_name": S.lora_name(program, adapter)}
            | common
            | extra
            | scores.decodings.get(f"student_{stage}", {})
        )
        manifest = _student_manifest(setup, scores, stage, info, bool(extra), round(time.perf_counter() - t0, 1))
        out = artifacts.save(program, files, manifest, s)
        versions[stage] = manifest.version
        console.print(
            f"[green]✓[/green] student ({stage}) {program}@{manifest.version} → {out} (served as {info['lora_name']})"
        )
        if track:
            from dspyc import tracking

            tracking.log_compile(manifest, out, s)
    return versions


def _student_manifest(
    setup: DistillSetup, scores: Scores, stage: str, info: dict[str, Any], with_dpo: bool, wall: float
) -> artifacts.Manifest:
    """A student's manifest: the recipes it went through, its scores beside the teacher's and the untuned base's,
    and the adapter it is served through (`info`, its distillation record, is kept in its config)."""
    s, recipes, split = setup.settings, setup.recipes, setup.eval_split
    base_model, dataset = recipes.sft.base_model, setup.dataset
    name = "+".join(
        [recipes.sft.name]
        + ([recipes.dpo.name] if with_dpo else [])
        + ([recipes.prompt.name] if stage == "prompt" else [])
    )
    return artifacts.Manifest(
        program=setup.program,
        version=0,
        import_path=setup.spec.import_path,
        source_hash=setup.source,
        recipe={
            "name": name,
            "optimizer": stage.upper(),
            "sft": recipes.sft.model_dump(),
            "dpo": recipes.dpo.model_dump() if with_dpo else None,
        },
        dataset=artifacts.DatasetRef(name=dataset.name, path=str(dataset.path), version=dataset.version),
        lm=artifacts.LMRef(backend=s.lm_backend, model=base_model, served_name=info["lora_name"]),
        seed=setup.seed,
        config=setup.student_config | {"student": info},
        metrics={
            "teacher": {split: scores.systems["teacher"]},
            "student": {split: scores.systems[f"student_{stage}"]},
            "untuned_base": {split: scores.systems["student_base"]},
        },
        usage={"stage_wall_time_s": {}},
        wall_time_s=wall,
        library_versions=artifacts.library_versions() | _train_versions(),
        git_commit=artifacts.git_commit(s.project_dir),
        kind="student",
        adapter=artifacts.AdapterRef(
            path=S.ADAPTER_DIR, lora_name=info["lora_name"], base_model=base_model, decoding=info.get("decoding") or {}
        ),
    )


def distill(
    program: str,
    sft_recipe: str | None = None,
    dpo_recipe: str | None = "dpo_default",
    *,
    teacher: str | None = None,
    teacher_url: str | None = None,
    data: str | None = None,
    seed: int = 0,
    sizes: tuple[int, int, int] | None = None,
    eval_split: str = "test",
    eval_threads: int = 2,
    num_threads: int | None = None,
    track: bool = True,
    prompt_recipe: str | None = None,
    s: Settings | None = None,
) -> dict[str, Any]:
    """The whole distillation; returns the table's systems, the stored students' versions, the SFT examples' and
    the pairs' counts, and the wall time. Teacher traces run `num_threads` at once (default: DSPYC_NUM_THREADS, as
    a compile: throughput, not latency, bounds them); the table's systems run `eval_threads` at once, so their p50
    latencies compare at the same light load. `sft_recipe` defaults to the program's `sft_recipe` (sft_r16_qv
    unless it names another). `prompt_recipe` (a prompt-optimizer recipe) adds BetterTogether's last step: the
    best student on dev gets its prompt optimized again, and the table gains that row."""
    s = s or get_settings()
    t0 = time.perf_counter()
    setup = prepare(
        program,
        sft_recipe,
        dpo_recipe,
        prompt_recipe,
        teacher=teacher,
        teacher_url=teacher_url,
        data=data,
        seed=seed,
        sizes=sizes,
        eval_split=eval_split,
        num_threads=num_threads or s.num_threads,
        eval_threads=eval_threads,
        s=s,
    )
    sft_data = collect_sft_data(setup)
    sft = train_sft(setup, sft_data)
    dpo = train_dpo(setup, sft_data, sft)
    scores = score_systems(setup, sft, dpo)
    versions = save_students(setup, sft_data, sft, dpo, scores, track, t0)
    labels = _labels(setup.teacher_label, setup.teacher_lm.model, setup.recipes.sft.base_model)
    report_table(program, scores.systems, labels, eval_split, len(setup.held_out), versions, track, s)
    return {
        "systems": scores.systems,
        "versions": versions,
        "sft_examples": len(sft_data.rows),
        "pairs": len(dpo.pairs),
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }


def _candidate_groups(
    runs: list[T.TeacherRun],
    examples: list[dspy.Example],
    student: dspy.Module,
    spec: registry.ProgramSpec,
    base_model: str,
    adapter: Path,
    dpo: R.DPORecipe,
    seed: int,
    threads: int,
    s: Settings,
    cache: Path | None = None,
) -> list[P.CandidateGroup]:
    """N student samples per input (plus the teacher's best passing output), each scored by the program's metric.
    The SFT student samples on its base model's engine (its adapter loaded there, `threads` prompts at once), with
    the prompts and sampling settings the in-process sampler used (unconstrained, as before).
    Pairs are built for the predictor that writes the program's output (the last one its traces call), which
    must read only the example's inputs (the agent's call step reads the request and the functions, not the
    split step's tasks); its samples are scored through the whole metric. The samples are kept in `cache`, keyed
    by the prompts and the sampling settings, so a rerun after a kill does not sample them again."""
    pname, predictor = _final_predictor(runs, student, examples, spec.name)
    sig = predictor.signature
    adapter_fmt = ConstrainedJSONAdapter()
    examples = examples[: dpo.max_inputs] if dpo.max_inputs else examples
    prompts = [
        [
            {"role": m["role"], "content": m["content"]}
            for m in adapter_fmt.format(sig, demos=[], inputs=dict(ex.inputs()))
        ]
        for ex in examples
    ]
    samples = _cached_samples(cache, prompts, dpo, seed)
    if samples is None:
        name = S.lora_name(spec.name, adapter)
        engine.load_lora(name, adapter, s, model=base_model)
        lm = build_lm(
            s,
            model=base_model,
            adapter=name,
            temperature=dpo.temperature,
            top_p=dpo.top_p,
            max_tokens=dpo.max_new_tokens,
        )
        with _progress() as progress:
            task = progress.add_task("sampling candidates (engine)", total=len(prompts))
            samples = S.sample(lm, prompts, dpo.samples, threads=threads, on_done=lambda: progress.advance(task))
        if cache:
            _store_samples(cache, prompts, dpo, seed, samples)
    best_teacher: dict[str, T.TeacherRun] = {}
    for run in runs:
        if (
            run.passed
            and run.calls
            and (run.example_id not in best_teacher or run.score > best_teacher[run.example_id].score)
        ):
            best_teacher[run.example_id] = run
    groups = []
    for ex, prompt, texts in zip(examples, prompts, samples):
        cands = [
            P.Candidate(text=t, score=P.score_completion(t, sig, ex, spec.metric), source="student") for t in texts
        ]
        run = best_teacher.get(str(ex.get("id")))
        if dpo.include_teacher and run:
            cands.append(
                P.Candidate(text=T.compact_json(run.calls[-1].outputs, sig), score=run.score, source="teacher")
            )
        groups.append(P.CandidateGroup(example_id=str(ex.get("id")), prompt=prompt, candidates=cands))
    return groups


def _samples_key(prompts: list, dpo: R.DPORecipe, seed: int) -> str:
    settings = [dpo.samples, dpo.temperature, dpo.top_p, dpo.max_new_tokens, seed, "engine"]  # not the old sampler's
    return hashlib.sha256(json.dumps([prompts, settings], sort_keys=True).encode()).hexdigest()[:16]


def _cached_samples(cache: Path | None, prompts: list, dpo: R.DPORecipe, seed: int) -> list[list[str]] | None:
    if not cache or not cache.exists():
        return None
    stored = json.loads(cache.read_text())
    return stored["samples"] if stored.get("key") == _samples_key(prompts, dpo, seed) else None


def _store_samples(cache: Path, prompts: list, dpo: R.DPORecipe, seed: int, samples: list[list[str]]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(cache, {"key": _samples_key(prompts, dpo, seed), "samples": samples})


def _final_predictor(
    runs: list[T.TeacherRun], student: dspy.Module, examples: list[dspy.Example], program: str
) -> tuple[str, dspy.Predict]:
    used = {c.predictor for r in runs if r.passed for c in r.calls}  # a program may hold predictors it did not call
    preds = {n: p for n, p in student.named_predictors() if n in used or not used}
    last = {r.calls[-1].predictor for r in runs if r.passed and r.calls}
    name = next(iter(preds)) if len(preds) == 1 else next(iter(last)) if len(last) == 1 else None
    inputs = set(examples[0].inputs().keys()) if examples else set()
    if name not in preds or not set(preds[name].signature.input_fields) <= inputs:
        raise DspycError(
            f"DPO pairs need one predictor that writes {program}'s output from the example's inputs; "
            f"its traces end in {', '.join(sorted(last)) or 'no call'} (use --no-dpo)"
        )
    return name, preds[name]


def _train_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("peft", "trl", "accelerate", "datasets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _took(out: dict[str, Any]) -> str:
    return (
        f"in {out['train_runtime_s']}s"
        if out.get("train_runtime_s") is not None
        else "(trained before: from its checkpoint)"
    )


def _loss_span(losses: list[tuple[int, float]]) -> str:
    return f"{losses[0][1]:.3f} → {losses[-1][1]:.3f}" if losses else "n/a"


QUALITY_KEYS = ("adherence", "accuracy")  # the program's headline metric, by name, where its report has one


def _labels(teacher_label: str, teacher_lm: str, base: str) -> dict[str, str]:
    return {
        "teacher": f"teacher: {teacher_label} on {teacher_lm.removeprefix('openai/')}",
        "student_sft": f"student after SFT ({base} + LoRA)",
        "student_dpo": f"student after DPO ({base} + LoRA)",
        "student_base": f"untuned {base}, student prompt",
        "student_prompt": f"student + prompt pass ({base} + LoRA + demos)",
    }


def table_rows(systems: dict[str, dict[str, Any]], labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The table as rows: the same numbers the console shows and MLflow stores."""
    first = next(iter(systems.values()), {})
    quality = next((k for k in QUALITY_KEYS if k in first), "metric")
    teacher = systems.get("teacher", {})
    rows = []
    for key, row in systems.items():
        q = row.get(quality, row.get("metric", 0.0))
        rows.append(
            {
                "system": (labels or {}).get(key, key),
                quality: round(q, 3),
                "pass_rate": round(row.get("pass_rate", row.get("metric", 0.0)), 3),
                "pct_of_teacher": round(q / teacher[quality], 3) if teacher.get(quality) else None,
                "pct_of_teacher_95ci": None if key == "teacher" else _share_interval(row, teacher),
                "prompt_tokens_per_call": round(row.get("prompt_tokens_per_call", 0.0), 1),
                "output_tokens_per_call": round(row.get("completion_tokens_per_call", 0.0), 1),
                "latency_p50_s": round(row.get("latency_p50_s", 0.0), 2),
                "cost_per_1k_calls_usd": round(row.get("cost_per_1k_calls_usd", 0.0), 4),
                "errors": int(row.get("errors", 0)),
            }
        )
    return rows


def _share_interval(row: dict[str, Any], teacher: dict[str, Any]) -> str | None:
    """ "41%-81%": the paired-bootstrap 95% interval of a system's share of the teacher's per-example metric on the
    same examples (60 BFCL items put a student at 60% anywhere in 41-81%: one lucky split does not meet a target)."""
    mine, theirs = row.get("per_example"), teacher.get("per_example")
    if not mine or not theirs or len(mine) != len(theirs):
        return None
    share = paired_ratio(mine, theirs)
    return f"{share[1][0]:.0%}-{share[1][1]:.0%}" if share else None


def report_table(
    program: str,
    systems: dict[str, dict[str, Any]],
    labels: dict[str, str],
    split: str,
    n: int,
    versions: dict[str, int],
    track: bool,
    s: Settings,
) -> list[dict[str, Any]]:
    """The table's rows, printed, and (with `track`) logged to MLflow with its chart."""
    rows = table_rows(systems, labels=labels)
    print_table(program, rows, split, n, s)
    if track:
        _track_table(program, systems, rows, split, versions, s)
    return rows


def print_table(program: str, rows: list[dict[str, Any]], split: str, n: int, s: Settings) -> None:
    if not rows:
        return
    table = Table(title=f"{program}: teacher vs distilled students on {split} ({n} examples, through the engines)")
    headers = {
        "pass_rate": "pass rate",
        "pct_of_teacher": "% of teacher",
        "pct_of_teacher_95ci": "95% interval",
        "prompt_tokens_per_call": "prompt tok/call",
        "output_tokens_per_call": "output tok/call",
        "latency_p50_s": "p50 s/call",
        "cost_per_1k_calls_usd": "$ / 1k calls",
    }
    for col in rows[0]:
        table.add_column(headers.get(col, col), justify="left" if col == "system" else "right")
    for r in rows:
        table.add_row(*("-" if v is None else f"{v:.0%}" if k == "pct_of_teacher" else str(v) for k, v in r.items()))
    console.print(table)
    console.print(f"cost: machine time per call at ${s.price_machine_hour:.2f}/h (DSPYC_PRICE_MACHINE_HOUR)")


def _track_table(
    program: str,
    systems: dict[str, dict[str, float]],
    rows: list[dict[str, Any]],
    split: str,
    versions: dict[str, int],
    s: Settings,
) -> None:
    """The table as one MLflow run: every number as a metric, the rows as a table, and a quality-vs-cost chart."""
    import tempfile

    from dspyc import plots, tracking

    metrics = tracking.flatten(
        {k: {m: v for m, v in row.items() if isinstance(v, (int, float))} for k, row in systems.items()}
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            chart = plots.distill_plot(program, rows, Path(tmp) / f"distill-{program}.png")
            tracking.log_run(
                program,
                "distill",
                f"distill {program} table ({split})",
                {"split": split} | {f"version.{k}": v for k, v in versions.items()},
                metrics,
                s,
                files=[chart] if chart else [],
                tables={"distill_table.json": rows},
            )
    except Exception as exc:  # the students are saved either way
        console.print(f"[yellow]tracking the table skipped[/yellow] ({type(exc).__name__}: {str(exc)[:160]})")
