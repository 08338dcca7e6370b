"""Reflective multi-hop RAG.

Each hop retrieves, judges whether the context supports an answer (rewriting the query and retrieving
again when it does not, a bounded number of times), takes notes, and writes the next hop's query from
the notes. The answer cites the passages it used. Every step is a DSPy predictor an optimizer can tune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dspy

from dspyc.data.qa import QADataset, load_qa_dataset
from dspyc.metrics import exact_match, mean, title_recall, token_f1
from dspyc.registry import ProgramSpec
from signatures.rag import AnswerWithCitations, GenerateQuery, JudgeContext, RewriteQuery, TakeNotes


class SharedRetriever:
    """Holds the retriever by reference: optimizers deepcopy programs, and indexes must not be copied."""

    def __init__(self, retriever):
        self.retriever = retriever

    def __deepcopy__(self, memo):
        return self

    def search(self, query: str, k: int) -> list:
        return self.retriever.search(query, k)


class MultiHopRAG(dspy.Module):
    def __init__(self, retriever, hops: int = 2, k: int = 3, max_rewrites: int = 1, max_passages: int = 6):
        super().__init__()
        self.retriever = SharedRetriever(retriever)
        self.hops, self.k, self.max_rewrites, self.max_passages = hops, k, max_rewrites, max_passages
        self.generate_query = dspy.Predict(GenerateQuery)
        self.judge = dspy.Predict(JudgeContext)
        self.rewrite = dspy.Predict(RewriteQuery)
        self.take_notes = dspy.Predict(TakeNotes)
        self.answer = dspy.ChainOfThought(AnswerWithCitations)

    def retrieve(self, query: str) -> list:
        return self.retriever.search(query, self.k)

    def forward(self, question: str) -> dspy.Prediction:
        context: dict[str, Any] = {}  # passage id -> passage, in retrieval order
        notes: list[str] = []
        queries: list[str] = []
        rewrites = 0
        for hop in range(self.hops):
            # The first hop searches with the question itself: cheap, and strong for lexical retrieval.
            query = question if hop == 0 else self.generate_query(question=question, notes=notes).query
            hits = self.retrieve(query)
            for _ in range(self.max_rewrites):
                texts = [h.passage.text for h in hits]
                if self.judge(question=question, passages=texts).supported:
                    break
                query = self.rewrite(question=question, failed_query=query).query
                hits = self.retrieve(query)
                rewrites += 1
            queries.append(query)
            new = [h.passage for h in hits if h.passage.id not in context]
            context.update((p.id, p) for p in new)
            if hop < self.hops - 1 and new:
                notes = [*notes, *self.take_notes(question=question, passages=[p.text for p in new]).notes][-6:]
        passages = list(context.values())[: self.max_passages]
        numbered = [f"[{i + 1}] {p.title}: {p.text}" for i, p in enumerate(passages)]
        pred = self.answer(question=question, passages=numbered)
        cited = [passages[c - 1].title for c in pred.citations if 1 <= c <= len(passages)]
        return dspy.Prediction(answer=pred.answer, reasoning=getattr(pred, "reasoning", ""), citations=cited,
                               context_titles=[p.title for p in passages], queries=queries, notes=notes,
                               rewrites=rewrites)


# --- what dspyc needs: data, build, metric, report ---------------------------------------------------

# Sizes fit a 2-core CPU engine (~25 min for `just compile rag`); raise them where a GPU serves the LM.
# `sources`: more corpora (QA folders or dataset names) routed to by query, e.g. --set sources='[wiki, /data/hotpot]'.
CONFIG = {"hops": 2, "k": 3, "max_rewrites": 1, "max_passages": 6, "retriever": "hybrid", "sources": [],
          "train": 8, "dev": 10, "test": 20}


def load_data(dataset: str, seed: int) -> QADataset:
    data = load_qa_dataset(dataset)
    data.split(seed, CONFIG["train"], CONFIG["dev"], CONFIG["test"])
    return data


def build(data: QADataset, config: dict[str, Any]) -> MultiHopRAG:
    cfg = CONFIG | config
    return MultiHopRAG(build_retriever(data, cfg), hops=cfg["hops"], k=cfg["k"], max_rewrites=cfg["max_rewrites"],
                       max_passages=cfg["max_passages"])


def build_retriever(data: QADataset, cfg: dict[str, Any]):
    """The configured retriever over the dataset's corpus; with `sources` (more QA folders or dataset names),
    one retriever per corpus behind a semantic router that sends each query to the closest corpus."""
    from dspyc.retrieval import SemanticRouter, build_retrievers, chunk_documents, describe_with_samples, load_embedder

    train = [(ex.question, set(ex.gold_titles)) for ex in _reranker_pool(data, cfg)] or None
    corpora = {data.name: data.documents} | {Path(src).name: load_qa_dataset(src).documents for src in cfg.get("sources", [])}
    per_source = {name: build_retrievers(docs, train_questions=train if name == data.name else None)[cfg["retriever"]]
                  for name, docs in corpora.items()}
    if len(per_source) == 1:
        return per_source[data.name]
    descriptions = {name: describe_with_samples(chunk_documents(docs)) for name, docs in corpora.items()}
    return SemanticRouter(per_source, descriptions, load_embedder())


def _reranker_pool(data: QADataset, config: dict[str, Any]) -> list[dspy.Example]:
    """What the reranker learns from: every question outside dev and test (its training costs no LM calls)."""
    return data.outside("dev", "test") if "rerank" in (CONFIG | config)["retriever"] else []


def reranker_questions(data: QADataset, config: dict[str, Any]) -> list[str]:
    return [ex.id for ex in _reranker_pool(data, config)]


def metric(example: dspy.Example, pred: dspy.Prediction, trace=None) -> float | bool:
    f1 = token_f1(pred.answer, example.answer)
    # While bootstrapping demos (trace is set), keep only traces whose answer is clearly right.
    return f1 >= 0.6 if trace is not None else f1


def report(results: list[tuple[dspy.Example, dspy.Prediction]]) -> dict[str, float]:
    # A failed call leaves an empty Prediction: it counts, as a wrong answer with no context.
    return {
        "exact_match": mean(exact_match(p.get("answer", ""), ex.answer) for ex, p in results),
        "f1": mean(token_f1(p.get("answer", ""), ex.answer) for ex, p in results),
        "retrieval_recall": mean(title_recall(p.get("context_titles", []), ex.gold_titles) for ex, p in results),
        "citation_recall": mean(title_recall(p.get("citations", []), ex.gold_titles) for ex, p in results),
    }


PROGRAM = ProgramSpec(name="rag", build=build, load_data=load_data, metric=metric, report=report, dataset="wiki",
                      default_recipe="bootstrap", config=CONFIG, learned_from=reranker_questions,
                      outputs={"answer": str, "reasoning": str, "citations": list[str], "context_titles": list[str],
                               "queries": list[str], "notes": list[str], "rewrites": int},
                      description="Reflective multi-hop RAG with hybrid retrieval, a reranker and cited answers.")
