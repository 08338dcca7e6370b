"""dspyc.loading: a version saved before its program gained a predictor still loads."""

import dspy
import pytest

from dspyc.loading import load_state


class One(dspy.Module):
    def __init__(self):
        super().__init__()
        self.call = dspy.Predict("question -> answer")


class Two(One):
    def __init__(self):
        super().__init__()
        self.split = dspy.Predict("question -> tasks: list[str]")


def test_a_predictor_added_after_saving_runs_as_built_with_a_warning(tmp_path):
    old = One()
    old.call.demos = [dspy.Example(question="q", answer="a")]
    path = tmp_path / "program.json"
    old.save(str(path))
    new = Two()
    with pytest.warns(UserWarning, match="agent@2 was saved before the program had split"):
        load_state(new, path, "agent@2")
    assert new.call.demos[0]["answer"] == "a" and new.split.demos == []


def test_a_complete_state_loads_silently(tmp_path, recwarn):
    saved = Two()
    saved.split.demos = [dspy.Example(question="q", tasks=["x"])]
    path = tmp_path / "program.json"
    saved.save(str(path))
    fresh = Two()
    load_state(fresh, path, "agent@3")
    assert fresh.split.demos[0]["tasks"] == ["x"] and not [w for w in recwarn if "saved before" in str(w.message)]
