"""JSON schemas for function calls: tool name and arguments constrained together, one `anyOf` branch per
function, so the server's grammar can only produce a call to a listed function with arguments of the
right shape. (A free-form `dict` argument field, as in dspy.ReAct, gives the grammar nothing to hold on to.)

Also the prompt-side rendering of a function: one compact line, because a 135M model on a CPU engine pays
for every prompt token and the schema, not the prose, is what keeps the output well-formed.
"""

from __future__ import annotations

from typing import Any

from dspyc.adapter import DEFAULT_NUMBER_BOUND

MAX_STRING = 120  # a runaway string would otherwise fill max_tokens and leave the JSON unclosed
MAX_ITEMS = 32  # BFCL passes lists of 20 numbers as one argument; 10 cut them (parallel_129)
MAX_ABS_NUMBER = int(DEFAULT_NUMBER_BOUND)  # the adapter's bound: SmolLM2 wrote a 400-digit int without one
# BFCL writes Python-ish type names; JSON Schema wants its own.
_TYPE_MAP = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
    "array": "array",
    "number": "number",
    "object": "object",
    "int": "integer",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "null": "null",
}


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A BFCL/OpenAPI-ish parameter schema → a strict, bounded JSON Schema (descriptions and defaults dropped)."""
    out: dict[str, Any] = {}
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t == "any" or t is None:
        if "enum" in schema:
            out["enum"] = schema["enum"]
        return out  # any JSON value
    jt = _TYPE_MAP.get(t, "string")
    out["type"] = jt
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        out["enum"] = schema["enum"]
        return out
    if jt == "string":
        out["maxLength"] = MAX_STRING
    elif jt in ("integer", "number"):
        out["minimum"], out["maximum"] = -MAX_ABS_NUMBER, MAX_ABS_NUMBER
    elif jt == "array":
        items = schema.get("items")
        if isinstance(items, dict) and items:
            out["items"] = to_json_schema(items)
        out["maxItems"] = MAX_ITEMS
    elif jt == "object":
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            out["properties"] = {k: to_json_schema(v) for k, v in props.items() if isinstance(v, dict)}
            out["required"] = [r for r in schema.get("required", []) if r in out["properties"]]
            out["additionalProperties"] = False
    return out


def call_branch(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    args = to_json_schema(parameters or {"type": "dict", "properties": {}})
    if args.get("type") != "object":
        args = {"type": "object", "properties": {}, "additionalProperties": False}
    args.setdefault("properties", {})
    args.setdefault("required", [])
    args.setdefault("additionalProperties", False)
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [name]}, "arguments": args},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def calls_response_format(
    functions: list[dict[str, Any]], max_calls: int = 1, field: str = "calls", min_calls: int = 1
) -> dict[str, Any]:
    """The OpenAI `response_format` for `{field: [call, ...]}` with min_calls..max_calls calls to the given functions.
    `functions` are `{"name", "parameters"}` dicts (BFCL's format and `Tool.json_schema()` both fit)."""
    branches = [call_branch(f["name"], f.get("parameters") or {}) for f in functions]
    item = branches[0] if len(branches) == 1 else {"anyOf": branches}
    most = max(1, max_calls)
    schema = {
        "type": "object",
        "properties": {
            field: {"type": "array", "items": item, "minItems": min(max(1, min_calls), most), "maxItems": most}
        },
        "required": [field],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "calls", "schema": schema, "strict": True}}


def _type_name(schema: dict[str, Any]) -> str:
    t = schema.get("type", "any")
    if isinstance(t, list):
        t = "|".join(map(str, t))
    if "enum" in schema:
        return "one of " + "/".join(map(str, schema["enum"][:6]))
    if t in ("array", "tuple") and isinstance(schema.get("items"), dict):
        return f"list[{_type_name(schema['items'])}]"
    return str(t)


def render_function(fn: dict[str, Any], max_desc: int = 110) -> str:
    """One compact line: `name(a: integer, b?: string) — what it does. a: ...; b: ...` (`?` = optional)."""
    params = (fn.get("parameters") or {}).get("properties") or {}
    required = set((fn.get("parameters") or {}).get("required") or [])
    sig = ", ".join(f"{k}{'' if k in required else '?'}: {_type_name(v)}" for k, v in params.items())
    desc = (fn.get("description") or "").strip()[:max_desc]
    pdesc = "; ".join(
        f"{k}: {(v.get('description') or '').strip()[:60]}" for k, v in params.items() if v.get("description")
    )
    return f"{fn['name']}({sig}) - {desc}" + (f" [{pdesc}]" if pdesc else "")
