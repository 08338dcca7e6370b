"""Reflective multi-hop RAG, sized for a 0.5B model.

Hop 1 searches with the question itself (cheap, and strong for lexical retrieval); each later hop writes a
query for the missing fact from what was found. The answer cites its passages; when it says "unknown", the
program reflects: it rewrites its last query, retrieves again and answers once more (a bounded number of
times). Every LM step is a DSPy predictor an optimizer can tune. Three calls per question at most on the
defaults: a small model gains more from one clear question than from a chain of judgements it cannot make.
"""

from __future__ import annotations

from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

import dspy

from dspyc.data.qa import QADataset, load_qa_dataset
from dspyc.metrics import exact_match, mean, normalize_answer, title_recall, token_f1
from dspyc.registry import ProgramSpec
from signatures.rag import AnswerWithCitations, GenerateQuery, RewriteQuery

UNKNOWN = {"unknown", "", "none", "not mentioned", "n/a", "no answer"}


class SharedRetriever:
    """Holds the retriever by reference: optimizers deepcopy programs, and indexes must not be copied."""

    def __init__(self, retriever):
        self.retriever = retriever

    def __deepcopy__(self, memo):
        return self

    def search(self, query: str, k: int) -> list:
        return self.retriever.search(query, k)


def _interleave(*lists: list) -> list:
    """First of each hop, then second of each, ...: the answer's context keeps every hop's best passages."""
    return [x for x in chain.from_iterable(zip_longest(*lists)) if x is not None]


class MultiHopRAG(dspy.Module):
    def __init__(self, retriever, hops: int = 2, k: int = 4, max_rewrites: int = 1, max_passages: int = 6,
                 query_passage_chars: int = 300):
        super().__init__()
        self.retriever = SharedRetriever(retriever)
        self.hops, self.k, self.max_rewrites, self.max_passages = hops, k, max_rewrites, max_passages
        self.query_passage_chars = query_passage_chars
        self.generate_query = dspy.Predict(GenerateQuery)
        self.rewrite = dspy.Predict(RewriteQuery)
        self.answer = dspy.Predict(AnswerWithCitations)

    def retrieve(self, query: str) -> list:
        return [h.passage for h in self.retriever.search(query, self.k)]

    def _context(self, per_hop: list[list]) -> list:
        seen, out = set(), []
        for p in _interleave(*per_hop):
            if p.id not in seen:
                seen.add(p.id)
                out.append(p)
        return out[: self.max_passages]

    def forward(self, question: str) -> dspy.Prediction:
        per_hop: list[list] = []
        queries: list[str] = []
        hop_titles: list[list[str]] = []  # titles retrieved up to and including each hop (for recall per hop)
        for hop in range(self.hops):
            if hop == 0:
                query = question
            else:
                # The query writer sees what was found so far, cut short: it needs the entities, not every detail.
                found = [f"{p.title}: {p.text[: self.query_passage_chars]}" for p in self._context(per_hop)]
                query = self.generate_query(question=question, passages=found).query
            per_hop.append(self.retrieve(query))
            queries.append(query)
            hop_titles.append(sorted({p.title for hits in per_hop for p in hits}))
        passages = self._context(per_hop)
        pred = self._answer(question, passages)
        rewrites = 0
        while normalize_answer(pred.answer) in UNKNOWN and rewrites < self.max_rewrites:
            query = self.rewrite(question=question, failed_query=queries[-1]).query
            # The new search's passages go first: the old context did not hold the answer.
            per_hop.insert(0, self.retrieve(query))
            queries.append(query)
            rewrites += 1
            passages = self._context(per_hop)
            pred = self._answer(question, passages)
        cited = [passages[c - 1].title for c in pred.citations if 1 <= c <= len(passages)]
        return dspy.Prediction(answer=pred.answer, citations=cited, context_titles=[p.title for p in passages],
                               queries=queries, hop_titles=hop_titles, rewrites=rewrites)

    def _answer(self, question: str, passages: list) -> dspy.Prediction:
        numbered = [f"[{i + 1}] {p.title}: {p.text}" for i, p in enumerate(passages)]
        return self.answer(question=question, passages=numbered)


# --- what dspyc needs: data, build, metric, report ---------------------------------------------------

# Split sizes: test 60 so a compile's gain shows through its interval; `--set train=… --set test=…` change them.
# `sources`: more corpora (QA folders or dataset names) routed to by query, e.g. --set sources='[wiki, /data/hotpot]'.
CONFIG = {"hops": 2, "k": 4, "max_rewrites": 1, "max_passages": 6, "retriever": "hybrid", "sources": [],
          "train": 24, "dev": 30, "test": 60}


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


def _hop(pred: dspy.Prediction, hop: int) -> list[str]:
    titles = pred.get("hop_titles") or []
    return titles[min(hop, len(titles) - 1)] if titles else []


def report(results: list[tuple[dspy.Example, dspy.Prediction]]) -> dict[str, float]:
    # A failed call leaves an empty Prediction: it counts, as a wrong answer with no context.
    return {
        "exact_match": mean(exact_match(p.get("answer", ""), ex.answer) for ex, p in results),
        "f1": mean(token_f1(p.get("answer", ""), ex.answer) for ex, p in results),
        "retrieval_recall": mean(title_recall(p.get("context_titles", []), ex.gold_titles) for ex, p in results),
        # what each hop adds, before the context is cut to max_passages (retrieval apart from answer quality)
        **{f"recall_hop{h + 1}": mean(title_recall(_hop(p, h), ex.gold_titles) for ex, p in results)
           for h in range(max((len(p.get("hop_titles") or []) for _, p in results), default=0))},
        "citation_recall": mean(title_recall(p.get("citations", []), ex.gold_titles) for ex, p in results),
    }


PROGRAM = ProgramSpec(name="rag", build=build, load_data=load_data, metric=metric, report=report, dataset="wiki",
                      default_recipe="bootstrap", config=CONFIG, learned_from=reranker_questions,
                      outputs={"answer": str, "citations": list[str], "context_titles": list[str],
                               "queries": list[str], "hop_titles": list[list[str]], "rewrites": int},
                      description="Reflective multi-hop RAG with hybrid retrieval, a reranker and cited answers.")
