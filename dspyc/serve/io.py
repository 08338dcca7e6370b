"""Typed request and response models built from a program's DSPy signatures.

A program's top-level inputs are the parameters of its `forward` (annotated), or, when `forward` takes
`**kwargs` (a bare `dspy.Predict`), the input fields of its first predictor. Its outputs are the spec's
`outputs` when declared (a program like `rag` returns more than its last predictor does), else the output
fields of its last predictor. Pydantic models from these make the OpenAPI schema exact.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field, create_model

from dspyc.errors import DspycError


@dataclass(frozen=True)
class ProgramIO:
    inputs: dict[str, Any]  # field name -> annotation
    outputs: dict[str, Any]
    input_model: type[BaseModel]
    output_model: type[BaseModel]

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    @property
    def primary_output(self) -> str:
        """The field the OpenAI-compatible endpoint returns as the message text."""
        return next(iter(self.outputs))

    def signature_key(self) -> tuple:
        return tuple((k, repr(v)) for k, v in self.inputs.items()), tuple((k, repr(v)) for k, v in self.outputs.items())


def _class_name(program: str, suffix: str) -> str:
    return "".join(p.capitalize() for p in program.split("_")) + suffix


def _bounded(annotation: Any, max_chars: int) -> tuple[Any, Any]:
    """A field definition: strings bounded in length, lists in items (request size is bounded anyway)."""
    origin = typing.get_origin(annotation)
    if annotation is str:
        return str, Field(max_length=max_chars)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        if item is str:
            return list[typing.Annotated[str, Field(max_length=max_chars)]], Field(max_length=64)
        return annotation, Field(max_length=64)
    return annotation, ...


def _predictor_fields(module: dspy.Module, which: str) -> dict[str, Any]:
    predictors = module.predictors()
    if not predictors:
        raise DspycError(f"{type(module).__name__} has no predictors; declare inputs/outputs on its ProgramSpec")
    sig = (predictors[0] if which == "input" else predictors[-1]).signature
    fields = sig.input_fields if which == "input" else sig.output_fields
    return {name: f.annotation for name, f in fields.items()}


def forward_inputs(module: dspy.Module) -> dict[str, Any] | None:
    """The annotated parameters of `forward`, or None when it takes **kwargs."""
    forward = type(module).forward  # via the class: DSPy warns when an instance's forward is touched directly
    params = dict(inspect.signature(forward).parameters)
    params.pop("self", None)
    if not params or any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values()):
        return None
    try:
        hints = typing.get_type_hints(forward)
    except Exception:  # unresolvable annotations: treat as strings
        hints = {}
    return {name: hints.get(name, str) for name in params}


def program_io(
    name: str,
    module: dspy.Module,
    inputs: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    max_chars: int = 8000,
) -> ProgramIO:
    inputs = inputs or forward_inputs(module) or _predictor_fields(module, "input")
    outputs = outputs or _predictor_fields(module, "output")
    in_fields = {k: _bounded(v, max_chars) for k, v in inputs.items()}
    # Missing outputs (e.g. a field the LM left out) are allowed as null rather than failing the request.
    out_fields = {k: (v | None, None) for k, v in outputs.items()}
    input_model = create_model(_class_name(name, "Inputs"), __config__=ConfigDict(extra="forbid"), **in_fields)
    output_model = create_model(_class_name(name, "Outputs"), **out_fields)
    return ProgramIO(inputs=dict(inputs), outputs=dict(outputs), input_model=input_model, output_model=output_model)


class Usage(BaseModel):
    lm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated_cost_usd: float = 0.0


class PredictMeta(BaseModel):
    program: str
    version: int
    request_id: str
    latency_ms: float
    usage: Usage


def predict_response_model(name: str, io: ProgramIO) -> type[BaseModel]:
    return create_model(_class_name(name, "Response"), __base__=PredictMeta, outputs=(io.output_model, ...))


class ProgramInfo(BaseModel):
    name: str
    description: str = ""
    alias: str
    version: int | None = Field(None, description="the version served at the alias (None: not loaded)")
    versions: list[int] = []
    aliases: dict[str, int] = {}
    loaded: list[int] = Field([], description="versions held in memory")
    swaps: int = 0
    error: str | None = None
    input_schema: dict[str, Any] = {}
    output_schema: dict[str, Any] = {}


class ProgramList(BaseModel):
    object: str = "list"
    data: list[ProgramInfo]


# --- OpenAI-compatible chat completions ---------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(max_length=32)
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields dspyc uses; sampling fields an SDK may send are accepted and ignored (the program decides)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(max_length=128, description="a program: `rag`, `rag@3` or `rag@champion`")
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool = False
    response_format: dict[str, Any] | None = Field(None, description='{"type": "json_object"}: all outputs as JSON')


class ChatChoiceMessage(BaseModel):
    role: str = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str = "stop"


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    dspyc: dict[str, Any] = Field(default_factory=dict, description="program, version, outputs, cost, latency")


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "dspyc"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
