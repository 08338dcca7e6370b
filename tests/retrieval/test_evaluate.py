import pytest

from dspyc.retrieval.evaluate import evaluate_retrievers, format_report, mrr, recall_at_k
from dspyc.retrieval.types import Hit, Passage, Retriever


def test_recall_at_k():
    titles = ["A", "X", "A", "B", "Y"]
    assert recall_at_k(titles, {"A", "B"}, 1) == 0.5
    assert recall_at_k(titles, {"A", "B"}, 3) == 0.5  # a repeated title counts once
    assert recall_at_k(titles, {"A", "B"}, 4) == 1.0
    assert recall_at_k(titles, {"Z"}, 5) == 0.0
    assert recall_at_k([], {"A"}, 5) == 0.0
    assert recall_at_k(titles, set(), 5) == 1.0


def test_mrr():
    assert mrr(["X", "Y", "A"], {"A", "B"}) == pytest.approx(1 / 3)
    assert mrr(["B", "A"], {"A", "B"}) == 1.0
    assert mrr(["X"], {"A"}) == 0.0
    assert mrr([], {"A"}) == 0.0


class ByQuery(Retriever):
    name = "fake"

    def __init__(self, answers):
        self.answers = answers

    def search(self, query, k):
        return [Hit(Passage(f"{t}#0", t, ""), 1.0) for t in self.answers[query][:k]]


def test_evaluate_retrievers_averages_over_questions():
    r = ByQuery({"q1": ["A", "B"], "q2": ["X", "C", "D"]})
    questions = [("q1", {"A", "B"}), ("q2", {"C", "D"})]
    report = evaluate_retrievers({"fake": r}, questions, ks=(1, 2, 3))
    assert report == {"fake": pytest.approx({"recall@1": 0.25, "recall@2": 0.75, "recall@3": 1.0, "mrr": 0.75})}
    text = format_report(report)
    assert "recall@1" in text and "fake" in text and "0.750" in text
