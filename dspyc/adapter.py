"""The one way DSPy talks to small models here: a short prompt, and JSON whose shape the server enforces.

Two things, measured on Qwen2.5-Coder-0.5B over the same HotPotQA passages (answer F1):
- DSPy's JSONAdapter sends no schema for a model its metadata does not know (any self-hosted one), so a small
  model's reply often does not parse. This adapter always sends the signature's schema as `response_format`;
  vLLM's structured outputs (or the in-process grammar) then make every reply parse.
- DSPy's prompt (field lists, `[[ ## field ## ]]` markers, a `{"answer": "{answer}"}` template) is written for
  large models: a 0.5B model copies the template (`{query}`) or fills bounds with junk. A short system message,
  inputs as plain labelled text and bounds that fit what each field means took F1 from 0.025 to 0.125.

`ConstrainedJSONAdapter` is the lean format; `DSPyFormatJSONAdapter` keeps DSPy's prompt under the same
schema (what dspyc rendered before), for `just adapter-check` to compare.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from typing import Any

import annotated_types
import pydantic
from dspy.adapters.json_adapter import JSONAdapter, _has_open_ended_mapping
from dspy.adapters.utils import serialize_for_json
from dspy.signatures.signature import Signature

from dspyc.settings import get_settings

# Without bounds, a small model can fill a free-text field, repeat list items, or write a number's digits
# until max_tokens and leave the JSON unclosed (measured: "population_millions": 1000000000000... ). vLLM's
# grammar backend (xgrammar) enforces maxLength, maxItems and numeric ranges. A field sets its own bound with
# `dspy.OutputField(max_length=N)` (characters for strings, items for lists).
DEFAULT_MAX_STRING_LENGTH = 200
DEFAULT_MAX_ITEMS = 4
DEFAULT_NUMBER_BOUND = 1e9
REASONING_MAX_LENGTH = 300  # ChainOfThought's field; DSPy gives it no bound of its own
_DSPY_KEYS = ("desc", "prefix", "format", "parser", "__dspy_field_type", "constraints", "json_schema_extra")


def _walk(schema: dict[str, Any], visit: Callable[[dict[str, Any]], None]) -> None:
    """`visit` every (sub)schema, parents before their children: properties, definitions, items, unions."""
    visit(schema)
    children: list[Any] = []
    for key in ("properties", "$defs", "definitions"):
        children += (schema.get(key) or {}).values()
    children += [schema.get("items"), schema.get("additionalProperties")]
    for key in ("anyOf", "oneOf", "allOf"):
        children += schema.get(key) or []
    for sub in children:
        if isinstance(sub, dict):
            _walk(sub, visit)


def _bound(schema: dict[str, Any], max_length: int, max_items: int = DEFAULT_MAX_ITEMS) -> None:
    """Give every unbounded string a maxLength, array a maxItems and number a range (in place, recursively)."""

    def visit(node: dict[str, Any]) -> None:
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node and "const" not in node:
            node["maxLength"] = max_length
        if kind == "array" and "maxItems" not in node:
            node["maxItems"] = max_items
        if kind in ("number", "integer") and "enum" not in node:
            node.setdefault("minimum", -DEFAULT_NUMBER_BOUND)
            node.setdefault("maximum", DEFAULT_NUMBER_BOUND)

    _walk(schema, visit)


def _strict(schema: dict[str, Any]) -> None:
    """OpenAI strict mode: every object lists all its properties as required and allows no others."""

    def visit(node: dict[str, Any]) -> None:
        if node.get("type") == "object":
            node["required"] = list(node.setdefault("properties", {}))
            node["additionalProperties"] = False

    _walk(schema, visit)


def output_schema(
    signature: type[Signature], max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH
) -> dict[str, Any]:
    """The JSON schema of a signature's outputs, keeping each field's own pydantic constraints (max_length...)."""
    fields = {}
    for name, info in signature.output_fields.items():
        info = copy.copy(info)
        info.json_schema_extra = None  # DSPy's desc/prefix are prompt text, not schema
        if name == "reasoning" and info.annotation is str and not any(hasattr(m, "max_length") for m in info.metadata):
            info.metadata = [*info.metadata, annotated_types.MaxLen(REASONING_MAX_LENGTH)]
        fields[name] = (info.annotation, info)
    model = pydantic.create_model("Outputs", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    schema = model.model_json_schema()
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        prop.pop("default", None)
        for key in _DSPY_KEYS:
            prop.pop(key, None)
    if max_string_length:
        _bound(schema, max_string_length)
    _strict(schema)
    return schema


def response_format_for(
    signature: type[Signature], max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH
) -> dict[str, Any]:
    """The OpenAI `response_format` (json_schema, strict) for a signature's output fields."""
    return copy.deepcopy(_response_format(signature, max_string_length))


@functools.lru_cache(maxsize=512)  # per signature class: building the pydantic model was ~15% of a served call's CPU
def _response_format(signature: type[Signature], max_string_length: int | None) -> dict[str, Any]:
    if _has_open_ended_mapping(signature):
        return {"type": "json_object"}
    schema = output_schema(signature, max_string_length)
    return {"type": "json_schema", "json_schema": {"name": "outputs", "schema": schema, "strict": True}}


def worst_case_tokens(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> int:
    """An upper bound on the tokens of any reply the schema admits, counting one token per character (a BPE token
    holds at least one character of ASCII text): max_tokens at or above it means no reply is ever cut off."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return worst_case_tokens(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return max(worst_case_tokens(sub, defs) for sub in schema[key])
    kind = schema.get("type")
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    if "const" in schema:
        return len(json.dumps(schema["const"]))
    if kind == "string":
        # JSON escapes (\n, \") can double a character; count the quotes too
        return 2 * int(schema.get("maxLength", 10_000)) + 2
    if kind == "array":
        return int(schema.get("maxItems", 100)) * (worst_case_tokens(schema.get("items", {}), defs) + 1) + 2
    if kind == "object":
        props = schema.get("properties", {})
        return sum(len(k) + 4 + worst_case_tokens(v, defs) for k, v in props.items()) + 2
    if kind in ("number", "integer"):
        return 24
    if kind == "boolean":
        return 5
    return 8  # null


class _SchemaAdapter(JSONAdapter):
    """Sends the signature's schema on every call and raises max_tokens to what the schema can need."""

    def __init__(self, max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH, **kwargs: Any):
        kwargs.setdefault("use_native_function_calling", False)
        super().__init__(**kwargs)
        self.max_string_length = max_string_length

    def _prepare_response_format(self, lm, lm_kwargs: dict[str, Any], signature: type[Signature]) -> None:
        if "response_format" not in lm_kwargs:
            try:
                lm_kwargs["response_format"] = response_format_for(signature, self.max_string_length)
            except (
                ValueError,
                TypeError,
                pydantic.PydanticInvalidForJsonSchema,
                pydantic.PydanticSchemaGenerationError,
            ):
                lm_kwargs["response_format"] = {"type": "json_object"}
        rf = lm_kwargs["response_format"]
        if isinstance(rf, dict) and rf.get("type") == "json_schema" and self.max_string_length:
            # no reply the schema admits is cut off, up to a cap the engine's context always leaves room for
            need = min(worst_case_tokens(rf["json_schema"]["schema"]), get_settings().max_reply_tokens)
            have = lm_kwargs.get("max_tokens") or getattr(lm, "kwargs", {}).get("max_tokens") or 0
            if need > have:
                lm_kwargs["max_tokens"] = need


class DSPyFormatJSONAdapter(_SchemaAdapter):
    """DSPy's JSONAdapter prompt under the constrained schema (dspyc's format before the lean one)."""


def _label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def _plain(value: Any) -> str:
    """An input value as plain text: strings as they are, lists one item a line, anything else as compact JSON."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)):
        if not value:
            return "(none)"
        if all(isinstance(v, str) for v in value):
            return "\n".join(v if v[:1] in "[-•" else f"- {v}" for v in value)
        return "\n".join(f"- {_plain(v)}" for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(serialize_for_json(value), ensure_ascii=False)


def _describe_output(name: str, info) -> str:
    desc = (info.json_schema_extra or {}).get("desc", "")
    if not desc or desc.startswith("${"):  # DSPy's placeholder description, e.g. "${reasoning}"
        desc = "your step-by-step reasoning, briefly" if name == "reasoning" else ""
    return f'"{name}"' + (f" ({desc})" if desc else "")


class ConstrainedJSONAdapter(_SchemaAdapter):
    """The lean format: a short instruction, inputs as labelled plain text, compact JSON replies.

    System: the signature's instructions, then one line naming the JSON keys to reply with and what each holds.
    User: `Label: value` per input (multi-line values under their label). Assistant (demos): compact JSON.
    Nothing in the prompt looks like a template a small model could copy.
    """

    def format_field_description(self, signature: type[Signature]) -> str:
        return ""

    def format_field_structure(self, signature: type[Signature]) -> str:
        keys = ", ".join(_describe_output(n, f) for n, f in signature.output_fields.items())
        return f"Reply with a JSON object with the keys {keys}."

    def format_task_description(self, signature: type[Signature]) -> str:
        return (signature.instructions or "").strip()

    def format_system_message(self, signature: type[Signature]) -> str:
        return f"{self.format_task_description(signature)}\n{self.format_field_structure(signature)}".strip()

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        parts = [prefix.strip()] if prefix.strip() else []
        for name in signature.input_fields:
            if name not in inputs:
                continue
            value, text = inputs[name], _plain(inputs[name])
            block = isinstance(value, (list, tuple)) or "\n" in text or len(text) > 80
            parts.append(f"{_label(name)}:\n{text}" if block else f"{_label(name)}: {text}")
        if suffix.strip():
            parts.append(suffix.strip())
        return "\n\n".join(parts)

    def format_assistant_message_content(
        self, signature: type[Signature], outputs: dict[str, Any], missing_field_message: str | None = None
    ) -> str:
        values = {k: outputs.get(k, missing_field_message) for k in signature.output_fields}
        return json.dumps(serialize_for_json(values), ensure_ascii=False, separators=(",", ":"))

    # --- one short string, in plain text -------------------------------------------------------------------
    # A predictor built with `dspy.Predict(Sig, reply="text")` whose only output is a string gets its reply as plain
    # text: no JSON around it. Measured on Qwen2.5-Coder-0.5B, same 54 HotPotQA questions and passages (answer F1):
    # plain text 0.277, the same prompt with a JSON `{answer}` schema 0.159 (0.197 with this adapter's inputs).
    # Any text is a valid string, so every reply still parses; the field's bound becomes max_tokens and a cut.

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        if lm_kwargs.get("reply") == "text":
            name, bound = text_field(signature)
            return _text_outputs(
                name, bound, lm(**self._text_request(name, bound, lm_kwargs, signature, demos, inputs))
            )
        return super().__call__(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        if lm_kwargs.get("reply") == "text":
            name, bound = text_field(signature)
            request = self._text_request(name, bound, lm_kwargs, signature, demos, inputs)
            return _text_outputs(name, bound, await lm.acall(**request))
        return await super().acall(lm, lm_kwargs, signature, demos, inputs)

    def _text_request(
        self,
        name: str,
        bound: int,
        lm_kwargs: dict[str, Any],
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> dict[str, Any]:
        system = f"{self.format_task_description(signature)}\nReply with the {_label(name).lower()} only.".strip()
        messages = [{"role": "system", "content": system}]
        for demo in demos:
            if name in demo and all(k in demo for k in signature.input_fields):
                messages += [
                    {"role": "user", "content": self.format_user_message_content(signature, demo)},
                    {"role": "assistant", "content": str(demo[name])},
                ]
        messages.append({"role": "user", "content": self.format_user_message_content(signature, inputs)})
        kwargs = {k: v for k, v in lm_kwargs.items() if k not in ("reply", "response_format")}
        kwargs["max_tokens"] = min(kwargs.get("max_tokens") or 10**9, text_max_tokens(bound))
        return {"messages": messages, **kwargs}


def _text_outputs(name: str, bound: int, outputs: list[Any]) -> list[dict[str, Any]]:
    """The LM's completions (strings, or dicts with "text") as DSPy output dicts."""
    return [{name: clean_text(o.get("text", "") if isinstance(o, dict) else str(o), bound)} for o in outputs]


def text_field(signature: type[Signature]) -> tuple[str, int]:
    """The one string output of a plain-text signature and its bound in characters."""
    fields = signature.output_fields
    if len(fields) != 1 or next(iter(fields.values())).annotation is not str:
        raise ValueError(f"reply='text' needs exactly one string output; {signature.__name__} has {list(fields)}")
    name, info = next(iter(fields.items()))
    bound = next((m.max_length for m in info.metadata if getattr(m, "max_length", None)), DEFAULT_MAX_STRING_LENGTH)
    return name, int(bound)


def text_max_tokens(bound: int) -> int:
    # a BPE token of English text holds ~4 characters; half the bound leaves room for short tokens (digits, names)
    return max(8, bound // 2 + 4)


def clean_text(text: str, bound: int) -> str:
    """The first line of a plain reply, without a label the model may echo ("Answer: …") or wrapping quotes, cut to the bound."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    head, sep, rest = line.partition(":")
    if sep and rest.strip() and len(head.split()) == 1 and head.lower() in ("answer", "query", "reply", "response"):
        line = rest.strip()
    line = line.strip().strip('"').strip()
    return line[:bound].rstrip()
