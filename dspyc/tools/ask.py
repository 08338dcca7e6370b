"""`dspyc ask "..."`: the tool-calling agent over the built-in tools, with every tool result and its source shown."""

from __future__ import annotations

import dspy

from dspyc import loading, registry
from dspyc.console import console as make_console
from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings
from dspyc.tools.providers import PROVIDERS

console = make_console(soft_wrap=True)  # a tool line stays one line, also when piped


def build_agent(s: Settings, version: str | None = None, max_steps: int | None = None) -> dspy.Module:
    """The tool-using agent of the program that defines one (`ProgramSpec.tool_agent`); with `version` (`3`,
    `champion`), its core is that compiled version, loaded as `dspyc.load` does (a weights compile on its adapter)."""
    specs = [spec for spec in map(registry.get, registry.available()) if spec.tool_agent]
    if not specs:
        raise DspycError("no program defines a tool agent (ProgramSpec.tool_agent)")
    spec = specs[0]
    compiled = loading.load_program(f"{spec.name}@{version}", s=s) if version else None
    return spec.tool_agent(s, max_steps, compiled)


def ask(
    question: str,
    version: str | None = None,
    provider: str | None = None,
    max_steps: int | None = None,
    s: Settings | None = None,
) -> dspy.Prediction:
    from dspyc.lm import configure

    s = s or get_settings()
    if provider:
        if provider not in PROVIDERS:
            raise DspycError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
        s = s.model_copy(update={"tools_provider": provider})
    if max_steps is not None and max_steps < 1:
        raise DspycError("--max-steps must be at least 1")
    configure(s)
    agent = build_agent(s, version, max_steps)
    with console.status("thinking (choosing a tool, running it, answering)"):
        pred = agent(question=question)
    console.print(f"[bold]{pred.answer}[/bold]")
    for r in pred.tool_results:
        from dspyc.tools.base import ToolResult

        r = ToolResult.model_validate(r)
        src = r.output.get("source", "") if r.ok and isinstance(r.output, dict) else ""
        line = r.as_text(max_chars=300)
        colour = "green" if r.ok else "yellow"
        console.print(
            f"  [{colour}]tool[/{colour}] {line}" + (f" [dim]\\[source: {src}][/dim]" if src else ""), highlight=False
        )
    if not pred.tool_results:
        console.print("  [yellow]no tool was called[/yellow]")
    return pred
