"""`evaluate_many`: several (label, module, examples) evaluations in one pool give each the Evaluation it gets
alone (rows in example order, a failed call an error row scored 0), and they really share the pool.
Toy modules, no LM calls."""

import threading
import time

import dspy
import pytest

from dspyc import compiler, registry


def _metric(example, pred, trace=None):
    return float(pred.get("answer", "") == example.answer)


SPEC = registry.ProgramSpec(
    name="toy",
    build=lambda data, cfg: None,
    load_data=lambda name, seed: None,
    metric=_metric,
    dataset="unused",
    report=lambda results: {"answered": sum(bool(p.get("answer")) for _, p in results) / max(len(results), 1)},
)

EXAMPLES = [dspy.Example(id=f"q{i}", question=f"question {i}", answer=str(i)).with_inputs("question") for i in range(9)]


class Echo(dspy.Module):
    """Right when the question's number is a multiple of `every`; later questions answer first; `fail` raises."""

    def __init__(self, every: int, fail: frozenset[int] = frozenset(), barrier: threading.Barrier | None = None):
        super().__init__()
        self.every, self.fail, self.barrier = every, fail, barrier

    def forward(self, question: str) -> dspy.Prediction:
        i = int(question.split()[-1])
        if self.barrier is not None:
            self.barrier.wait()
        time.sleep(0.002 * (len(EXAMPLES) - i))  # completion order differs from example order
        if i in self.fail:
            raise RuntimeError(f"engine error on {question}")
        return dspy.Prediction(answer=str(i) if i % self.every == 0 else "wrong")


def test_two_jobs_in_one_pool_equal_two_evaluations():
    a, b = Echo(2), Echo(3)
    many = compiler.evaluate_many([("a", a, EXAMPLES), ("b", b, EXAMPLES[:5])], SPEC, num_threads=4)
    alone = [compiler.evaluate(a, EXAMPLES, SPEC, 4, "a"), compiler.evaluate(b, EXAMPLES[:5], SPEC, 1, "b")]
    assert many == alone
    assert many[0].scores == {"answered": 1.0, "metric": round(5 / 9, 4), "errors": 0}
    assert many[1].per_example == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_rows_follow_the_examples_order():
    (ev,) = compiler.evaluate_many([("a", Echo(1), EXAMPLES)], SPEC, num_threads=len(EXAMPLES))
    assert [r["id"] for r in ev.rows] == [ex.id for ex in EXAMPLES]
    assert [r["outputs"]["answer"] for r in ev.rows] == [ex.answer for ex in EXAMPLES]
    assert ev.rows[0] == {
        "id": "q0",
        "inputs": {"question": "question 0"},
        "gold": {"id": "q0", "answer": "0"},
        "outputs": {"answer": "0"},
        "score": 1.0,
    }


def test_a_failed_call_is_an_error_row_scored_zero_and_the_rest_go_on():
    failing, fine = Echo(1, fail=frozenset({4})), Echo(1)
    ev, other = compiler.evaluate_many([("failing", failing, EXAMPLES), ("fine", fine, EXAMPLES)], SPEC, num_threads=3)
    assert ev.rows[4]["outputs"] == {} and ev.rows[4]["score"] == 0.0
    assert [r["score"] for i, r in enumerate(ev.rows) if i != 4] == [1.0] * 8
    assert ev.scores["errors"] == 1 and ev.scores["metric"] == round(8 / 9, 4)
    assert other.scores == {"answered": 1.0, "metric": 1.0, "errors": 0}


def test_jobs_share_one_pool():
    barrier = threading.Barrier(4, timeout=10)  # four calls at once only if both jobs' calls are in flight together
    a, b = Echo(1, barrier=barrier), Echo(1, barrier=barrier)
    evs = compiler.evaluate_many([("a", a, EXAMPLES[:2]), ("b", b, EXAMPLES[:2])], SPEC, num_threads=4)
    assert [ev.scores["errors"] for ev in evs] == [0, 0]


def test_empty_jobs():
    assert compiler.evaluate_many([], SPEC, 2) == []
    empty, ev = compiler.evaluate_many([("none", Echo(1), []), ("a", Echo(1), EXAMPLES[:2])], SPEC, 2)
    assert empty == compiler.Evaluation({}, []) and len(ev.rows) == 2
    assert compiler.evaluate(Echo(1), [], SPEC, 2, "none") == compiler.Evaluation({}, [])


@pytest.mark.parametrize("threads", [1, 4])
def test_single_and_many_threads_agree(threads):
    jobs = [("a", Echo(2, fail=frozenset({3})), EXAMPLES), ("b", Echo(3), EXAMPLES)]
    assert compiler.evaluate_many(jobs, SPEC, threads) == compiler.evaluate_many(jobs, SPEC, 2)
