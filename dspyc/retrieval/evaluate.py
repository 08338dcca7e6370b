"""Title-level retrieval metrics (HotpotQA gold is a set of supporting titles, not passages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dspyc.retrieval.types import Retriever, search_many


def recall_at_k(hits_titles: Sequence[str], gold_titles: set[str], k: int) -> float:
    """Fraction of the gold titles that appear among the titles of the top-`k` hits.

    `hits_titles` is the per-hit title list in rank order (duplicates allowed: several passages may
    share a title); an empty gold set scores 1.0 (nothing to find)."""
    if not gold_titles:
        return 1.0
    return len(gold_titles & set(hits_titles[:k])) / len(gold_titles)


def mrr(hits_titles: Sequence[str], gold_titles: set[str]) -> float:
    """Reciprocal rank (1-based) of the first hit whose title is gold; 0.0 when none is."""
    for rank, title in enumerate(hits_titles, start=1):
        if title in gold_titles:
            return 1.0 / rank
    return 0.0


def evaluate_retrievers(
    retrievers: Mapping[str, Retriever],
    questions: Sequence[tuple[str, set[str]]],
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, dict[str, float]]:
    """Mean `recall@k` for each k and `mrr` (over the top max(ks) hits) per retriever, keyed by its name."""
    ks = sorted(set(ks))
    depth = ks[-1]
    queries = [q for q, _ in questions]
    report: dict[str, dict[str, float]] = {}
    for name, retriever in retrievers.items():
        results = search_many(retriever, queries, depth)
        totals = {f"recall@{k}": 0.0 for k in ks} | {"mrr": 0.0}
        for hits, (_, gold) in zip(results, questions, strict=True):
            titles = [h.passage.title for h in hits]
            for k in ks:
                totals[f"recall@{k}"] += recall_at_k(titles, set(gold), k)
            totals["mrr"] += mrr(titles, set(gold))
        n = max(1, len(questions))
        report[name] = {m: v / n for m, v in totals.items()}
    return report


def format_report(report: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table, one retriever a row, for logs and the CLI."""
    if not report:
        return ""
    metrics = list(next(iter(report.values())))
    width = max(len(n) for n in report) + 2
    lines = ["retriever".ljust(width) + "".join(m.rjust(11) for m in metrics)]
    for name, row in report.items():
        lines.append(name.ljust(width) + "".join(f"{row[m]:11.3f}" for m in metrics))
    return "\n".join(lines)
