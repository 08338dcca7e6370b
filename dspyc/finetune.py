"""`Finetune`: compile into weights. A LoRA adapter on the program LM itself learns the program.

DSPy's BootstrapFinetune with a metric, for the program's own LM: the program (or the recipe's teacher) runs over
train, its passing traces and the program's gold labels become chat rows holding exactly the prompts the program
sends (its instructions and demos as they stand, so a finetune after a prompt stage learns that prompt), and PEFT +
TRL train one adapter for every predictor (DSPy's multitask default). The store keeps only the adapter; it is served
as `DSPYC_ADAPTER_SERVING` says (a merged copy built in the cache, or loaded into the program LM's engine).

Rows come from the train split and from examples outside every split (`gold_extra`), never from dev or test.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dspyc.console import console as make_console
from dspyc.data import ProgramData
from dspyc.distill import student as S
from dspyc.distill import traces as T
from dspyc.distill.recipe import LoraSpec, SFTRecipe, TrainSpec
from dspyc.engine_tuning import peak_rss_gb
from dspyc.errors import DspycError
from dspyc.settings import Settings

console = make_console()


class FinetuneParams(BaseModel):
    """A weights recipe's `params` (optimizers/finetune*.yaml)."""

    model_config = ConfigDict(extra="forbid")

    lora: LoraSpec = LoraSpec()
    train: TrainSpec = TrainSpec()
    teacher_repeats: int = Field(1, ge=1)  # program runs per train input (sampled at teacher_temperature when > 1)
    teacher_temperature: float = Field(0.0, ge=0.0, le=2.0)
    min_score: float | None = None  # None: a trace is kept when the metric passes (metric(..., trace) truthy)
    gold_extra: int = Field(0, ge=0)  # labelled examples from outside train/dev/test whose gold traces join the rows
    max_rows: int | None = Field(None, ge=1)  # cap on training rows (a seeded sample), sized for a 2-core CPU
    # Cap on tokens trained in all (rows x epochs, prompt + completion as the chat template renders them): rows of the
    # seeded sample are kept in order while they fit. What a step costs grows with its tokens, so this bounds the
    # training time whatever a program's rows are like (an agent row ~215 tokens, a rag answer row ~1,100).
    max_train_tokens: int | None = Field(None, ge=1)
    # At least this many optimizer steps: rows too few to fill them (rag's ~118 answer rows, 15 steps an epoch) are
    # trained for more epochs rather than stopping while the loss still falls. Applied after the row caps above, so
    # `max_train_tokens` bounds one pass; None: `train.epochs` as written.
    min_steps: int | None = Field(None, ge=1)
    dedupe_rows: bool = True  # a row repeated verbatim (a program answering its repeats alike) is kept once


@dataclass
class CompileContext:
    """What a dspyc optimizer may need beyond DSPy's (program, trainset): the program, its data, the settings."""

    program: str
    spec: Any  # registry.ProgramSpec (typed loosely: the registry sits above the optimizers)
    dataset: ProgramData
    settings: Settings
    config: dict[str, Any] = field(default_factory=dict)  # the config the program was built with


class WeightsResult(BaseModel):
    """What a weights stage leaves: the adapter (in the training work folder until the compile saves it) and its cost."""

    adapter_dir: str
    lora_name: str
    base_model: str
    rows: int
    rows_by_source: dict[str, int]
    dataset_version: str
    epochs: float
    steps: int
    train_wall_s: float | None  # None: the same run (rows, recipe, model) had trained before and was reused
    precision: str
    lora: dict[str, Any]
    losses: list[tuple[int, float]] = []
    # the training's peak resident memory (this process's, for a run trained before runs recorded it)
    peak_rss_gb: float = 0.0


def adapter_lm(s: Settings, weights: WeightsResult) -> dspy.LM:
    """The program LM with a trained adapter, served as any stored adapter version is (`student.adapter_lm`)."""
    from dspyc.artifacts import AdapterRef

    ref = AdapterRef(lora_name=weights.lora_name, base_model=weights.base_model)
    return S.adapter_lm(s, Path(weights.adapter_dir), ref)


def release_adapter_lm(s: Settings, weights: WeightsResult) -> None:
    """Stop the engine a merged copy of an adapter was scored on (a compile that did not keep it: ~7 GB of a
    24 GB machine stayed held by an engine nothing would call again). LoRA on the base engine holds nothing apart."""
    from dspyc import engine
    from dspyc.merge import merged_copy

    if s.adapter_serving == "merged" and s.lm_backend == "engine":
        engine.down(s, model=str(merged_copy(Path(weights.adapter_dir), weights.base_model, s)))


def rewire(program: dspy.Module, rebuilt: dspy.Module) -> dspy.Module:
    """`rebuilt` (the program under its finetune config) with `program`'s demos and instructions on every predictor
    whose fields did not change (a prompt stage before the weights stage keeps what it taught)."""
    before = dict(program.named_predictors())
    for name, pred in rebuilt.named_predictors():
        old = before.get(name)
        if old is not None and list(old.signature.fields) == list(pred.signature.fields):
            pred.signature, pred.demos = old.signature, list(old.demos)
    return rebuilt


class Finetune:
    """dspyc's weights optimizer (`optimizer: Finetune` in a recipe): see the module docstring."""

    def __init__(
        self,
        metric,
        context: CompileContext,
        teacher_settings: dict[str, Any] | None = None,
        num_threads: int = 8,
        seed: int = 0,
        **kwargs: Any,
    ):
        self.metric, self.context, self.num_threads, self.seed = metric, context, num_threads, seed
        self.params = FinetuneParams(**kwargs)
        self.teacher = (teacher_settings or {}).get("lm")
        self.result: WeightsResult | None = None
        # the program under the spec's finetune_config without the adapter (None: no config): what the compile also
        # scores, so its table tells what the weights add from what the config does
        self.untrained: dspy.Module | None = None

    def compile(self, student: dspy.Module, *, trainset: list[dspy.Example]) -> dspy.Module:
        ctx, p = self.context, self.params
        rewired = dict(ctx.spec.finetune_config or {})
        if rewired:  # the program as the adapter will serve it: its traces and gold rows are in that shape
            console.print(f"finetune trains and serves the program under {rewired}")
            student = rewire(student, ctx.spec.build(ctx.dataset, ctx.config | rewired))
            self.untrained = student.deepcopy()
        rows, by_source = self.training_rows(student, trainset)
        version, path = T.write_dataset(ctx.program, "finetune", rows, ctx.settings)
        console.print(f"finetune rows: {len(rows)} ({', '.join(f'{n} {k}' for k, n in by_source.items())}) → {path}")
        train_spec = self.train_spec(len(rows))
        out = self.train(rows, version, train_spec)
        adapter = Path(out["adapter"])
        self.result = WeightsResult(
            adapter_dir=str(adapter),
            lora_name=S.lora_name(ctx.program, adapter, role="ft"),
            base_model=ctx.settings.lm_model,
            rows=len(rows),
            rows_by_source=by_source,
            dataset_version=version,
            epochs=train_spec.epochs if train_spec.max_steps <= 0 else 0.0,
            steps=out["steps"],
            train_wall_s=out.get("train_runtime_s"),
            precision=out["precision"],
            lora=p.lora.model_dump(),
            losses=out.get("losses", []),
            peak_rss_gb=out.get("peak_rss_gb") or peak_rss_gb(),
        )
        console.print(
            f"scoring the compiled program through adapter {self.result.lora_name} "
            f"(DSPYC_ADAPTER_SERVING={ctx.settings.adapter_serving})"
        )
        compiled = student.deepcopy()
        compiled.set_lm(adapter_lm(ctx.settings, self.result))
        if rewired:  # recorded in the version's config: loading rebuilds the program under it
            compiled.searched_config = rewired
        return compiled

    # --- the steps ---------------------------------------------------------------------------------------------

    def training_rows(
        self, program: dspy.Module, trainset: list[dspy.Example]
    ) -> tuple[list[T.SFTRow], dict[str, int]]:
        """Passing traces of the program (or teacher) over train, gold traces over train + extras; capped, seeded."""
        ctx, p = self.context, self.params
        runs = self.traces(program, trainset)
        spec = ctx.spec
        if spec.keep_trace:
            by_id = {str(ex.get("id")): ex for ex in trainset}
            for r in runs:
                r.passed = r.passed and spec.keep_trace(by_id[r.example_id], r.calls)
        gold: list[T.TeacherRun] = []
        if spec.gold_trace:
            extra = ctx.dataset.outside("train", "dev", "test")[: p.gold_extra] if p.gold_extra else []
            gold = T.gold_runs(spec.gold_trace, trainset + extra)
        passed = [r for r in runs if r.passed]
        if spec.relabel:  # the program's relabelling is what its runs teach (rag: gold answers over its own passages,
            by_id = {str(ex.get("id")): ex for ex in trainset}  # and the query steps of passing runs)
            gold += T.relabelled_runs(spec.relabel, runs, by_id)
            passed = []
        rows = T.sft_rows(passed + gold, program, dedupe=p.dedupe_rows)
        if p.max_rows and len(rows) > p.max_rows:
            rows = random.Random(self.seed).sample(rows, p.max_rows)
        if p.max_train_tokens:
            rows = self.within_budget(rows)
        by_source: dict[str, int] = {}
        for row in rows:
            key = f"{row.source} rows"
            by_source[key] = by_source.get(key, 0) + 1
        console.print(f"traces: {len(passed)}/{len(runs)} passed and kept · {len(gold)} gold-labelled runs")
        if not rows:
            raise DspycError(
                "no finetune rows: no trace passed the metric and the program has no gold labels "
                "(lower min_score, raise teacher_repeats, or give the program a gold_trace)"
            )
        return rows, by_source

    def within_budget(self, rows: list[T.SFTRow]) -> list[T.SFTRow]:
        """The first rows (in the seeded sample's order) whose tokens, times the epochs, fit `max_train_tokens`."""
        from transformers import AutoTokenizer

        from dspyc.distill.train import chat_tokens
        from dspyc.models import resolve_lm

        p, s = self.params, self.context.settings
        tok = AutoTokenizer.from_pretrained(resolve_lm(s.lm_model, s))
        epochs = p.train.epochs if p.train.max_steps <= 0 else 1.0
        sizes = [chat_tokens(tok, row.prompt + row.completion) for row in rows]
        order = list(range(len(rows)))
        if sum(sizes) * epochs > p.max_train_tokens:  # a seeded sample of what fits (all rows, in order, when all do)
            random.Random(self.seed).shuffle(order)
        kept, used = [], 0
        for i in order:
            if (used + sizes[i]) * epochs > p.max_train_tokens:
                break
            kept.append(rows[i])
            used += sizes[i]
        console.print(
            f"rows within {p.max_train_tokens:,} trained tokens: {len(kept)} of {len(rows)} "
            f"({used:,} tokens an epoch × {epochs:g})"
        )
        return kept

    def train_spec(self, rows: int) -> TrainSpec:
        """The recipe's training spec, with the epochs raised where `rows` fill fewer than `min_steps` steps."""
        spec, least = self.params.train, self.params.min_steps
        per_epoch = math.ceil(rows / (spec.batch_size * spec.gradient_accumulation_steps))
        if not least or spec.max_steps > 0 or not rows or per_epoch * spec.epochs >= least:
            return spec
        epochs = round(least / per_epoch, 3)
        console.print(f"{rows} rows fill {per_epoch} steps an epoch: {epochs:g} epochs for at least {least} steps")
        return spec.model_copy(update={"epochs": epochs})

    def traces(self, program: dspy.Module, trainset: list[dspy.Example]) -> list[T.TeacherRun]:
        p = self.params
        lm = self.teacher or dspy.settings.lm
        if p.teacher_repeats > 1 or p.teacher_temperature:
            lm = lm.copy(temperature=p.teacher_temperature)
        with _progress() as progress:
            return T.collect(
                program,
                trainset,
                self.metric,
                repeats=p.teacher_repeats,
                min_score=p.min_score,
                num_threads=self.num_threads,
                lm=lm,
                progress=progress,
            )

    def train(self, rows: list[T.SFTRow], version: str, spec: TrainSpec) -> dict[str, Any]:
        """LoRA SFT on the program LM (resumable: the work folder is keyed by the rows, the recipe and the model)."""
        from dspyc.distill import train
        from dspyc.models import resolve_lm

        ctx, p = self.context, self.params
        s = ctx.settings
        base = resolve_lm(s.lm_model, s)
        recipe = SFTRecipe(name=f"finetune {ctx.program}", base_model=s.lm_model, lora=p.lora, train=spec)
        key = hashlib.sha256(f"{version}{recipe.model_dump_json()}{base}".encode()).hexdigest()[:12]
        console.print(
            f"training a LoRA on {s.lm_model}: {len(rows)} rows × {spec.epochs:g} epochs, batch "
            f"{spec.batch_size}, max {spec.max_length} tokens, {train.precision(spec)}, "
            f"LoRA r={p.lora.r} on {'/'.join(m.removesuffix('_proj') for m in p.lora.target_modules)}"
            + (f" of the top {p.lora.layers} layers" if p.lora.layers else "")
        )
        # a run trained before (same rows, recipe and model) is reused: its adapter, and train_runtime_s None
        return train.run_sft(
            [r.model_dump() for r in rows], str(base), recipe, s.cache_dir / "finetune" / ctx.program / key
        )


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
