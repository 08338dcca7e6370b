"""`just eval-retrieval rag`: retrieval quality on its own, apart from answer quality."""

from __future__ import annotations

from rich.table import Table

from dspyc import artifacts, registry
from dspyc.console import console as make_console
from dspyc.retrieval import build_retrievers, evaluate_retrievers

console = make_console()


def report(program: str = "rag", data: str | None = None, split: str = "dev", seed: int = 0,
           ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    spec = registry.get(program)
    dataset = spec.load_data(data or spec.dataset, seed)
    train = [(ex.question, set(ex.gold_titles)) for ex in dataset.outside("dev", "test")]
    with console.status(f"building indexes (cached by corpus hash) and the reranker ({len(train)} questions outside dev and test)"):
        retrievers = build_retrievers(dataset.documents, train_questions=train)
    questions = [(ex.question, set(ex.gold_titles)) for ex in dataset.splits[split]]
    scores = evaluate_retrievers(retrievers, questions, ks=ks)
    first = next(iter(scores.values()))
    table = Table("retriever", *first.keys(), title=f"{dataset.name}@{dataset.version} · {split} · {len(questions)} questions · gold titles")
    for name, row in scores.items():
        table.add_row(name, *(f"{v:.3f}" for v in row.values()))
    console.print(table)
    out = artifacts.program_dir(program) / "report" / f"retrieval-{dataset.name}-{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(out, {"dataset": dataset.name, "version": dataset.version, "split": split, "seed": seed,
                                      "questions": len(questions), "reranker_train_questions": len(train),
                                      "scores": scores, "created": artifacts.now_iso()})
    console.print(f"[dim]written {out}[/dim]")
    return scores
