"""docs/results.md's benchmark tables, generated from the JSON records in docs/bench/ rather than retyped.

A generated block in docs/results.md reads

    <!-- generated from docs/bench/2026-12-06-lora-adapter.json
    merged copy, engine without LoRA = **merged copy, engine without LoRA** (the default) -->
    ...the table, then a line with the record's date and CPU...
    <!-- end generated -->

The lines after the file name are optional label overrides (`row name in the record = what the table shows`), for
bold or a footnote mark; the numbers always come from the record. `python -m dspyc.results_doc` re-renders every
block in place; `--check` changes nothing and exits 1 naming each block that is out of step (a test runs it).
A record's renderer is chosen by its rows: `shape` (`dspyc bench train`) or `system` (`dspyc bench lora`); a record
with `points` is `dspyc eval-retrieval`'s curve.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from dspyc.artifacts import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "results.md"
BLOCK = re.compile(r"^(<!-- generated from (\S+\.json)(.*?)-->\n)(.*?)^(<!-- end generated -->)$", re.M | re.S)


def cpu_line(record: dict[str, Any]) -> str:
    cpu = record.get("cpu", {})
    flags = " ".join(cpu.get("flags", [])) or "none recorded"
    bf16 = " (native bf16)" if cpu.get("native_bf16") else " (bf16 emulated)" if "native_bf16" in cpu else ""
    return f"CPU: {cpu.get('cores', record.get('cpus', '?'))}-core {cpu.get('model', '?')}, `{flags}`{bf16}"


def train_table(record: dict[str, Any], labels: dict[str, str]) -> tuple[list[str], str]:
    """`dspyc bench train`: one row per LoRA shape; a shape the OS killed shows its error."""
    lines = ["| LoRA on | trainable params | s/step | s/row | trained tok/s | peak RSS |", "|---|---|---|---|---|---|"]
    for r in record["rows"]:
        label = labels.get(r["shape"], r["shape"])
        if "error" in r:
            lines.append(f"| {label} | — | {r['error']} | — | — | — |")
            continue
        lines.append(
            f"| {label} | {r['trainable_params'] / 1e6:.2f}M | {r['s_per_step']:.1f} | {r['s_per_row']:.2f} | "
            f"{r['tokens_per_s']:.0f} | {r['peak_rss_gb']:.1f} GB |"
        )
    precision = next((r["precision"] for r in record["rows"] if "precision" in r), "?")
    return lines, (
        f"{record['model']}, {precision}, batch {record['batch_size']} × {record['max_length']} tokens, "
        f"{record['steps']} timed steps, {record.get('threads', '?')} threads"
    )


def lora_table(record: dict[str, Any], labels: dict[str, str]) -> tuple[list[str], str]:
    """`dspyc bench lora`: one row per way of serving the adapter."""
    lines = ["| served as | prompt tok/s | p50 s/request | decode tok/s |", "|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(
            f"| {labels.get(r['system'], r['system'])} | {r['prompt_tokens_per_s']:.0f} | "
            f"{r['p50_latency_s']:.2f} | {r['decode_tokens_per_s']:.1f} |"
        )
    requests = "/".join(sorted({str(r.get("requests", "?")) for r in record["rows"]}))
    return lines, f"an adapter on {record['base_model']}, {requests} prompts each"


def retrieval_table(record: dict[str, Any], labels: dict[str, str]) -> tuple[list[str], str]:
    """`dspyc eval-retrieval` (its JSON under artifacts/<program>/report/): one row per corpus size."""
    names = list(record["points"][0]["scores"])
    lines = [
        "| passages (titles) | " + " | ".join(f"{n} recall@5" for n in names) + " | hybrid p50 / p99 ms | index s | "
        "BM25 MB | vectors MB | peak RSS GB |",
        "|---" * (len(names) + 6) + "|",
    ]
    for p in record["points"]:
        sc, scale = p["scores"], p.get("scale", {})
        index_s = f"{scale['index_s']:.1f}" if "index_s" in scale else "–"
        size = f"{p['passages']:,} ({p['titles']:,})"
        lines.append(
            f"| {labels.get(p['corpus'], size)} | "
            + " | ".join(f"{sc[n]['recall@5']:.3f}" for n in names)
            + f" | {scale.get('hybrid_p50_ms', 0):.1f} / {scale.get('hybrid_p99_ms', 0):.1f} | {index_s} | "
            f"{scale.get('bm25_index_mb', 0):.1f} | {scale.get('vectors_mb', 0):.1f} | {scale.get('peak_rss_gb', 0):.1f} |"
        )
    return lines, f"{record['dataset']} {record['split']}, {record['questions']} questions, seed {record['seed']}"


def renderer(record: dict[str, Any]):
    """The table for this kind of record, and the command that writes such records."""
    if "points" in record:
        return retrieval_table, "dspyc eval-retrieval"
    rows = record.get("rows") or [{}]
    if "shape" in rows[0]:
        return train_table, "dspyc bench train"
    if "system" in rows[0]:
        return lora_table, "dspyc bench lora"
    raise ValueError("no renderer for this record (rows carry neither `shape` nor `system`)")


def render(record: dict[str, Any], labels: dict[str, str] | None = None, source: str = "") -> str:
    """A block's body: a blank line, the table, a line saying where and how it was measured, a blank line."""
    table, command = renderer(record)
    lines, summary = table(record, labels or {})
    where = f"From `{source}` (`{command}`, {record.get('created', 'undated')})" if source else f"`{command}`"
    return "\n" + "\n".join(lines) + f"\n\n{where}: {summary}. {cpu_line(record)}.\n\n"


def overrides(text: str) -> dict[str, str]:
    return dict(tuple(part.strip() for part in line.split(" = ", 1)) for line in text.splitlines() if " = " in line)


def update(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """The doc with every block re-rendered, and the records whose blocks were out of step."""
    stale = []

    def one(m: re.Match) -> str:
        try:
            body = render(json.loads((root / m.group(2)).read_text()), overrides(m.group(3)), m.group(2))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"{m.group(2)}: cannot render ({type(e).__name__}: {e})") from e
        if body != m.group(4):
            stale.append(m.group(2))
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(one, text), stale


def main(argv: list[str] | None = None, doc: Path = DOC, root: Path = ROOT) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    new, stale = update(doc.read_text(), root)
    if check:
        for name in stale:
            print(f"{doc.name}: the block generated from {name} is out of step; run python -m dspyc.results_doc")
        return 1 if stale else 0
    if stale:
        write_text_atomic(doc, new)
    print(f"{doc.name}: {len(stale)} block(s) re-rendered" + (f" ({', '.join(stale)})" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
