"""`just bench serve`: the program server under load, and its overhead over calling the upstream directly.

Two runs, each in the same process tree and with the same prompts on both sides:

1. **stub upstream** (the load test): `requests` calls at `concurrency` clients to a real `dspyc serve`
   process whose LM is `dspyc.serve.stub` (an instant OpenAI-compatible responder, NOT an LM: the CPU
   engine's ~8 tok/s cannot absorb 10,000 requests). The stub records every LM request the server makes;
   the same bodies are then sent to the stub directly at the same concurrency. The difference is what the
   server (HTTP, validation, DSPy, adapter, usage, logging, metrics) adds per request.
2. **real engine**: 64 requests at 8 and at 32 clients through the server to the vLLM engine (via the stub as a
   recording proxy, so the server path pays one extra loopback hop), then the same bodies to vLLM directly.

The served program is a one-predictor QA program in a throwaway project (`bench_qa`), served at `latest`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from dspyc.console import console as make_console
from rich.table import Table

from dspyc.stats import percentile
from dspyc.settings import Settings, get_settings

console = make_console()

PROGRAM_SOURCE = '''
"""bench_qa: one predictor, for serving benchmarks."""
import dspy
from dspyc.data import NoData
from dspyc.registry import ProgramSpec


class QA(dspy.Signature):
    """Answer the question in a few words."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words")


class BenchQA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict(QA)

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question)


PROGRAM = ProgramSpec(name="bench_qa", build=lambda data, config: BenchQA(), load_data=lambda name, seed: NoData(),
                      metric=lambda ex, pred, trace=None: 0.0, report=lambda results: {}, dataset="none",
                      description="One-predictor QA used by `just bench serve`.")
'''
QUESTIONS = ["What is the capital of {}?", "Who founded {}?", "When was {} built?", "Where is {}?"]
PLACES = ["France", "Montgomery", "the Eiffel Tower", "Rome", "Kyoto", "Lagos", "Quebec", "Oslo"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_project(root: Path) -> dict[str, str]:
    """A throwaway project with bench_qa compiled as version 1; returns the env that points dspyc at it."""
    from dspyc import artifacts
    from dspyc.artifacts import DatasetRef, LMRef, Manifest

    (root / "programs").mkdir(parents=True)
    (root / "programs" / "__init__.py").write_text("")
    (root / "programs" / "bench_qa.py").write_text(PROGRAM_SOURCE)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    ns: dict[str, Any] = {}
    exec(compile(PROGRAM_SOURCE, "bench_qa.py", "exec"), ns)
    ns["BenchQA"]().save(str(root / "program.json"))  # DSPy's own save format, as a compile writes it
    s = Settings(project_dir=root, artifacts_root=root / "artifacts")
    manifest = Manifest(
        program="bench_qa",
        version=0,
        import_path="programs.bench_qa",
        source_hash="bench",
        recipe={"name": "none"},
        dataset=DatasetRef(name="none", path="", version="none"),
        lm=LMRef(backend="url", model="bench", served_name="bench"),
        seed=0,
    )
    artifacts.save("bench_qa", {"program.json": root / "program.json"}, manifest, s)
    return {
        "DSPYC_PROJECT_DIR": str(root),
        "DSPYC_ARTIFACTS_DIR": str(root / "artifacts"),
        "DSPYC_SERVE_LOG_PATH": str(root / "requests.jsonl"),
    }


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


async def drive(
    url: str, bodies: list[dict[str, Any]], concurrency: int, headers: dict[str, str] | None = None
) -> tuple[list[float], dict[int, int], float]:
    """POST every body at `concurrency` clients; latencies (ms) of the 200s, status counts, wall seconds."""
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_i = 0

    async def client(session):
        nonlocal next_i
        while next_i < len(bodies):
            body = bodies[next_i]
            next_i += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=headers) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 599
            if status == 200:
                latencies.append((time.perf_counter() - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=900)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - t0


def _stats(latencies: list[float], statuses: dict[int, int], wall: float) -> dict[str, Any]:
    n = sum(statuses.values())
    return {
        "requests": n,
        "errors": n - statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(wall, 2),
        "throughput_rps": round(n / wall, 1) if wall else 0.0,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def _overhead(server: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for q in ("p50", "p95", "p99"):
        add = server[f"{q}_ms"] - direct[f"{q}_ms"]
        out[f"{q}_added_ms"] = round(add, 2)
        out[f"{q}_pct"] = round(100 * add / direct[f"{q}_ms"], 1) if direct[f"{q}_ms"] else None
    return out


def run_pair(
    env: dict[str, str],
    n: int,
    concurrency: int,
    upstream: list[str],
    direct_url: str,
    direct_key: str,
    server_env: dict[str, str],
    label: str,
    warmup: int = 0,
    warm_prefixes: bool = False,
) -> dict[str, Any]:
    """Start the stub (instant or proxy) and a server over it; load through the server; replay directly.
    `warm_prefixes`: send the measured questions through the server once before measuring, so that both measured
    runs find vLLM's prefix cache holding these prompts (else the direct replay, always second, skips prefill)."""
    stub_port, srv_port = _port(), _port()
    procs = []
    py = sys.executable
    try:
        stub = subprocess.Popen(
            [py, "-m", "dspyc.serve.stub", "--port", str(stub_port), *upstream],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ | env,
        )
        procs.append(stub)
        stub_url = f"http://127.0.0.1:{stub_port}"
        _wait(f"{stub_url}/health", stub)
        srv_env = os.environ | env | server_env | {"DSPYC_LM_URL": f"{stub_url}/v1", "HF_HUB_OFFLINE": "1"}
        server = subprocess.Popen(
            [py, "-m", "dspyc.cli", "serve", "--dev", "--alias", "latest", "--port", str(srv_port)],
            cwd=env["DSPYC_PROJECT_DIR"],
            env=srv_env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(env["DSPYC_PROJECT_DIR"]) / f"server-{label}.log", "w"),
        )
        procs.append(server)
        srv_url = f"http://127.0.0.1:{srv_port}"
        _wait(f"{srv_url}/readyz", server)
        predict = f"{srv_url}/v1/programs/bench_qa/predict"
        questions = [
            {"question": QUESTIONS[i % 4].format(PLACES[(i // 4) % 8]) + f" (#{i})"} for i in range(n + warmup)
        ]
        if warmup:
            asyncio.run(drive(predict, questions[:warmup], concurrency))
        if warm_prefixes:
            with console.status(f"[{label}] warming the engine's prefix cache with the measured prompts"):
                asyncio.run(drive(predict, questions[warmup:], concurrency))
        httpx.delete(f"{stub_url}/_recorded")
        with console.status(f"[{label}] {n:,} requests through the server at {concurrency} clients"):
            served = _stats(*asyncio.run(drive(predict, questions[warmup:], concurrency)))
        recorded = httpx.get(f"{stub_url}/_recorded", timeout=120).json()
        httpx.post(f"{stub_url}/_recording", json=False)
        url = direct_url or f"{stub_url}/v1/chat/completions"
        with console.status(f"[{label}] the same {len(recorded):,} LM requests straight to the upstream"):
            direct = _stats(*asyncio.run(drive(url, recorded, concurrency, {"Authorization": f"Bearer {direct_key}"})))
        return {"server": served, "direct": direct, "overhead": _overhead(served, direct), "lm_requests": len(recorded)}
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def bench_serve(
    requests: int = 10_000,
    concurrency: int = 32,
    upstream_latency_ms: float = 0.0,
    engine_requests: int = 64,
    engine_concurrency: tuple[int, ...] = (8, 32),
    s: Settings | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """The stub load test, then `engine_requests` through the real engine at each of `engine_concurrency`."""
    s = s or get_settings()
    result: dict[str, Any] = {"program": "bench_qa (one predictor)", "concurrency": concurrency}
    with tempfile.TemporaryDirectory(prefix="dspyc-bench-serve-") as tmp:
        env = make_project(Path(tmp))
        server_env = {
            "DSPYC_SERVE_MAX_CONCURRENCY": str(concurrency),
            "DSPYC_SERVE_MAX_QUEUE": str(4 * concurrency),
            "DSPYC_SERVE_POLL_S": "5",
        }
        result["stub"] = run_pair(
            env,
            requests,
            concurrency,
            ["--latency-ms", str(upstream_latency_ms)],
            "",
            "x",
            server_env,
            "stub",
            warmup=min(200, requests // 10),
        )
        result["stub"]["upstream"] = (
            f"dspyc.serve.stub (instant OpenAI-compatible responder, +{upstream_latency_ms:g} ms)"
        )
        if engine_requests:
            from dspyc import engine

            base = engine.ensure(s)
            for clients in engine_concurrency:
                served_env = server_env | {
                    "DSPYC_MAX_TOKENS": "48",
                    "DSPYC_SERVE_TIMEOUT_S": "600",
                    "DSPYC_SERVE_MAX_CONCURRENCY": str(max(concurrency, clients)),
                }
                run = run_pair(
                    env,
                    engine_requests,
                    clients,
                    ["--proxy", base],
                    f"{base}/chat/completions",
                    s.lm_api_key,
                    served_env,
                    f"engine@{clients}",
                    warm_prefixes=True,
                )
                result[f"engine@{clients}"] = run | {
                    "concurrency": clients,
                    "upstream": f"vLLM engine at {base} (server path via a recording loopback proxy)",
                }
    _print(result)
    if save:
        from dspyc.bench import _save

        _save("serve", result, s)
    return result


def _print(result: dict[str, Any]) -> None:
    table = Table(title=f"dspyc serve under load · {result['program']}")
    for col in ("run", "path", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col in ("run", "path") else "right")
    for run in [k for k in result if k == "stub" or k.startswith("engine")]:
        r = result[run]
        for path in ("server", "direct"):
            x = r[path]
            table.add_row(
                run,
                path,
                f"{x['requests']:,}",
                str(x["errors"]),
                f"{x['throughput_rps']:.1f}",
                f"{x['p50_ms']:.1f}",
                f"{x['p95_ms']:.1f}",
                f"{x['p99_ms']:.1f}",
            )
        o = r["overhead"]
        table.add_row(
            run,
            "[bold]server overhead[/bold]",
            "",
            "",
            "",
            f"+{o['p50_added_ms']:.1f} ({o['p50_pct']}%)",
            f"+{o['p95_added_ms']:.1f}",
            f"+{o['p99_added_ms']:.1f}",
        )
    console.print(table)
    console.print(
        f"[dim]stub upstream: {result['stub']['upstream']}; it is not an LM. Overhead = server latency - "
        f"direct latency for the same LM request bodies at the same concurrency.[/dim]"
    )
