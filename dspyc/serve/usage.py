"""LLMOps records: one JSON line per request (append-only), Prometheus metrics, and `dspyc usage`.

The log holds what a debugging or compliance review needs: who (a key id, never the key), what program
version, inputs and outputs (or their hashes, per `serve_log`), tokens, estimated cost, latency, status.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dspyc.errors import DspycError
from dspyc.stats import percentile
from dspyc.settings import Settings, get_settings

LOG_MODES = ("full", "redact", "none")


def log_path(s: Settings | None = None) -> Path:
    s = s or get_settings()
    return s.serve_log_path or s.artifacts_dir / "serve" / "requests.jsonl"


def redact(value: Any, mode: str) -> Any:
    """`full`: as is; `redact`: each string becomes its sha256 prefix and length; `none`: dropped."""
    if mode == "full":
        return value
    if mode == "none":
        return None
    if isinstance(value, str):
        return {"sha256": hashlib.sha256(value.encode()).hexdigest()[:16], "chars": len(value)}
    if isinstance(value, dict):
        return {k: redact(v, mode) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, mode) for v in value]
    return value


class RequestLog:
    """Append-only JSONL; one `write` per line under a lock, so lines never interleave."""

    def __init__(self, path: Path, mode: str = "full"):
        if mode not in LOG_MODES:
            raise DspycError(f"serve_log must be one of {', '.join(LOG_MODES)}, not {mode!r}")
        self.path, self.mode = path, mode
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        record = dict(record)
        for key in ("inputs", "outputs"):
            if key in record:
                record[key] = redact(record[key], self.mode)
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)

    def close(self) -> None:
        with self._lock:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


class Metrics:
    """The server's Prometheus metrics, in their own registry (several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dspyc_requests",
            "Requests by program, version, endpoint and status",
            ["program", "version", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "dspyc_request_latency_seconds",
            "End-to-end request latency",
            ["program", "endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.tokens = Counter("dspyc_tokens", "LM tokens billed", ["program", "version", "kind"], registry=r)
        self.cost = Counter("dspyc_cost_usd", "Estimated LM cost in USD", ["program", "version"], registry=r)
        self.lm_calls = Counter("dspyc_lm_calls", "LM calls made by programs", ["program", "version"], registry=r)
        self.in_flight = Gauge("dspyc_in_flight", "Program runs in flight", registry=r)
        self.waiting = Gauge("dspyc_waiting", "Requests waiting for a run slot", registry=r)
        self.rejected = Counter("dspyc_rejected", "Requests refused before running", ["reason"], registry=r)
        self.version = Gauge("dspyc_program_version", "Version served at the alias", ["program"], registry=r)
        self.swaps = Counter("dspyc_hot_swaps", "Alias moves picked up without a restart", ["program"], registry=r)

    def record_swap(self, program: str, old: int | None, new: int) -> None:
        """A `ProgramPool` swap callback: the version gauge follows the alias, and only a real move (not a
        program's first load) counts as a hot swap."""
        self.version.labels(program).set(new)
        if old is not None:
            self.swaps.labels(program).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --- dspyc usage ------------------------------------------------------------------------------------

_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str | None) -> timedelta | None:
    if text in (None, "", "all"):
        return None
    m = _WINDOW.match(text.strip())
    if not m:
        raise DspycError(f"bad time window {text!r}: use e.g. 30m, 24h, 7d or all")
    return timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])


def read_records(path: Path, since: timedelta | None = None, program: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        raise DspycError(f"no request log at {path} (start `dspyc serve` and send requests first)")
    cutoff = time.time() - since.total_seconds() if since else None
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write
            if cutoff is not None and rec.get("ts", 0) < cutoff:
                continue
            if program and rec.get("program") != program:
                continue
            out.append(rec)
    return out


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per program and version: requests, errors, tokens, cost, latency percentiles."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec.get("program") or "-", rec.get("version")), []).append(rec)
    rows = []
    for (program, version), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lat = [r["latency_ms"] for r in recs if r.get("status") == 200 and "latency_ms" in r]
        rows.append(
            {
                "program": program,
                "version": version,
                "requests": len(recs),
                "errors": sum(1 for r in recs if r.get("status") != 200),
                "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in recs),
                "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in recs),
                "cost_usd": round(sum(float(r.get("cost_usd") or 0) for r in recs), 6),
                "p50_ms": round(percentile(lat, 50), 1),
                "p95_ms": round(percentile(lat, 95), 1),
                "p99_ms": round(percentile(lat, 99), 1),
                "first": datetime.fromtimestamp(min(r.get("ts", 0) for r in recs), UTC).isoformat(timespec="seconds"),
                "last": datetime.fromtimestamp(max(r.get("ts", 0) for r in recs), UTC).isoformat(timespec="seconds"),
            }
        )
    return rows


def usage_report(
    since: str | None = "24h",
    program: str | None = None,
    path: Path | None = None,
    as_json: bool = False,
    s: Settings | None = None,
) -> list[dict[str, Any]]:
    from dspyc.console import console as make_console
    from rich.table import Table

    path = path or log_path(s)
    rows = summarise(read_records(path, parse_window(since), program))
    console = make_console()
    if as_json:
        console.print_json(json.dumps(rows))
        return rows
    table = Table(title=f"usage · {path} · window {since or 'all'}")
    for col in (
        "program",
        "version",
        "requests",
        "errors",
        "prompt tok",
        "completion tok",
        "cost $",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    ):
        table.add_column(col, justify="left" if col == "program" else "right")
    for r in rows:
        table.add_row(
            r["program"],
            str(r["version"]),
            f"{r['requests']:,}",
            str(r["errors"]),
            f"{r['prompt_tokens']:,}",
            f"{r['completion_tokens']:,}",
            f"{r['cost_usd']:.6f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
        )
    if not rows:
        console.print(f"no requests in the window ({since}) in {path}")
    else:
        console.print(table)
    return rows
