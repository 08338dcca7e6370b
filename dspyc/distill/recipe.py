"""Fine-tuning recipes: `optimizers/sft_*.yaml` and `optimizers/dpo_*.yaml`.

Kept apart from the prompt-optimizer `Recipe` (dspyc/optimizers.py): different knobs, same one-line errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dspyc.errors import DspycError
from dspyc.settings import get_settings

LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, le=64)  # the engine's --max-lora-rank rises to fit (DSPYC_ENGINE_MAX_LORA_RANK)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "v_proj"]
    # Train the top N decoder layers only (None: every layer). Below the lowest adapted layer nothing needs a
    # gradient, so the backward pass stops there: the cost of a step falls with the frozen share of the stack.
    layers: int | None = Field(None, ge=1)

    @field_validator("target_modules")
    @classmethod
    def _known_modules(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one module")
        unknown = set(v) - LORA_TARGETS
        if unknown:
            raise ValueError(
                f"unknown module(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(LORA_TARGETS))}"
            )
        return v


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs (CI-sized runs)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(512, ge=32)
    # Memory grows with the padded tokens of a step: with this set, a step holds at most this many (batch_size x the
    # longest row), split into micro-batches accumulated to the same batch (rag's ~1,100-token rows at batch 8 were
    # killed for memory on 24 GB; 8 x 512 = 4,096 peaked at 11.7 GB on Qwen 0.5B, all linear layers of the top 8;
    # every layer at 2,048, the shipped recipe, 13.7 GB). A bf16 budget: fp32 training holds half (`fit_batch`).
    max_batch_tokens: int | None = Field(None, ge=32)
    # "auto": bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere (emulated bf16 is slower on AVX2 CPUs).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    gradient_checkpointing: bool = False  # TRL turns it on by default; a 135M model does not need it
    # QLoRA: load the base in 4-bit (bitsandbytes). CUDA only.
    quantization: Literal["none", "4bit"] = "none"
    # Batches of rows of similar length, so less of each step is padding: the agent's SFT rows (92-512 tokens)
    # pad to 79,872 tokens an epoch in random batches of 8, to 46,936 grouped (45,618 real); one epoch over 64 of
    # them took 344.5 s at random, 274.3 s grouped (1.26x, 2 AVX2 cores). Off by default: under
    # ~400 rows HF's sampler sorts the whole set, so every epoch repeats the same batches, longest first, and what
    # that does to the student is not measured yet.
    group_by_length: bool = False
    save_steps: int = Field(5, ge=1)  # checkpoint every N steps so a killed run resumes
    logging_steps: int = Field(1, ge=1)
    seed: int = 0


def fit_batch(spec: TrainSpec, longest: int, precision: Literal["fp32", "bf16"] = "bf16") -> TrainSpec:
    """The spec with the largest micro-batch dividing `batch_size` whose padded tokens (`longest` per row) fit
    `max_batch_tokens`, and gradient accumulation making up the rest: the same effective batch, less memory.
    `max_batch_tokens` is a bf16 budget: in fp32 (AVX2-only CPUs) a token's activations take twice the memory, so
    a micro-batch holds half as many (Qwen 0.5B, LoRA on every layer, fp32: 15.9 GB at 2,048 tokens, 12.8 at 1,536)."""
    if not spec.max_batch_tokens:
        return spec
    budget = spec.max_batch_tokens // (2 if precision == "fp32" else 1)
    micro = max(
        d for d in range(1, spec.batch_size + 1) if spec.batch_size % d == 0 and (d == 1 or d * longest <= budget)
    )
    return spec.model_copy(
        update={
            "max_batch_tokens": budget,
            "batch_size": micro,
            "gradient_accumulation_steps": spec.gradient_accumulation_steps * spec.batch_size // micro,
        }
    )


class SFTRecipe(BaseModel):
    """Teacher traces → SFT dataset → LoRA SFT."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    kind: Literal["sft"] = "sft"
    description: str = ""
    base_model: str = "smollm2-135m-instruct"  # a known model key or a local HF folder (dspyc.models.resolve_lm)
    lora: LoraSpec = LoraSpec()
    train: TrainSpec = TrainSpec()
    # None: a trace is kept when the program's metric passes (metric(..., trace) is truthy);
    # a number: when its score is at least this.
    min_score: float | None = None
    teacher_repeats: int = Field(1, ge=1)  # teacher runs per train input (temperature > 0 when > 1)
    teacher_temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_examples: int | None = None  # cap on train inputs the teacher sees
    # Programs with gold labels (`gold_trace`): this many more labelled examples, from outside train, dev and
    # test, join the train split's labels as SFT data (the teacher does not run on them).
    gold_extra: int = Field(0, ge=0)
    # Keep a row repeated verbatim once (a teacher answering its repeats alike). Off by default: on tone it took the
    # SFT set from 184 to 160 rows and the DPO student from 94% of the teacher to 87%.
    dedupe_rows: bool = False
    # Decoding settings the student is tried with on dev after training; the best by the program's metric is
    # recorded in the student's manifest and used wherever it is served. ({} is plain greedy decoding.) A small
    # student repeats its sentences under greedy decoding until a length bound, so the sign-off never comes.
    decoding_candidates: list[dict[str, float]] = [{}, {"repetition_penalty": 1.1}, {"repetition_penalty": 1.2}]


class DPOSpec(TrainSpec):
    beta: float = Field(0.1, gt=0)
    loss_type: str = "sigmoid"
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(4, ge=1)


class DPORecipe(BaseModel):
    """Preference pairs from the program's own metric → DPO continuing from the SFT adapter."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    kind: Literal["dpo"] = "dpo"
    description: str = ""
    samples: int = Field(4, ge=2)  # student samples per input; the teacher's kept output joins them
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(96, ge=8)
    include_teacher: bool = True
    min_margin: float = Field(0.0, ge=0.0)  # keep a pair only when best - worst > this
    max_inputs: int | None = None
    train: DPOSpec = DPOSpec()


def available(kind: Literal["sft", "dpo"]) -> list[str]:
    return sorted(p.stem for p in get_settings().recipes_dir.glob(f"{kind}_*.yaml"))


def load(name: str, kind: Literal["sft", "dpo"]) -> SFTRecipe | DPORecipe:
    """`sft_r16_qv` (a file in optimizers/) or a path to a YAML file → a validated recipe."""
    model = SFTRecipe if kind == "sft" else DPORecipe
    path = Path(name) if name.endswith((".yaml", ".yml")) else get_settings().recipes_dir / f"{name}.yaml"
    if not path.is_file():
        raise DspycError(f"unknown {kind} recipe {name!r}; available: {', '.join(available(kind)) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError("expected a mapping at the top level")
        return model(name=path.stem, **{k: v for k, v in raw.items() if k != "name"})
    except (yaml.YAMLError, ValidationError, TypeError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        detail = f"field '{'.'.join(map(str, first['loc']))}': {first['msg']}" if first else str(exc).splitlines()[0]
        raise DspycError(f"{path}: {detail}") from None
