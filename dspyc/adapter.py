"""The one way DSPy talks to small models here: JSON whose shape the server enforces.

A 135M model cannot be trusted to follow a format from instructions alone (measured: ChainOfThought
parsed 0/10 with DSPy's stock adapters). DSPy's JSONAdapter only sends a schema when it believes the
model supports one, and for a model its metadata snapshot does not know (any self-hosted model) it
sends none. This adapter always sends the signature's schema as `response_format`, so vLLM's
structured-output backend (or the in-process backend's grammar) makes every reply parse.
"""

from __future__ import annotations

import copy
from typing import Any

import pydantic
from dspy.adapters.json_adapter import JSONAdapter, _get_structured_outputs_response_format, _has_open_ended_mapping
from dspy.signatures.signature import Signature

# Without bounds, a small model can fill a free-text field, repeat list items, or write a number's digits
# until max_tokens and leave the JSON unclosed (measured: "population_millions": 1000000000000... ). vLLM's
# grammar backend (xgrammar) enforces maxLength, maxItems and numeric ranges.
DEFAULT_MAX_STRING_LENGTH = 300
DEFAULT_MAX_ITEMS = 4
DEFAULT_NUMBER_BOUND = 1e9


def _bound_strings(schema: dict[str, Any], max_length: int, max_items: int = DEFAULT_MAX_ITEMS) -> None:
    """Give every unbounded string a maxLength, array a maxItems and number a range (in place, recursively)."""
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and "enum" not in schema:
        schema["maxLength"] = max_length
    if kind == "array" and "maxItems" not in schema:
        schema["maxItems"] = max_items
    if kind in ("number", "integer") and "enum" not in schema:
        schema.setdefault("minimum", -DEFAULT_NUMBER_BOUND)
        schema.setdefault("maximum", DEFAULT_NUMBER_BOUND)
    for key in ("properties", "$defs", "definitions"):
        for sub in (schema.get(key) or {}).values():
            if isinstance(sub, dict):
                _bound_strings(sub, max_length, max_items)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _bound_strings(schema[key], max_length, max_items)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            if isinstance(sub, dict):
                _bound_strings(sub, max_length, max_items)


def response_format_for(signature: type[Signature], max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH) -> dict[str, Any]:
    """The OpenAI `response_format` (json_schema, strict) for a signature's output fields."""
    if _has_open_ended_mapping(signature):
        return {"type": "json_object"}
    model = _get_structured_outputs_response_format(signature, use_native_function_calling=False)
    schema = copy.deepcopy(model.model_json_schema())
    if max_string_length:
        _bound_strings(schema, max_string_length)
    return {"type": "json_schema", "json_schema": {"name": "outputs", "schema": schema, "strict": True}}


class ConstrainedJSONAdapter(JSONAdapter):
    """JSONAdapter that always sends the signature's JSON schema, whatever DSPy knows of the model."""

    def __init__(self, max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH, **kwargs: Any):
        kwargs.setdefault("use_native_function_calling", False)
        super().__init__(**kwargs)
        self.max_string_length = max_string_length

    def _prepare_response_format(self, lm, lm_kwargs: dict[str, Any], signature: type[Signature]) -> None:
        if "response_format" in lm_kwargs:
            return
        try:
            lm_kwargs["response_format"] = response_format_for(signature, self.max_string_length)
        except (ValueError, pydantic.PydanticInvalidForJsonSchema, pydantic.PydanticSchemaGenerationError):
            lm_kwargs["response_format"] = {"type": "json_object"}
