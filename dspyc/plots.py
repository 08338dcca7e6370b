"""Plots people would rather look at: score per optimizer trial, and quality against cost across versions."""

from __future__ import annotations

from pathlib import Path

from dspyc import artifacts
from dspyc.settings import Settings, get_settings


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def score(m: artifacts.Manifest, split: str = "test", which: str | None = None) -> float | None:
    """A version's headline score: the program's own metric on a split (dev when test was skipped), of the
    program the version holds (`which=None`: compiled, or uncompiled where that was kept; a student's own row)
    or of `which`."""
    which = which or ("student" if m.kind == "student" else "baseline" if m.kept == "uncompiled" else "compiled")
    row = m.metrics.get(which, {}).get(split) or m.metrics.get(which, {}).get("dev") or {}
    return row.get("metric")


def tokens_per_call(m: artifacts.Manifest) -> float | None:
    calls = m.usage.get("lm_calls") or 0
    return (m.usage.get("input_tokens", 0) + m.usage.get("output_tokens", 0)) / calls if calls else None


def trials_plot(m: artifacts.Manifest, path: Path) -> Path | None:
    if not m.trials:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    best = [max(m.trials[: i + 1]) for i in range(len(m.trials))]
    ax.plot(range(1, len(m.trials) + 1), m.trials, "o", alpha=0.6, label="trial")
    ax.step(range(1, len(best) + 1), best, where="post", label="best so far")
    ax.set(xlabel="trial", ylabel="score", title=f"{m.program}@{m.version} · {m.recipe.get('name')} trials")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def quality_cost_plot(manifests: list[artifacts.Manifest], path: Path, champion: int | None = None) -> Path | None:
    points = [(m, tokens_per_call(m), score(m)) for m in manifests]
    points = [(m, x, y) for m, x, y in points if x is not None and y is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, x, y in points:
        ax.scatter(x, y, s=60, marker="*" if m.version == champion else "o", zorder=3)
        ax.annotate(
            f"v{m.version} {m.recipe.get('name', '')}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
        base = score(m, which="baseline")
        if base is not None:  # where each version started from (uncompiled, hollow): what compiling bought
            ax.scatter(x, base, s=40, facecolors="none", edgecolors="grey", zorder=2)
            ax.annotate("", (x, y), (x, base), arrowprops={"arrowstyle": "->", "alpha": 0.4})
    ax.set(
        xlabel="tokens per LM call (in + out)",
        ylabel="score on test (● compiled, ○ uncompiled)",
        title=f"{points[0][0].program}: quality vs cost across versions",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def version_plots(
    program: str, out: Path, s: Settings | None = None, upto: int | None = None, champion: int | None = None
) -> list[Path]:
    """The trial plot of the latest version (up to `upto`), the quality/cost plot of all versions, and the frontier
    of the latest cost or pareto compile."""
    s = s or get_settings()
    out.mkdir(parents=True, exist_ok=True)
    manifests = [
        artifacts.read_manifest(program, v, s, verify=False)
        for v in artifacts.versions(program, s)
        if upto is None or v <= upto
    ]
    manifests = [m for m in manifests if m.kind == "program"]
    if not manifests:
        return []
    made = [
        trials_plot(manifests[-1], out / f"trials_v{manifests[-1].version}.png"),
        quality_cost_plot(manifests, out / "quality_vs_cost.png", champion),
    ]
    if searched := next((m for m in reversed(manifests) if m.metrics.get("candidates")), None):
        made.append(frontier_plot(searched, out / f"frontier_v{searched.version}.png"))  # the latest cost search
    return [p for p in made if p]


def distill_plot(program: str, rows: list[dict], path: Path) -> Path | None:
    """Quality against cost per 1,000 calls, one point per system of a distillation table."""
    quality = next((k for k in rows[0] if k not in ("system", "pass_rate")), None) if rows else None
    if not quality:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        ax.scatter(r["cost_per_1k_calls_usd"], r[quality], s=40)
        ax.annotate(
            r["system"][:40],
            (r["cost_per_1k_calls_usd"], r[quality]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set(xlabel="$ per 1,000 calls (machine time)", ylabel=quality, title=f"{program}: teacher vs students")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


FRONTIER_PNG = "frontier.png"


def frontier_plot(m: artifacts.Manifest, path: Path) -> Path | None:
    """A cost or pareto compile's candidates: dev quality against cost per run (candidates grey, the frontier joined,
    the uncompiled program and the chosen one marked)."""
    rows = [c for c in m.metrics.get("candidates", []) if c.get("dev") is not None and c.get("dev_cost") is not None]
    if not rows:
        return None
    from dspyc.objective import COST_LABELS

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(
        [c["dev_cost"] for c in rows], [c["dev"] for c in rows], s=30, color="grey", alpha=0.6, label="candidate"
    )
    front = sorted((c for c in rows if c["frontier"]), key=lambda c: c["dev_cost"])
    ax.plot([c["dev_cost"] for c in front], [c["dev"] for c in front], "o-", color="tab:blue", label="frontier")
    for c in rows:
        if c["frontier"] or c["chosen"] or c["origin"] == "uncompiled":
            ax.annotate(
                c["name"][:32], (c["dev_cost"], c["dev"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
    base = next(c for c in rows if c["origin"] == "uncompiled")
    ax.scatter([base["dev_cost"]], [base["dev"]], s=90, marker="s", color="tab:red", zorder=3, label="uncompiled")
    for c in (c for c in rows if c["chosen"]):
        ax.scatter(
            [c["dev_cost"]], [c["dev"]], s=160, marker="*", color="gold", edgecolors="k", zorder=4, label="chosen"
        )
    obj = m.metrics["objective"]
    name = f"{m.program}@{m.version}" if m.version else m.program  # drawn before the store numbers the version
    ax.set(
        xlabel=f"{COST_LABELS[obj['cost']]} (dev)",
        ylabel="dev score",
        title=f"{name}: quality vs cost ({obj['objective']}, margin {obj['margin']:g})",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def recall_curve_plot(
    points: list[tuple[int, dict[str, dict[str, float]]]], path: Path, title: str, metric: str = "recall@5"
) -> Path | None:
    """`just eval-retrieval --add-corpus/--sizes`: `metric` against corpus size (passages, log axis), one line per
    retriever; `points` are (passages, {retriever: {metric: value}}) in corpus order."""
    points = sorted(((n, s) for n, s in points if n > 0), key=lambda p: p[0])
    names = list(dict.fromkeys(name for _, scores in points for name in scores))
    if not names:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in names:
        xy = [(n, s[name][metric]) for n, s in points if metric in s.get(name, {})]
        ax.plot([x for x, _ in xy], [y for _, y in xy], "o-", label=name)
    ax.set_xscale("log")
    sizes = sorted({n for n, _ in points})
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])  # the measured sizes, not powers of ten
    ax.minorticks_off()
    ax.set(xlabel="corpus size (passages, log scale)", ylabel=metric, ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
