from typing import Literal

import dspy
import pydantic
from dspy.utils import DummyLM

from dspyc.adapter import (DEFAULT_MAX_STRING_LENGTH, ConstrainedJSONAdapter, DSPyFormatJSONAdapter, response_format_for,
                           worst_case_tokens)


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
    assert schema["properties"]["tags"]["items"]["maxLength"] == DEFAULT_MAX_STRING_LENGTH  # free text is bounded
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


class Answer(dspy.Signature):
    """Answer the question from the passages."""

    question: str = dspy.InputField()
    passages: list[str] = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words", max_length=40)
    citations: list[int] = dspy.OutputField(desc="passage numbers", max_length=2)


def test_a_field_sets_its_own_bound():
    props = response_format_for(Answer)["json_schema"]["schema"]["properties"]
    assert props["answer"]["maxLength"] == 40 and props["citations"]["maxItems"] == 2
    assert set(props["answer"]) == {"type", "maxLength"}  # DSPy's prompt text stays out of the schema


def test_lean_prompt_has_nothing_to_copy():
    demo = {"question": "Who wrote Hamlet?", "passages": ["[1] Hamlet: a play by Shakespeare."], "answer": "Shakespeare",
            "citations": [1]}
    msgs = ConstrainedJSONAdapter().format(Answer, [demo], {"question": "Who?", "passages": ["[1] T: text"]})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    text = "\n".join(m["content"] for m in msgs)
    assert "[[ ##" not in text and "{answer}" not in text and "{question}" not in text
    assert msgs[0]["content"].startswith("Answer the question from the passages.")
    assert '"answer" (a few words)' in msgs[0]["content"]
    assert msgs[-1]["content"] == "Question: Who?\n\nPassages:\n[1] T: text"
    assert msgs[2]["content"] == '{"answer":"Shakespeare","citations":[1]}'
    # the old format, kept for adapter-check, is DSPy's
    assert "[[ ## question ## ]]" in "\n".join(m["content"] for m in DSPyFormatJSONAdapter().format(Answer, [], demo))


def test_chain_of_thought_reasoning_is_bounded_and_described():
    cot = dspy.ChainOfThought(Answer)
    sig = cot.predict.signature
    assert response_format_for(sig)["json_schema"]["schema"]["properties"]["reasoning"]["maxLength"] == 300
    assert "${" not in ConstrainedJSONAdapter().format_system_message(sig)


def test_max_tokens_covers_the_worst_case_reply():
    """A reply cut at max_tokens does not parse (seen on Qwen: a 300-character reasoning under max_tokens=192)."""
    schema = response_format_for(dspy.ChainOfThought(Answer).predict.signature)["json_schema"]["schema"]
    need = worst_case_tokens(schema)
    assert need >= 2 * (300 + 40)
    lm = RecordingLM([{"reasoning": "r", "answer": "a", "citations": [1]}], adapter=ConstrainedJSONAdapter())
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        dspy.ChainOfThought(Answer)(question="q", passages=["p"], config={"max_tokens": 64})
    assert lm.seen[0]["max_tokens"] == need
