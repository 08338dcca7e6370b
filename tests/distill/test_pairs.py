import dspy

from dspyc.distill.pairs import Candidate, CandidateGroup, build_pairs, score_completion

PROMPT = [{"role": "user", "content": "x"}]


def group(*cands, ex="e1"):
    return CandidateGroup(
        example_id=ex, prompt=PROMPT, candidates=[Candidate(text=t, score=s, source=src) for t, s, src in cands]
    )


def test_best_and_worst_with_their_scores():
    [pair] = build_pairs([group(("a", 0.5, "student"), ("b", 0.9, "teacher"), ("c", 0.1, "student"))])
    assert pair.chosen[0]["content"] == "b" and pair.rejected[0]["content"] == "c"
    assert (pair.chosen_score, pair.rejected_score) == (0.9, 0.1)
    assert (pair.chosen_source, pair.rejected_source) == ("teacher", "student")
    assert pair.prompt == PROMPT and pair.chosen[0]["role"] == "assistant"


def test_equal_scores_give_no_pair():
    assert build_pairs([group(("a", 0.5, "student"), ("b", 0.5, "student"))]) == []


def test_margin_and_identical_texts_and_empty_candidates():
    assert build_pairs([group(("a", 0.55, "student"), ("b", 0.5, "student"))], min_margin=0.1) == []
    assert build_pairs([group(("same", 0.9, "teacher"), ("same", 0.1, "student"))]) == []
    assert build_pairs([group(("a", 0.9, "student"), ("  ", 0.0, "student"))]) == []
    assert len(build_pairs([group(("a", 0.9, "student"), ("b", 0.2, "student"))], min_margin=0.1)) == 1


def test_one_pair_per_input():
    groups = [
        group(("a", 1.0, "s"), ("b", 0.0, "s"), ex="1"),
        group(("c", 0.3, "s"), ("d", 0.3, "s"), ex="2"),
        group(("e", 0.2, "s"), ("f", 0.7, "s"), ex="3"),
    ]
    assert [p.example_id for p in build_pairs(groups)] == ["1", "3"]


class Sig(dspy.Signature):
    text: str = dspy.InputField()
    rewrite: str = dspy.OutputField()


def test_score_completion_parses_json_and_scores_garbage_as_empty():
    ex = dspy.Example(text="t").with_inputs("text")
    metric = lambda ex, pred, trace=None: float(len(pred.get("rewrite", "") or ""))  # noqa: E731
    assert score_completion('{"rewrite":"hello"}', Sig, ex, metric) == 5.0
    assert score_completion("not json at all", Sig, ex, metric) == 0.0


def test_dpo_trains_the_predictor_that_writes_the_output_from_the_examples_inputs():
    import dspy
    import pytest

    from dspyc.distill.pipeline import _final_predictor
    from dspyc.distill.traces import PredictorCall, TeacherRun
    from dspyc.errors import DspycError

    class TwoStep(dspy.Module):  # the agent's shape: split the request, then call with the request's functions
        def __init__(self):
            super().__init__()
            self.split = dspy.Predict("question -> tasks: list[str]")
            self.call = dspy.Predict("question, functions: list[str] -> calls: list[str]")
            self.use = dspy.Predict("question, tasks: list[str] -> calls: list[str]")

    def run(*names):
        calls = [PredictorCall(predictor=n, inputs={}, outputs={}) for n in names]
        return TeacherRun(example_id="1", inputs={}, calls=calls, score=1.0, passed=True)

    ex = [dspy.Example(question="q", functions=["f()"]).with_inputs("question", "functions")]
    name, pred = _final_predictor([run("split", "call")], TwoStep(), ex, "agent")
    assert name == "call" and pred.signature.output_fields.keys() == {"calls"}
    with pytest.raises(DspycError, match="from the example's inputs"):  # `use` reads the split step's tasks
        _final_predictor([run("split", "use")], TwoStep(), ex, "agent")
