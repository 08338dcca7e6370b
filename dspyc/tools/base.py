"""Tools as typed Python functions: a JSON schema derived from the signature, pydantic-validated arguments,
and execution with a timeout whose failures come back as text the agent can read (never a raised error).

Nothing here evaluates model output as code: arguments are JSON validated against the function's
signature, and the function is looked up by name in a registry.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from dspyc.errors import DspycError


class ToolError(Exception):
    """Raised by a tool for a failure the agent should read (bad city, unknown symbol, API down)."""


class ToolResult(BaseModel):
    """One executed call: what was asked, what came back (or why not), and how long it took."""

    tool: str
    arguments: dict[str, Any]
    ok: bool
    output: Any = None
    error: str | None = None
    elapsed_s: float = 0.0

    def as_text(self, max_chars: int = 400) -> str:
        """The observation fed back to the model: short, one line."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        body = _compact(self.output) if self.ok else f"ERROR: {self.error}"
        return f"{self.tool}({args}) -> {body}"[:max_chars]


def _compact(value: Any) -> str:
    if isinstance(value, dict):  # the data's source is for the user, not the model
        return "; ".join(f"{k}: {v}" for k, v in value.items() if k != "source")
    return str(value)


_ARG_LINE = re.compile(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


def _doc_parts(fn: Callable) -> tuple[str, dict[str, str]]:
    """(summary, {param: description}) from a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n")[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if line and not line.startswith(" "):
                break
            m = _ARG_LINE.match(line)
            if m:
                params[m.group(1)] = m.group(2).strip()
    return summary, params


def _strip_titles(schema: Any) -> Any:
    """Pydantic's `title` keys only lengthen the prompt and the grammar."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


class Tool:
    """A Python function the agent may call. Its arguments model and JSON schema come from its signature:

    >>> def get_weather(city: str) -> dict:
    ...     '''Current weather for a city.'''
    >>> Tool(get_weather).json_schema()["name"]
    'get_weather'
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ):
        self.fn = fn
        self.name = name or fn.__name__
        summary, param_docs = _doc_parts(fn)
        self.description = description or summary
        self.timeout_s = timeout_s
        hints = get_type_hints(fn, include_extras=True)
        fields: dict[str, Any] = {}
        for pname, p in inspect.signature(fn).parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"tool {self.name}: *args/**kwargs have no schema; name every parameter")
            annotation = hints.get(pname, Any)
            default = ... if p.default is p.empty else p.default
            if get_origin(annotation) is Annotated and any(
                isinstance(m, pydantic.fields.FieldInfo) for m in get_args(annotation)[1:]
            ):
                fields[pname] = (annotation, default)  # the Field inside Annotated carries the description
            else:
                fields[pname] = (annotation, Field(default, description=param_docs.get(pname)))
        # extra="forbid": an argument the function does not take is an error the model should see.
        self.args_model: type[BaseModel] = pydantic.create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )

    def parameters_schema(self) -> dict[str, Any]:
        schema = _strip_titles(self.args_model.model_json_schema())
        schema.setdefault("required", [])
        return schema

    def json_schema(self) -> dict[str, Any]:
        """The seed's shape: name, description, input schema (OpenAI `function` format)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters_schema()}

    def openai_tool(self) -> dict[str, Any]:
        return {"type": "function", "function": self.json_schema()}

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments; raises ToolError with one readable line per problem."""
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        try:
            model = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None
        return {k: getattr(model, k) for k in type(model).model_fields}

    def __call__(self, **kwargs: Any) -> Any:
        return self.fn(**self.validate(kwargs))

    def __repr__(self) -> str:
        return f"Tool({self.name})"


def run_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
    """Run `fn` in a daemon thread; raise TimeoutError if it has not returned after `timeout_s`.

    A thread cannot be killed, so a hung tool keeps its thread until it returns; being a daemon it never
    holds up interpreter exit. Tools that do I/O should also pass their own timeouts (the HTTP providers do).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="dspyc-tool")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"timed out after {timeout_s:g}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class ToolRegistry:
    """The tools an agent may choose from, by name."""

    def __init__(self, tools: list[Tool | Callable[..., Any]] | None = None, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self._tools: dict[str, Tool] = {}
        for t in tools or []:
            self.register(t)

    def __deepcopy__(self, memo):
        return self  # optimizers deepcopy programs; tools (clients, files, closures) are shared, not copied

    def register(self, tool: Tool | Callable[..., Any]) -> Tool:
        tool = tool if isinstance(tool, Tool) else Tool(tool)
        if tool.name in self._tools:
            raise DspycError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator form of `register`."""
        self.register(fn)
        return fn

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __iter__(self):
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool:
        if name not in self._tools:
            raise ToolError(f"unknown tool {name!r}; available: {', '.join(self._tools)}")
        return self._tools[name]

    def schemas(self) -> list[dict[str, Any]]:
        return [t.json_schema() for t in self]

    def call(self, name: str, arguments: dict[str, Any] | None = None, timeout_s: float | None = None) -> ToolResult:
        """Validate and run one call. Every failure (unknown tool, bad arguments, exception, timeout) is
        returned as a ToolResult with `ok=False` and a message, so the agent can read it and go on."""
        arguments = arguments or {}
        t0 = time.perf_counter()
        try:
            tool = self.get(name)
            kwargs = tool.validate(arguments)
            limit = timeout_s or tool.timeout_s or self.timeout_s
            output = run_with_timeout(lambda: tool.fn(**kwargs), limit)
            return ToolResult(
                tool=name, arguments=arguments, ok=True, output=output, elapsed_s=round(time.perf_counter() - t0, 3)
            )
        except ToolError as exc:
            error = str(exc)
        except TimeoutError as exc:
            error = f"{name} {exc}"
        except Exception as exc:  # noqa: BLE001 - a tool's bug is reported to the agent, not raised
            error = f"{name} failed: {type(exc).__name__}: {exc}"
        return ToolResult(
            tool=name, arguments=arguments, ok=False, error=error, elapsed_s=round(time.perf_counter() - t0, 3)
        )
