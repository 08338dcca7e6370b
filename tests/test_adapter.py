from typing import Literal

import dspy
import pydantic
from dspy.utils import DummyLM

from dspyc.adapter import ConstrainedJSONAdapter, response_format_for


class Typed(pydantic.BaseModel):
    name: str
    score: int


class Sig(dspy.Signature):
    """Classify."""

    text: str = dspy.InputField()
    label: Literal["a", "b"] = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    item: Typed = dspy.OutputField()


def test_schema_is_strict_and_complete():
    rf = response_format_for(Sig)
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["required"] == ["label", "tags", "item"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["label"]["enum"] == ["a", "b"]
    assert schema["properties"]["tags"]["items"]["maxLength"] == 300  # free text is bounded
    assert schema["properties"]["tags"]["maxItems"] == 4
    assert "maxLength" not in schema["properties"]["label"]


def test_chain_of_thought_schema_orders_reasoning_first():
    cot = dspy.ChainOfThought("question -> answer")
    rf = response_format_for(cot.predict.signature, max_string_length=None)
    assert list(rf["json_schema"]["schema"]["properties"]) == ["reasoning", "answer"]
    assert "maxLength" not in rf["json_schema"]["schema"]["properties"]["answer"]


def test_open_mapping_falls_back_to_json_object():
    assert response_format_for(dspy.Signature("q -> d: dict[str, int]")) == {"type": "json_object"}


class RecordingLM(DummyLM):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.seen.append(kwargs)
        return super().__call__(*args, **kwargs)


def test_adapter_always_sends_schema_and_parses():
    lm = RecordingLM([{"label": "a", "tags": ["x"], "item": {"name": "n", "score": 3}}], adapter=ConstrainedJSONAdapter())
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        out = dspy.Predict(Sig)(text="hi")
    assert out.label == "a" and out.item.score == 3 and out.tags == ["x"]
    assert lm.seen and lm.seen[0]["response_format"]["type"] == "json_schema"


def test_every_adapter_check_call_gets_a_strict_schema():
    """The adapter-check calls must all be schema-constrained; a signature DSPy cannot resolve would fail before the LM."""
    from dspyc.adapter_probe import adapter_calls

    calls = adapter_calls()
    assert len(calls) == 200
    for module, _ in calls[:5]:
        predictor = module.predict if hasattr(module, "predict") else module
        assert response_format_for(predictor.signature)["type"] == "json_schema"


def test_numbers_are_bounded():
    """An unbounded number let SmolLM2 write digits until max_tokens (measured); the schema gives a range."""
    from dspyc.adapter_probe import Describe

    schema = response_format_for(Describe)["json_schema"]["schema"]
    population = schema["$defs"]["City"]["properties"]["population_millions"]
    assert population["maximum"] == 1e9 and population["minimum"] == -1e9
