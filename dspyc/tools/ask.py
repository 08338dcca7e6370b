"""`dspyc ask "..."`: the tool-calling agent over the built-in tools, with every tool result and its source shown."""

from __future__ import annotations

import importlib

import dspy

from dspyc import artifacts, loading, registry
from dspyc.console import console as make_console
from dspyc.distill.student import adapter_ref, attach
from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings
from dspyc.tools.builtin import default_registry
from dspyc.tools.providers import PROVIDERS

console = make_console(soft_wrap=True)  # a tool line stays one line, also when piped


def build_agent(s: Settings, version: str | None = None, max_steps: int | None = None) -> dspy.Module:
    """A ToolAgent over the default tools; with `version` (e.g. `3`, `champion`), its function caller is the
    compiled `agent@version`."""
    registry.get("agent")  # puts the project on sys.path and checks programs/agent.py
    mod = importlib.import_module("programs.agent")
    agent = mod.ToolAgent(default_registry(s), max_steps=max_steps or s.agent_max_steps,
                          tool_calling=mod.resolve_tool_calling(s.agent_tool_calling))
    if version:
        v = loading.resolve_version("agent", version, s)
        manifest = artifacts.read_manifest("agent", v, s)  # verifies the files against the manifest
        agent.caller.load(str(artifacts.program_dir("agent", s) / str(v) / artifacts.PROGRAM_FILE))
        if adapter_ref(manifest) is not None:  # a weights compile: the caller's predictors call its adapter
            attach(agent.caller, manifest, s)
    return agent


def ask(question: str, version: str | None = None, provider: str | None = None, max_steps: int | None = None,
        s: Settings | None = None) -> dspy.Prediction:
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
        console.print(f"  [{colour}]tool[/{colour}] {line}" + (f" [dim]\\[source: {src}][/dim]" if src else ""),
                      highlight=False)
    if not pred.tool_results:
        console.print("  [yellow]no tool was called[/yellow]")
    return pred
