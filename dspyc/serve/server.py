"""`dspyc serve`: the engines the served versions need (one per model, LoRA only where students are served,
their adapters loaded), then the program server on uvicorn."""

from __future__ import annotations

import json
from pathlib import Path

from dspyc.console import console as make_console

from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings

console = make_console(stderr=True)


def student_adapters(s: Settings, model: str | None = None) -> dict[str, Path]:
    """LoRA adapters in the artifact store: versions whose manifest names an `adapter` (a weights compile, a
    student) or says `kind: student` (stored before that field), under the engine name they were given, else
    `<program>-v<version>`. With `model`, only the adapters of that base model."""
    found: dict[str, Path] = {}
    root = s.artifacts_dir
    for manifest_file in sorted(root.glob("*/*/manifest.json")) if root.is_dir() else []:
        try:
            m = json.loads(manifest_file.read_text())
        except ValueError:
            continue
        adapter = m.get("adapter") or {}
        student = (m.get("config") or {}).get("student") or {}
        if not adapter and m.get("kind") != "student":
            continue
        folder = manifest_file.parent
        configs = sorted(folder.rglob("adapter_config.json"))
        if not configs:
            continue
        base = adapter.get("base_model") or student.get("base_model") or (m.get("lm") or {}).get("model")
        if model is not None and base != model:
            continue
        name = adapter.get("lora_name") or student.get("lora_name") or f"{m.get('program')}-v{m.get('version')}"
        sub = adapter.get("path") or student.get("adapter")
        if sub and (folder / sub / "adapter_config.json").exists():
            configs = [folder / sub / "adapter_config.json"]
        found[name] = configs[0].parent
    return found


def engine_plan(s: Settings) -> dict[str, bool]:
    """{model: serves adapters} for the versions at the served alias: the engines `dspyc serve` needs. A version
    that does not resolve is left to the pool, which reports it on /readyz."""
    from dspyc import artifacts, loading, registry
    from dspyc.distill.student import adapter_ref
    from dspyc.loading import serving_model

    plan: dict[str, bool] = {}
    for name in registry.available():
        try:
            manifest = artifacts.read_manifest(name, loading.resolve_version(name, s.serve_alias, s), s, verify=False)
        except Exception:  # noqa: BLE001 - the pool loads it again and keeps the error
            continue
        model = serving_model(manifest, s) or s.lm_model
        # LoRA where an adapter is served as one (a merged copy is a model of its own, served without LoRA)
        plan[model] = plan.get(model, False) or (adapter_ref(manifest) is not None and s.adapter_serving == "lora")
    return plan


def prepare_engine(s: Settings) -> dict[str, str]:
    """Start (or reuse) one engine per model the served versions need, with LoRA only where students are
    served, and load every stored student of that base model into it at runtime (an engine with LoRA is
    never restarted to add an adapter). Returns {model: base URL}."""
    from dspyc import engine

    if s.lm_backend not in ("engine", "url"):
        return {}
    upstreams: dict[str, str] = {}
    for model, lora in engine_plan(s).items():
        upstreams[model] = engine.ensure(s, model, lora=lora)
        if lora and not (s.lm_url and model == s.lm_model):
            students = student_adapters(s, model)
            for name, path in students.items():
                engine.load_lora(name, path, s, model=model)
            console.print(f"[dim]students loaded into the {model} engine: {', '.join(students) or 'none'}[/dim]")
    for model, base in upstreams.items():
        console.print(f"[dim]LM upstream for {model}: {base}[/dim]")
    return upstreams


def serve(
    host: str | None = None,
    port: int | None = None,
    dev: bool = False,
    alias: str | None = None,
    s: Settings | None = None,
) -> None:
    import uvicorn

    from dspyc.serve.app import api_keys, create_app, is_loopback
    from dspyc.serve.pool import ProgramPool

    s = (s or get_settings()).model_copy()
    s.serve_host, s.serve_port = host or s.serve_host, port or s.serve_port
    s.serve_alias = alias or s.serve_alias
    if dev and not is_loopback(s.serve_host):
        raise DspycError(
            f"--dev (no API keys) is for loopback only; {s.serve_host} is not loopback: set DSPYC_SERVE_API_KEYS"
        )
    if not api_keys(s) and not dev:
        raise DspycError(
            "no API keys: set DSPYC_SERVE_API_KEYS=key1,key2 (or pass --dev for keyless loopback-only development)"
        )
    prepare_engine(s)
    pool = ProgramPool(s)
    with console.status(f"loading programs at @{s.serve_alias}"):
        pool.start()
    for name in pool.names:
        cur, entry = pool.current(name), pool.status(name)
        console.print(
            f"  {name}@{s.serve_alias} -> "
            + (f"[green]v{cur.version}[/green]" if cur else f"[yellow]not loaded[/yellow] ({entry.error})")
        )
    app = create_app(s, pool, dev=dev)
    console.print(
        f"[bold]dspyc serve[/bold] on http://{s.serve_host}:{s.serve_port} · auth "
        f"{'API keys' if api_keys(s) else '[yellow]none (loopback dev mode)[/yellow]'} · docs /docs · metrics /metrics"
    )
    uvicorn.run(
        app,
        host=s.serve_host,
        port=s.serve_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(min(s.serve_timeout_s, 30)),
        backlog=2048,
    )
