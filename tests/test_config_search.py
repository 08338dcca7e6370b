"""ConfigSearch scores each combination of settings on train and keeps the best; the program's own wins ties."""

import dspy
import pytest

from dspyc.config_search import ConfigSearch
from dspyc.errors import DspycError
from dspyc.optimizers import Recipe, build_optimizer


class Knobs(dspy.Module):
    """Answers with its settings: the metric below decides which setting is right, no LM needed."""

    def __init__(self, passages: int = 6):
        super().__init__()
        self.passages = passages
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return dspy.Prediction(answer=f"{self.passages}|{self.answer.signature.instructions}")


TRAIN = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(4)]


def wants(passages: int, instructions: str | None = None):
    def metric(example, pred, trace=None):
        n, _, text = pred.answer.partition("|")
        return float(int(n) == passages) + float(instructions is not None and text == instructions)

    return metric


def test_the_best_setting_on_train_is_kept_and_recorded():
    search = ConfigSearch(wants(4), space={"passages": [3, 4, 6]}, num_threads=2)
    best = search.compile(Knobs(), trainset=TRAIN)
    assert best.passages == 4 and best.searched_config == {"passages": 4}
    assert [t["config"]["passages"] for t in search.trials] == [6, 3, 4]  # the program's own first
    assert [t["full_eval_score"] for t in search.trials] == [0.0, 0.0, 1.0]


def test_a_tie_keeps_the_program_as_built():
    best = ConfigSearch(wants(99), space={"passages": [3, 4]}, num_threads=2).compile(Knobs(), trainset=TRAIN)
    assert best.passages == 6 and best.searched_config == {"passages": 6}


def test_instructions_are_searched_and_travel_in_the_predictor_not_the_config():
    text = "Answer with a short span."
    best = ConfigSearch(wants(6, text), space={"answer.instructions": ["Be verbose.", text]}, num_threads=2).compile(
        Knobs(), trainset=TRAIN
    )
    assert best.answer.signature.instructions == text
    assert best.searched_config == {}
    assert best.dump_state()["answer"]["signature"]["instructions"] == text  # saved in program.json


@pytest.mark.parametrize(
    "space, error",
    [
        ({"nope": [1]}, "no setting 'nope'"),
        ({"ask.instructions": ["x"]}, "no predictor 'ask'"),
        ({"passages": []}, "non-empty list"),
        ({"passages": list(range(20))}, "max_candidates"),
    ],
)
def test_bad_spaces_fail_in_one_line(space, error):
    with pytest.raises(DspycError, match=error):
        ConfigSearch(wants(4), space=space).compile(Knobs(), trainset=TRAIN)


def test_the_factory_builds_it_from_a_recipe():
    optimizer, kwargs = build_optimizer(
        Recipe(name="s", optimizer="ConfigSearch", params={"space": {"passages": [3]}}), wants(3), num_threads=3
    )
    assert isinstance(optimizer, ConfigSearch) and optimizer.num_threads == 3 and kwargs == {}
