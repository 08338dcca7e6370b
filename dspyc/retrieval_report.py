"""`just eval-retrieval rag`: retrieval quality on its own, apart from answer quality, as a curve by corpus size.

The first point is the program's own corpus. `--add-corpus DIR` (repeatable) pools in more passages as distractors,
one point per added corpus, cumulative; `--sizes N,N,...` instead samples the pool to given sizes, the gold passages
of the split's questions always kept. Every point scores BM25, dense, hybrid and hybrid+rerank on the same questions;
the reranker is trained once, on the program's own corpus (as the program's reranker is), and reused at every size.
`--with-program` also runs the program itself (uncompiled, LM calls) at every size: its own multi-hop retrieval
(gold titles among every passage its hops read) and answer scores, a table of their own. `--encoder` adds
`dense·trained` and `hybrid·trained`: the same retrievers searching with a trained encoder (a folder,
or a version that `dspyc compile rag retriever` stored one with)."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.table import Table

from dspyc import artifacts, registry
from dspyc.console import console as make_console
from dspyc.data.qa import CorpusRow, QADataset, load_qa_dataset, read_jsonl
from dspyc.engine_tuning import cpu_summary, peak_rss_gb
from dspyc.errors import DataError, DspycError
from dspyc.retrieval import build_retrievers, evaluate_retrievers, load_encoder
from dspyc.retrieval.bm25 import BM25Retriever
from dspyc.retrieval.dense import DenseRetriever
from dspyc.retrieval.rerank import RerankedRetriever
from dspyc.retrieval.types import Retriever
from dspyc.settings import get_settings
from dspyc.stats import percentile

console = make_console()

Row = Mapping[str, str]  # a corpus row: {"title", "text"}
Question = tuple[str, set[str]]  # (question, gold titles)


@dataclass(frozen=True)
class Corpus:
    """One point of the curve before scoring: a label and the corpus rows indexed there."""

    label: str
    rows: list[Row]


@dataclass(frozen=True)
class Run:
    """What the curve was measured on: the JSON's header."""

    dataset: str
    version: str
    split: str
    seed: int
    questions: int
    reranker_train_questions: int


@dataclass(frozen=True)
class Point:
    """One point of the curve: the corpus's label and size, and recall@k / MRR per retriever."""

    corpus: str
    passages: int
    titles: int
    scores: dict[str, dict[str, float]]
    scale: dict[str, float] = field(default_factory=dict)  # what the size costs: `measure_scale`
    program: dict[str, float] = field(default_factory=dict)  # the program's own scores there (`--with-program`)


def report(
    program: str,
    data: str | None = None,
    split: str = "dev",
    seed: int = 0,
    ks: tuple[int, ...] = (1, 5, 10),
    add_corpus: Sequence[str] = (),
    sizes: Sequence[int] = (),
    encoder: Path | None = None,
    with_program: bool = False,
) -> list[Point]:
    """Score every retriever at every corpus size; print one table, write the JSON and the recall@5 plot."""
    spec = registry.get(program)
    dataset = spec.load_data(data or spec.dataset, seed)
    train = _questions(dataset.outside("dev", "test"))
    questions = _questions(dataset.splits[split])
    own = dataset.documents
    extras = [load_distractors(ref) for ref in add_corpus]  # every folder is read before anything is indexed
    corpora = cumulative(dataset.name, own, extras)
    if sizes:
        gold = {t for _, titles in questions for t in titles}
        corpora = sample(corpora[-1].rows, len(own), gold, sizes, seed)
    points = curve(corpora, own, train, questions, ks, encoder)
    if with_program:
        points = [replace(p, program=program_scores(spec, dataset, c.rows, split)) for p, c in zip(points, corpora)]
    print_table(points, f"{dataset.name}@{dataset.version} · {split} · {len(questions)} questions · gold titles")
    write(program, Run(dataset.name, dataset.version, split, seed, len(questions), len(train)), points)
    return points


def _questions(examples: Sequence) -> list[Question]:
    return [(ex.question, set(ex.gold_titles)) for ex in examples]


def load_distractors(ref: str) -> tuple[str, list[Row]]:
    """(name, corpus rows) of an `--add-corpus` value: a QA folder or dataset name, a folder with only a
    corpus.jsonl (a distractor pool has no questions), or `enwik8` (~8.5k Wikipedia articles, built on first use)."""
    path = Path(ref).expanduser()
    if ref == "enwik8" and not path.exists():
        from dspyc.data.wikipedia import enwik8_corpus

        path = enwik8_corpus(get_settings().cache_dir).parent
    try:
        if path.is_dir() and not (path / "questions.jsonl").is_file():
            return path.name, [r.model_dump() for r in read_jsonl(path / "corpus.jsonl", CorpusRow)]
        dataset = load_qa_dataset(ref)
    except DataError as exc:
        raise DspycError(f"--add-corpus {ref}: {exc}") from None
    return dataset.name, dataset.documents


def cumulative(name: str, own: list[Row], extras: Sequence[tuple[str, list[Row]]]) -> list[Corpus]:
    """The program's corpus, then + each added corpus in turn. An added row whose title is already in the corpus
    is left out (a gold paragraph stays the only one of its title); an added corpus's own rows may share a title."""
    rows, titles = list(own), {r["title"] for r in own}
    out = [Corpus(name, rows)]
    for extra_name, extra in extras:
        new = [r for r in extra if r["title"] not in titles]
        titles |= {r["title"] for r in new}
        rows = rows + new
        out.append(Corpus(f"+ {extra_name}", rows))
    return out


def sample(pool: list[Row], own: int, gold: set[str], sizes: Sequence[int], seed: int) -> list[Corpus]:
    """The pool cut to each size: the gold rows, then the program's other rows, then the added ones (each group in a
    seeded order), so a larger size holds every row of a smaller one. Rows keep their pool order."""
    keep = [i for i, r in enumerate(pool) if r["title"] in gold]
    rng = random.Random(seed)
    own_rest = [i for i in range(own) if pool[i]["title"] not in gold]
    added = [i for i in range(own, len(pool)) if pool[i]["title"] not in gold]
    rng.shuffle(own_rest)
    rng.shuffle(added)
    order = keep + own_rest + added
    for n in sizes:
        if n < len(keep) or n > len(pool):
            raise DspycError(
                f"--sizes {n}: a size must lie between the {len(keep)} gold passages of the split's "
                f"questions and the {len(pool)} passages of the pool (more with --add-corpus)"
            )
    return [Corpus(f"sample {n}", [pool[i] for i in sorted(order[:n])]) for n in sorted(set(sizes))]


def encoder_folder(ref: str) -> Path:
    """`--encoder`: a version that stores a trained encoder (rag@5), or a model folder."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DspycError(f"--encoder {ref}: the folder holds no model (config.json missing)")
        return path
    if "@" not in ref:
        raise DspycError(f"--encoder {ref!r}: neither a folder nor a version such as rag@5")
    from dspyc import loading

    name, tag = artifacts.parse_ref(ref)
    version = loading.resolve_version(name, tag)
    manifest = artifacts.read_manifest(name, version)
    if manifest.encoder is None:
        raise DspycError(f"{name}@{version} stores no trained encoder (compile one: just compile {name} retriever)")
    return artifacts.program_dir(name) / str(version) / manifest.encoder.path


def parse_sizes(text: str | None) -> tuple[int, ...]:
    """`2000,6000,20k` → (2000, 6000, 20000)."""
    if not text:
        return ()
    try:
        return tuple(
            int(float(s[:-1]) * 1000) if s.lower().endswith("k") else int(s)
            for s in (p.strip() for p in text.split(","))
        )
    except ValueError:
        raise DspycError(
            f"--sizes {text!r}: expected passage counts separated by commas, e.g. 2000,6000 or 2k,6k"
        ) from None


def curve(
    corpora: Sequence[Corpus],
    own: list[Row],
    train: list[Question],
    questions: list[Question],
    ks: tuple[int, ...],
    encoder: Path | None = None,
) -> list[Point]:
    with console.status(
        f"the program's corpus: indexes (cached by corpus hash) and the reranker ({len(train)} questions "
        "outside dev and test)"
    ):
        base = build_retrievers(own, train_questions=train)
    points = []
    for c in corpora:
        with console.status(
            f"{c.label}: {len(c.rows)} passages: indexes (vectors cached by text) and {len(questions)} questions"
        ):
            t0 = time.perf_counter()
            retrievers = base if c.rows == own else retrievers_at(c.rows, base.get("hybrid+rerank"))
            index_s = time.perf_counter() - t0
            scale = measure_scale(retrievers, [q for q, _ in questions], index_s if c.rows != own else None)
            if encoder is not None:
                retrievers = retrievers | with_encoder(c.rows, encoder)
            scores = evaluate_retrievers(retrievers, questions, ks=ks)
        points.append(Point(c.label, len(c.rows), len({r["title"] for r in c.rows}), scores, scale))
    return points


def measure_scale(retrievers: Mapping[str, Retriever], queries: list[str], index_s: float | None) -> dict[str, float]:
    """Hybrid search's p50/p99 latency one query at a time (k=10), the BM25 index and the vectors on disk, the
    process's peak RSS so far, and the wall time the indexes took here (None: built before, with the reranker)."""
    hybrid, bm25, dense = retrievers["hybrid"], retrievers["bm25"], retrievers["dense"]
    assert isinstance(bm25, BM25Retriever) and isinstance(dense, DenseRetriever)  # what build_retrievers makes
    hybrid.search(queries[0], 10)  # warm: the first query pays for lazy loads
    ms = []
    for q in queries:
        t0 = time.perf_counter()
        hybrid.search(q, 10)
        ms.append(1000 * (time.perf_counter() - t0))
    bm25_dir = bm25.index_dir
    out = {
        "hybrid_p50_ms": percentile(ms, 50),
        "hybrid_p99_ms": percentile(ms, 99),
        "bm25_index_mb": sum(f.stat().st_size for f in bm25_dir.rglob("*") if f.is_file()) / 1e6 if bm25_dir else 0.0,
        "vectors_mb": len(dense.passages) * dense.dimension * 4 / 1e6,  # float32
        "peak_rss_gb": peak_rss_gb(),
    }
    return out | ({"index_s": index_s} if index_s is not None else {})


def with_encoder(rows: list[Row], encoder: Path) -> dict[str, Retriever]:
    """Dense and hybrid over `rows` searching with a trained encoder (its vectors cached like any embedder's)."""
    out = build_retrievers(rows, embedder=load_encoder(encoder))
    return {"dense·trained": out["dense"], "hybrid·trained": out["hybrid"]}


def retrievers_at(rows: list[Row], reranked: Retriever | None) -> dict[str, Retriever]:
    """BM25, dense and hybrid over `rows`, and hybrid+rerank with the reranker trained on the program's corpus."""
    out = build_retrievers(rows)
    if isinstance(reranked, RerankedRetriever):
        out["hybrid+rerank"] = RerankedRetriever(out["hybrid"], reranked.reranker, fanout=reranked.fanout)
    return out


def print_table(points: Sequence[Point], title: str) -> None:
    metrics = list(next(iter(points[0].scores.values()), {})) if points else []
    table = Table("corpus", "passages", "retriever", *metrics, title=title)
    for point in points:
        for i, (name, row) in enumerate(point.scores.items()):
            first = i == 0
            table.add_row(
                point.corpus if first else "",
                f"{point.passages:,}" if first else "",
                name,
                *(f"{row[m]:.3f}" for m in metrics),
                end_section=i == len(point.scores) - 1,
            )
    console.print(table)
    print_scale(points)
    print_program(points)


SCALE_COLUMNS = {  # Point.scale key -> header
    "index_s": "index s",
    "bm25_index_mb": "BM25 MB",
    "vectors_mb": "vectors MB",
    "hybrid_p50_ms": "hybrid p50 ms",
    "hybrid_p99_ms": "hybrid p99 ms",
    "peak_rss_gb": "peak RSS GB",
}


def program_scores(spec: registry.ProgramSpec, dataset: QADataset, rows: list[Row], split: str) -> dict[str, float]:
    """The program as built (its default config, uncompiled) over `rows` instead of its corpus, run on the split
    through the configured LM: every score its `report` gives (rag: retrieval_recall, recall_hop1/2, f1, ...)."""
    from dspyc.compiler import evaluate
    from dspyc.lm import configure

    s = get_settings()
    configure(s)
    data = replace(dataset, corpus=[CorpusRow(title=r["title"], text=r["text"]) for r in rows])
    program = spec.build(data, spec.config)
    run = evaluate(program, dataset.splits[split], spec, s.num_threads, f"the program over {len(rows):,} passages")
    return {k: float(v) for k, v in run.scores.items() if k != "errors"}


def print_program(points: Sequence[Point]) -> None:
    """The program's own scores per corpus size (`--with-program`)."""
    keys = list(points[0].program) if points and points[0].program else []
    if not keys:
        return
    table = Table("corpus", "passages", *keys, title="the program itself (uncompiled, its own multi-hop retrieval)")
    for p in points:
        table.add_row(p.corpus, f"{p.passages:,}", *(f"{p.program.get(k, 0.0):.3f}" for k in keys))
    console.print(table)


def print_scale(points: Sequence[Point]) -> None:
    """What each corpus size costs: index build time, index and vectors on disk, hybrid latency, memory."""
    table = Table("corpus", "passages", *SCALE_COLUMNS.values(), title="what each size costs (hybrid, k=10)")
    for p in points:
        cells = [f"{p.scale[k]:,.1f}" if k in p.scale else "–" for k in SCALE_COLUMNS]
        table.add_row(p.corpus, f"{p.passages:,}", *cells)
    console.print(table)


def write(program: str, run: Run, points: list[Point]) -> Path:
    """The JSON (every size) and the recall@5 plot under artifacts/<program>/report/."""
    from dspyc.plots import recall_curve_plot

    out = artifacts.program_dir(program) / "report" / f"retrieval-{run.dataset}-{run.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(
        out,
        asdict(run) | {"points": [asdict(p) for p in points], "created": artifacts.now_iso(), "cpu": cpu_summary()},
    )
    png = recall_curve_plot(
        [(p.passages, p.scores) for p in points],
        out.with_suffix(".png"),
        f"{program} · {run.dataset} · {run.split}: recall@5 by corpus size",
    )
    console.print(f"[dim]written {out}{f' and {png.name}' if png else ''}[/dim]")
    return out
