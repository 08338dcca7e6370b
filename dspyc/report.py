"""What a program's versions look like side by side: `dspyc versions` (a table) and `dspyc report` (plots + markdown)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from dspyc import artifacts, plots, tracking
from dspyc.console import console as make_console
from dspyc.errors import ArtifactError
from dspyc.settings import Settings, get_settings

console = make_console()


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def version_rows(program: str, s: Settings | None = None) -> list[dict]:
    """One row per version in the artifact store, joined with its registry aliases."""
    s = s or get_settings()
    have = artifacts.versions(program, s)
    if not have:
        raise ArtifactError(f"no compiled versions of {program!r}: run `just compile {program}` first")
    try:
        alias_of = tracking.aliases(program, s)
    except Exception as exc:  # the table still shows what is on disk
        console.print(f"[yellow]registry unreachable[/yellow] ({type(exc).__name__}); aliases not shown")
        alias_of = {}
    rows = []
    for v in have:
        m = artifacts.read_manifest(program, v, s, verify=False)
        rows.append(
            {
                "version": v,
                "aliases": alias_of.get(v, []),
                "kind": m.kind,
                "recipe": m.recipe.get("name", ""),
                "dataset": f"{m.dataset.name}@{m.dataset.version}",
                "dev": plots.score(m, "dev"),
                "test": plots.score(m, "test"),
                "tokens": m.usage.get("input_tokens", 0) + m.usage.get("output_tokens", 0),
                "tokens_per_call": plots.tokens_per_call(m),
                "created": m.created,
                "manifest": m,
                "lm": m.lm.served_name or m.lm.model,
                "kept": m.kept,
            }
        )
    return rows


def print_versions(program: str, s: Settings | None = None) -> None:
    rows = version_rows(program, s)
    table = Table(title=f"{program}: versions (score = the program's metric, of the program each version holds)")
    for col in ("version", "alias", "recipe", "lm", "dataset", "dev", "test", "tokens", "created"):
        table.add_column(col, justify="right" if col in ("version", "dev", "test", "tokens") else "left")
    for r in rows:
        recipe = r["recipe"] + (" (uncompiled kept)" if r["kept"] == "uncompiled" else "")
        table.add_row(
            str(r["version"]),
            ", ".join(r["aliases"]),
            recipe,
            r["lm"],
            r["dataset"],
            _fmt(r["dev"]),
            _fmt(r["test"]),
            f"{r['tokens']:,}",
            r["created"].replace("T", " ")[:16],
        )
    console.print(table)


def write_report(program: str, out: Path | None = None, s: Settings | None = None) -> Path:
    """Plots (trials of the latest version, quality vs cost of all) and `report.md` under artifacts/<program>/report/."""
    s = s or get_settings()
    rows = version_rows(program, s)
    out = out or artifacts.program_dir(program, s) / "report"
    champion = next((r["version"] for r in rows if tracking.CHAMPION in r["aliases"]), None)
    figures = plots.version_plots(program, out, s, champion=champion)
    lines = [
        f"# {program}: compiled versions",
        "",
        f"Champion: {f'v{champion}' if champion else 'none'}. Scores are the program's metric on the split "
        "(compiled, or uncompiled where that was kept for scoring higher on dev; uncompiled in brackets). "
        "Tokens are all LM tokens of the compile run.",
        "",
        "| version | alias | recipe | dataset | dev | test | tokens/call | tokens | created |",
        "|---:|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m = r["manifest"]
        base = {split: plots.score(m, split, "baseline") for split in ("dev", "test")}
        lines.append(
            f"| {r['version']} | {', '.join(r['aliases'])} | {r['recipe']} | {r['dataset']} | "
            f"{_fmt(r['dev'])} ({_fmt(base['dev'])}) | {_fmt(r['test'])} ({_fmt(base['test'])}) | "
            f"{_fmt(r['tokens_per_call'], 0)} | {r['tokens']:,} | {r['created'][:16]} |"
        )
    lines += ["", *(f"![{f.stem}]({f.name})" for f in figures), ""]
    artifacts.write_text_atomic(out / "report.md", "\n".join(lines))
    return out / "report.md"
