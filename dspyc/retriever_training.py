"""`TrainRetriever`: compile the retriever into weights. The program's bi-encoder learns the program's corpus.

Questions outside dev and test, with their gold titles, become (question, gold passage, BM25 hard negative)
triplets; the packaged MiniLM is fine-tuned on them (`dspyc.retrieval.encoder`), cached by the triplets and the
settings. The trained encoder is kept only if the program's retriever finds more gold titles on dev with it, the
paired-bootstrap interval of recall@k above 0; otherwise the stage returns the program as it came. A kept encoder is
stored in the version folder (hash-checked like an adapter) and the program is rebuilt with its `encoder_key` set to
it; the corpus is embedded once per encoder (the vector cache is keyed by the model's weights and the corpus).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field

from dspyc.console import console as make_console
from dspyc.errors import DspycError
from dspyc.finetune import CompileContext
from dspyc.stats import paired_bootstrap

console = make_console()


class TrainRetrieverParams(BaseModel):
    """A retriever recipe's `params` (optimizers/retriever.yaml)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=2)  # in-batch negatives: a larger batch gives each question more of them
    learning_rate: float = Field(3e-5, gt=0)
    max_length: int = Field(256, ge=16)
    negatives: int = Field(3, ge=1)  # BM25 hard negatives per question (one per non-gold title)
    max_pairs: int = Field(4000, ge=1)
    retriever: Literal["dense", "hybrid"] = "hybrid"  # whose dev recall decides
    k: int = Field(5, ge=1)  # recall@k on dev


class EncoderResult(BaseModel):
    """What a retriever stage leaves: the trained encoder (in the cache until the compile saves it), whether dev
    recall kept it, and what it cost."""

    path: str
    base_model: str
    triplets: int
    questions: int
    train_wall_s: float | None  # None: the same triplets and settings had trained before and were reused
    retriever: str
    k: int
    recall_before: float
    recall_after: float
    delta: dict[str, float]  # {"mean", "low", "high", "p", "n"}
    kept: bool
    learned_from: list[str] = []  # ids of the questions it trained on (never held out by a later re-optimization)


class TrainRetriever:
    """dspyc's retriever optimizer (`optimizer: TrainRetriever` in a recipe): see the module docstring."""

    def __init__(self, metric, context: CompileContext, seed: int = 0, **kwargs: Any):
        self.metric, self.context, self.seed = metric, context, seed
        self.params = TrainRetrieverParams(**kwargs)
        self.result: EncoderResult | None = None

    def compile(self, student: dspy.Module, *, trainset: list[dspy.Example]) -> dspy.Module:
        ctx, p = self.context, self.params
        spec = ctx.spec.retrieval  # registry.RetrievalSpec
        if spec is None:
            raise DspycError(f"{ctx.program} has no retriever to train (its ProgramSpec sets no `retrieval`)")
        from dspyc.retrieval import build_retrievers, load_encoder

        docs = spec.documents(ctx.dataset)
        outside = ctx.dataset.outside("dev", "test")  # never dev or test
        pool = [spec.gold(ex) for ex in outside]
        base = build_retrievers(docs)
        path, n_triplets, wall = self.train(pool, base["bm25"])
        trained = build_retrievers(docs, embedder=load_encoder(path))
        dev = [spec.gold(ex) for ex in ctx.dataset.splits["dev"]]
        before, after = (dev_recall(r[p.retriever], dev, p.k) for r in (base, trained))
        mean, (low, high), pval = paired_bootstrap(after, before, seed=self.seed)
        kept = low > 0
        self.result = EncoderResult(
            path=str(path),
            base_model=ctx.settings.embed_model,
            triplets=n_triplets,
            questions=len(pool),
            train_wall_s=wall,
            retriever=p.retriever,
            k=p.k,
            recall_before=sum(before) / len(before),
            recall_after=sum(after) / len(after),
            delta={"mean": mean, "low": low, "high": high, "p": pval, "n": len(dev)},
            kept=kept,
            learned_from=[str(ex.get("id")) for ex in outside],
        )
        console.print(self.summary())
        if not kept:
            return student
        return rebuild(student, ctx, {spec.encoder_key: str(path)})

    def train(self, questions: list[tuple[str, set[str]]], bm25) -> tuple[Path, int, float | None]:
        """(encoder folder, triplets, training seconds or None when reused) for these questions."""
        from dspyc.retrieval.encoder import DONE, train_encoder, triplets
        from dspyc.retrieval.rerank import build_training_pairs, pairs_hash

        p, s = self.params, self.context.settings
        pairs = build_training_pairs(questions, bm25, bm25, p.negatives, max_pairs=p.max_pairs, seed=self.seed)
        data = triplets(pairs, self.seed)
        if not data:
            raise DspycError("no retriever training data: no question outside dev and test has a gold passage")
        settings = p.model_dump(exclude={"retriever", "k"}) | {"base": s.embed_model, "seed": self.seed}
        out = s.cache_dir / "encoders" / pairs_hash(data, **settings)
        reused = (out / DONE).is_file()
        console.print(
            f"training the retriever's encoder ({s.embed_model}): {len(data)} triplets from {len(questions)} "
            f"questions × {p.epochs} epochs, batch {p.batch_size}" + (" · reused" if reused else "")
        )
        t0 = time.perf_counter()
        train_encoder(
            data,
            out,
            epochs=p.epochs,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            max_length=p.max_length,
            base_model=s.embed_model,
            seed=self.seed,
        )
        return out, len(data), None if reused else round(time.perf_counter() - t0, 1)

    def summary(self) -> str:
        r = self.result
        d = r.delta
        return (
            f"{r.retriever} recall@{r.k} on dev: {r.recall_before:.3f} → {r.recall_after:.3f} "
            f"(Δ {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]) · "
            + ("encoder kept" if r.kept else "encoder not kept: the interval does not lie above 0")
        )


def dev_recall(retriever, questions: list[tuple[str, set[str]]], k: int) -> list[float]:
    """Per-question recall@k of gold titles (the paired scores the keep rule compares)."""
    from dspyc.retrieval import recall_at_k, search_many

    results = search_many(retriever, [q for q, _ in questions], k)
    return [recall_at_k([h.passage.title for h in hits], gold, k) for hits, (_, gold) in zip(results, questions)]


def rebuild(student: dspy.Module, ctx: CompileContext, update: dict[str, Any]) -> dspy.Module:
    """The program built again with `update` over its config, carrying the student's prompts (a prompt stage's
    demos and instructions survive a retriever stage)."""
    program = ctx.spec.build(ctx.dataset, ctx.config | update)
    program.load_state(student.dump_state())
    return program


def usage(r: EncoderResult) -> dict[str, Any]:
    """A retriever stage's cost and effect, as the manifest and MLflow record it (numbers only)."""
    return {
        "triplets": r.triplets,
        "questions": r.questions,
        "train_wall_s": r.train_wall_s or 0.0,
        "reused": int(r.train_wall_s is None),
        "k": r.k,  # MLflow names take no "@": recall@k is dev_recall_before/after with k beside them
        "dev_recall_before": r.recall_before,
        "dev_recall_after": r.recall_after,
    }
