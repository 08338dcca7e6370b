"""The one factory that turns a recipe in `optimizers/<name>.yaml` into a DSPy optimizer."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import dspy
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dspyc.errors import DspycError
from dspyc.metrics import evaluator
from dspyc.settings import get_settings

from dspyc.config_search import ConfigSearch
from dspyc.finetune import CompileContext, Finetune
from dspyc.retriever_training import TrainRetriever
from dspyc.objective import CostMeasure, Objective

OWN = {
    "ConfigSearch": ConfigSearch,
    "Finetune": Finetune,
    "TrainRetriever": TrainRetriever,
}  # dspyc's own optimizers, beside DSPy's
OPTIMIZERS = (
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "MIPROv2",
    "GEPA",
    "SIMBA",
    "LabeledFewShot",
    *OWN,
)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    optimizer: str = ""
    description: str = ""
    params: dict[str, Any] = {}
    compile: dict[str, Any] = {}
    # The LM whose passing traces become the demos (DSPy's teacher_settings): a model key or folder, served by its
    # own local engine, or an OpenAI-compatible URL. None: the program LM teaches itself.
    teacher: str | None = None
    # Recipes run in turn, each on the previous stage's program (BetterTogether: `[bootstrap, finetune, bootstrap]`).
    # Each stage is scored on dev; the chain stops at the first stage that does not raise dev, keeping the one before.
    sequence: list[str] = []
    # What the compile optimizes (`--objective` overrides): `quality` (the compiled program must beat the uncompiled
    # one on dev), `cost` (the cheapest candidate not worse than uncompiled by more than `margin` on dev: the 95%
    # interval's lower bound >= -margin) or `pareto` (the quality-cost frontier, one version per point). Candidates:
    # the program's `cost_space`, `--candidate` versions, and what `optimizer` compiled if the recipe names one.
    objective: Objective = "quality"
    margin: float = Field(0.03, ge=0.0, lt=1.0)
    cost: CostMeasure = "tokens"  # what `cost` minimises: tokens (prompt + output) per run, prompt_tokens, latency, usd
    probe: int = Field(3, ge=0)  # train examples each candidate runs on first, to order them cheapest first

    def model_post_init(self, _ctx: Any) -> None:
        if self.sequence:
            if self.optimizer or self.params or self.compile or self.teacher:
                raise ValueError(
                    "a recipe with a sequence names only its stages (each stage's recipe holds its settings)"
                )
        elif not self.optimizer and self.objective != "quality":
            pass  # a cost or pareto search over the program's declared settings only
        elif self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")

    @property
    def optimizes(self) -> bool:
        """Whether the recipe runs an optimizer (or a sequence of them), not only a cost search."""
        return bool(self.optimizer or self.sequence)


def with_objective(recipe: Recipe, objective: Objective | None = None, margin: float | None = None) -> Recipe:
    """The recipe with `--objective`/`--margin` over its own (the manifest records what the compile used)."""
    update = {k: v for k, v in (("objective", objective), ("margin", margin)) if v is not None}
    if not update:
        return recipe
    try:
        return Recipe(**(recipe.model_dump() | update))
    except ValidationError as exc:
        raise DspycError(f"recipe {recipe.name!r}: {_first_error(exc)}") from None


def recipes_dir() -> Path:
    return get_settings().recipes_dir


def available() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    path = Path(name) if name.endswith((".yaml", ".yml")) else recipes_dir() / f"{name}.yaml"
    if not path.is_file():
        raise DspycError(f"unknown recipe {name!r}; available: {', '.join(available())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        recipe = Recipe(name=path.stem, **raw)
    except (yaml.YAMLError, ValidationError, TypeError, ValueError) as exc:
        raise DspycError(f"{path}: {_first_error(exc)}") from None
    for stage in recipe.sequence:  # a bad stage fails now, not after the stages before it ran
        if load_recipe(stage).sequence:
            raise DspycError(f"{path}: stage {stage!r} is itself a sequence; list its stages instead")
    return recipe


def _first_error(exc: Exception) -> str:
    first = exc.errors()[0] if isinstance(exc, ValidationError) else None
    return f"field '{'.'.join(map(str, first['loc']))}': {first['msg']}" if first else str(exc).splitlines()[0]


def _feedback_metric(metric):
    """GEPA wants (gold, pred, trace, pred_name, pred_trace) -> score with feedback text."""

    def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        score = float(metric(gold, pred))
        feedback = (
            f"Expected answer: {gold.get('answer', '')!r}; got {getattr(pred, 'answer', '')!r} (score {score:.2f})."
        )
        return dspy.Prediction(score=score, feedback=feedback)

    return gepa_metric


def teacher_lm(teacher: str) -> dspy.LM:
    """The recipe's teacher through the one LM factory: a URL, or a model's own local engine."""
    from dspyc.lm import build_lm

    if teacher.startswith(("http://", "https://")):
        return build_lm(url=teacher)
    return build_lm(model=teacher)


def optimizer_class(recipe: Recipe) -> type:
    return OWN.get(recipe.optimizer) or getattr(dspy, recipe.optimizer)


def check_takes_teacher(recipe: Recipe) -> None:
    """A one-line error unless the recipe's optimizer can bootstrap from a teacher LM (DSPy's teacher_settings)."""
    if "teacher_settings" not in inspect.signature(optimizer_class(recipe).__init__).parameters:
        raise DspycError(
            f"recipe {recipe.name!r}: {recipe.optimizer} takes no teacher (use a Bootstrap* or MIPROv2 recipe)"
        )


def build_optimizer(
    recipe: Recipe,
    metric,
    num_threads: int = 8,
    seed: int = 0,
    reflection_lm: dspy.LM | None = None,
    teacher: dspy.LM | None = None,
    context: CompileContext | None = None,
) -> tuple[Any, dict[str, Any]]:
    """(optimizer, compile kwargs) for a recipe; settings the optimizer accepts are filled in. `teacher` (or the
    recipe's `teacher`) runs the bootstrapping, so a weak student still gets demos that pass the metric. `context`
    (the program, its data, the settings) goes to dspyc's own optimizers that take it (Finetune)."""
    if recipe.sequence:
        raise DspycError(f"recipe {recipe.name!r} is a sequence of stages; compile runs it stage by stage")
    cls = optimizer_class(recipe)
    accepted = inspect.signature(cls.__init__).parameters
    params = dict(recipe.params)
    if teacher is None and recipe.teacher:
        teacher = teacher_lm(recipe.teacher)
    if teacher is not None:
        check_takes_teacher(recipe)
        params.setdefault("teacher_settings", {"lm": teacher})
    if recipe.optimizer == "GEPA":
        metric = _feedback_metric(metric)
        params.setdefault("reflection_lm", reflection_lm or dspy.settings.lm)
    for key, value in (("num_threads", num_threads), ("seed", seed)):
        if key in accepted:
            params.setdefault(key, value)
    if "context" in accepted:
        if context is None:
            raise DspycError(
                f"recipe {recipe.name!r}: {recipe.optimizer} runs inside `dspyc compile` (it needs the program's data)"
            )
        params["context"] = context
    unknown = set(params) - set(accepted) if "kwargs" not in accepted else set()
    if unknown:
        raise DspycError(f"recipe {recipe.name!r}: {recipe.optimizer} has no parameter(s) {', '.join(sorted(unknown))}")
    if "metric" in accepted:  # LabeledFewShot takes none: it copies labelled examples as demos
        params["metric"] = metric
    missing = [
        n
        for n, p in accepted.items()
        if n != "self"
        and n not in params
        and p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if missing:
        raise DspycError(
            f"recipe {recipe.name!r}: {recipe.optimizer} needs parameter(s) {', '.join(missing)} under params"
        )
    try:
        optimizer = cls(**params)
    except ValidationError as exc:  # dspyc's own optimizers validate their params
        raise DspycError(f"recipe {recipe.name!r}: params {_first_error(exc)}") from None
    compile_kwargs = dict(recipe.compile)
    if "seed" in inspect.signature(cls.compile).parameters and "seed" not in accepted:
        compile_kwargs.setdefault("seed", seed)
    return optimizer, compile_kwargs


def prewarm_bootstrap(
    optimizer: Any, program: dspy.Module, trainset: list[dspy.Example], metric, num_threads: int
) -> bool:
    """Run the teacher over every train example concurrently before a Bootstrap* optimizer's sequential pass.

    BootstrapFewShot bootstraps one example after another, so on an engine it runs at single-stream speed. Its
    first round sends exactly the requests this sends (the uncompiled teacher, the same LM and settings), so
    those are then served from DSPy's cache: traces are collected in parallel, and the demos are still picked
    in train order, so the same seed gives the same program. True if it ran (it needs the LM's cache, and a
    teacher without labelled demos: those differ per example)."""
    settings = getattr(optimizer, "teacher_settings", None)
    if settings is None or getattr(optimizer, "max_labeled_demos", 0) or not trainset:
        return False
    lm = settings.get("lm") or dspy.settings.lm
    if lm is None or not getattr(lm, "cache", False):
        return False
    with dspy.context(**settings):
        evaluator(trainset, metric, num_threads)(program.deepcopy())
    return True
