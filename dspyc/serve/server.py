"""`dspyc serve`: the engine with every registered LoRA student, then the program server on uvicorn."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings

console = Console(stderr=True)


def student_adapters(s: Settings) -> dict[str, Path]:
    """LoRA adapters in the artifact store: versions whose manifest says `kind: student`, under the name
    `dspyc distill` gave them (`config.student.lora_name`), else `<program>-v<version>`."""
    found: dict[str, Path] = {}
    root = s.artifacts_dir
    for manifest_file in sorted(root.glob("*/*/manifest.json")) if root.is_dir() else []:
        try:
            m = json.loads(manifest_file.read_text())
        except ValueError:
            continue
        if m.get("kind") != "student":
            continue
        folder = manifest_file.parent
        configs = sorted(folder.rglob("adapter_config.json"))
        if not configs:
            continue
        # dspyc.distill records the engine's name for the adapter as config.student.lora_name
        student = (m.get("config") or {}).get("student") or {}
        name = student.get("lora_name") or f"{m.get('program')}-v{m.get('version')}"
        if student.get("adapter") and (folder / student["adapter"] / "adapter_config.json").exists():
            configs = [folder / student["adapter"] / "adapter_config.json"]
        found[name] = configs[0].parent
    return found


def prepare_engine(s: Settings) -> None:
    """Start (or reuse) the engine and load every student into it at runtime: the shared engine is never
    restarted just to add an adapter."""
    from dspyc import engine

    if s.lm_backend not in ("engine", "url"):
        return
    base = engine.ensure(s)
    students = student_adapters(s)
    if students and s.lm_backend == "engine":
        for name, path in students.items():  # runtime loading: the shared engine is never restarted for this
            engine.load_lora(name, path, s)
        console.print(f"[dim]students loaded into the engine: {', '.join(students)}[/dim]")
    console.print(f"[dim]LM upstream: {base}[/dim]")


def serve(host: str | None = None, port: int | None = None, dev: bool = False, alias: str | None = None,
          s: Settings | None = None) -> None:
    import uvicorn

    from dspyc.serve.app import api_keys, create_app, is_loopback
    from dspyc.serve.pool import ProgramPool

    s = (s or get_settings()).model_copy()
    s.serve_host, s.serve_port = host or s.serve_host, port or s.serve_port
    s.serve_alias = alias or s.serve_alias
    if dev and not is_loopback(s.serve_host):
        raise DspycError(f"--dev (no API keys) is for loopback only; {s.serve_host} is not loopback: set DSPYC_SERVE_API_KEYS")
    if not api_keys(s) and not dev:
        raise DspycError("no API keys: set DSPYC_SERVE_API_KEYS=key1,key2 (or pass --dev for keyless loopback-only development)")
    prepare_engine(s)
    pool = ProgramPool(s)
    with console.status(f"loading programs at @{s.serve_alias}"):
        pool.start()
    for name in pool.names:
        cur, entry = pool.current(name), pool.status(name)
        console.print(f"  {name}@{s.serve_alias} -> " + (f"[green]v{cur.version}[/green]" if cur else f"[yellow]not loaded[/yellow] ({entry.error})"))
    app = create_app(s, pool, dev=dev)
    console.print(f"[bold]dspyc serve[/bold] on http://{s.serve_host}:{s.serve_port} · auth "
                  f"{'API keys' if api_keys(s) else '[yellow]none (loopback dev mode)[/yellow]'} · docs /docs · metrics /metrics")
    uvicorn.run(app, host=s.serve_host, port=s.serve_port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(min(s.serve_timeout_s, 30)), backlog=2048)
