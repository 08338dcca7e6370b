"""ConfigSearch: tune a program's own settings on train, the way a prompt optimizer tunes its prompts.

A small model's answer quality depends on how much it is asked to read (passages per answer, passages per
later hop) as much as on its prompt, and few-shot demos can hurt it (measured for rag on Qwen-0.5B). This
optimizer scores each combination of a few declared settings on the train split and keeps the best; the
program as it was built goes first, and only a strictly better score replaces it. A setting is a program
attribute (`max_passages`) or a predictor's instruction (`answer.instructions`); the chosen values are left on
the module as `searched_config` so the compile records them in the manifest, from which loading rebuilds it.
"""

from __future__ import annotations

import itertools
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

from dspyc.console import console
from dspyc.errors import DspycError
from dspyc.metrics import evaluator

INSTRUCTIONS = ".instructions"


class ConfigSearch(Teleprompter):
    def __init__(self, metric, space: dict[str, list[Any]], num_threads: int = 8, max_candidates: int = 12):
        super().__init__()
        if not space or any(not isinstance(v, list) or not v for v in space.values()):
            raise DspycError("ConfigSearch: `space` maps each setting to a non-empty list of values")
        self.metric, self.space, self.num_threads, self.max_candidates = metric, space, num_threads, max_candidates
        self.trials: list[dict[str, Any]] = []

    def candidates(self, student: dspy.Module) -> list[dict[str, Any]]:
        """The program's own values first, then every other combination (capped at max_candidates)."""
        own = {key: current(student, key) for key in self.space}
        grid = [dict(zip(self.space, values)) for values in itertools.product(*self.space.values())]
        out = [own] + [c for c in grid if c != own]
        if len(out) > self.max_candidates:
            raise DspycError(
                f"ConfigSearch: {len(out)} candidates exceed max_candidates={self.max_candidates}; "
                "list fewer values or raise the cap"
            )
        return out

    def compile(self, student: dspy.Module, *, trainset: list[dspy.Example], **_: Any) -> dspy.Module:
        best, best_values, best_score = student, {}, float("-inf")
        self.trials = []  # this compile's trials only
        evaluate = evaluator(trainset, self.metric, self.num_threads)
        out, candidates = console(), self.candidates(student)
        for i, values in enumerate(candidates):
            candidate = student.deepcopy()
            for key, value in values.items():
                assign(candidate, key, value)
            score = float(evaluate(candidate).score) / 100  # dspy reports a percentage
            self.trials.append({"config": values, "full_eval_score": round(score, 4)})
            out.print(
                f"ConfigSearch {i + 1}/{len(candidates)} {values}: train {score:.4f}"
                + (" (the program as built)" if i == 0 else "")
            )
            if score > best_score:  # strictly better: ties keep the earlier (the program's own first)
                best, best_values, best_score = candidate, values, score
        # instructions travel in program.json; attributes are rebuilt from the manifest's config
        best.searched_config = {k: v for k, v in best_values.items() if not k.endswith(INSTRUCTIONS)}
        best.trial_logs = dict(enumerate(self.trials))
        return best


def _predictor(module: dspy.Module, key: str) -> dspy.Predict:
    name = key.removesuffix(INSTRUCTIONS)
    predictors = dict(module.named_predictors())
    if name not in predictors:
        raise DspycError(
            f"ConfigSearch: {type(module).__name__} has no predictor {name!r} (it has {', '.join(predictors)})"
        )
    return predictors[name]


def current(module: dspy.Module, key: str) -> Any:
    if key.endswith(INSTRUCTIONS):
        return _predictor(module, key).signature.instructions
    if not hasattr(module, key):
        raise DspycError(f"ConfigSearch: {type(module).__name__} has no setting {key!r}")
    return getattr(module, key)


def assign(module: dspy.Module, key: str, value: Any) -> None:
    if key.endswith(INSTRUCTIONS):
        p = _predictor(module, key)
        p.signature = p.signature.with_instructions(value)
    else:
        current(module, key)  # raises for a setting the program does not have
        setattr(module, key, value)
