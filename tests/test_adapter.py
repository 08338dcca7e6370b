from typing import Literal

import dspy
import pydantic
from dspy.utils import DummyLM

from dspyc.adapter import (
    DEFAULT_MAX_STRING_LENGTH,
    ConstrainedJSONAdapter,
    DSPyFormatJSONAdapter,
    response_format_for,
    worst_case_tokens,
)


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
    lm = RecordingLM(
        [{"label": "a", "tags": ["x"], "item": {"name": "n", "score": 3}}], adapter=ConstrainedJSONAdapter()
    )
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
    demo = {
        "question": "Who wrote Hamlet?",
        "passages": ["[1] Hamlet: a play by Shakespeare."],
        "answer": "Shakespeare",
        "citations": [1],
    }
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


def _parse(module, outputs: dict) -> dspy.Prediction:
    """Outputs as an LM would send them, parsed by the adapter (typed values: pydantic models, ints, lists)."""
    import json

    predictor = module.predict if hasattr(module, "predict") else module
    return dspy.Prediction(**ConstrainedJSONAdapter().parse(predictor.signature, json.dumps(outputs)))


def test_every_labelled_probe_check_accepts_a_right_answer_and_rejects_a_wrong_one():
    from dspyc.adapter_probe import KINDS, labelled_calls

    calls = labelled_calls()
    assert len(calls) >= 200 and {c.kind for c in calls} == set(KINDS)
    assert {c.kind for c in calls[: len(KINDS)]} == set(KINDS)  # any prefix mixes the kinds
    assert sum(c.check is not None for c in calls) / len(calls) > 0.8
    for call in calls:
        module, inputs, check = call
        gold = _parse(module, call.gold)  # every call's gold parses under its schema
        if check is None:
            continue
        assert check(gold), (call.kind, inputs, call.gold)
        assert not check(_parse(module, call.wrong)), (call.kind, inputs, call.wrong)
        assert not check(dspy.Prediction(**{k: None for k in call.gold}))  # nothing is not an answer


def test_short_answers_match_whole_words_and_do_not_hedge():
    from dspyc.adapter_probe import mentions, text_check

    assert mentions("It has 8 legs.", "8") and not mentions("18 legs", "8") and mentions("São Paulo!", "sao paulo")
    yes = text_check("answer", ("yes",), ("no",))
    assert yes(dspy.Prediction(answer="Yes, it is.")) and not yes(dspy.Prediction(answer="Yes or no"))
    seoul = text_check("answer", ("South Korea", "Korea"), ("North Korea",))
    assert seoul(dspy.Prediction(answer="Korea")) and not seoul(dspy.Prediction(answer="North Korea"))


class ProbeLM(DummyLM):
    """Answers every probe call right, in JSON, and reports 7 prompt tokens per call."""

    def __init__(self, model_key: str):
        from dspyc.adapter_probe import labelled_calls

        super().__init__([])
        self.key, self.probe = model_key, labelled_calls()
        self._engine_spec = self._make_engine()

    def _make_engine(self):
        import json

        from dspy.clients.engines.dummy_engine import DummyEngine
        from dspy.lm15 import Message, Response, TextPart, Usage

        probe = self.probe

        class Engine(DummyEngine):
            def _complete_messages(self, messages):
                system, last = messages[0]["content"], messages[-1]["content"]

                def matches(call):
                    predictor = call.module.predict if hasattr(call.module, "predict") else call.module
                    return predictor.signature.instructions in system and all(v in last for v in call.inputs.values())

                call = max((c for c in probe if matches(c)), key=lambda c: sum(map(len, c.inputs.values())))
                return Response(
                    id=None,
                    model="dummy",
                    message=Message.assistant([TextPart(json.dumps(call.gold))]),
                    finish_reason="stop",
                    usage=Usage(input_tokens=7, output_tokens=3, total_tokens=10),
                )

        return Engine(self)

    def copy(self, **kwargs):
        copied = super().copy(**kwargs)
        copied._engine_spec = copied._make_engine()  # DummyLM.copy would put its own engine back
        return copied


def test_adapter_check_reports_accuracy_and_failures_per_model_and_adapter(tmp_path, monkeypatch):
    import json

    import dspyc.lm
    from dspyc.bench import adapter_check
    from dspyc.settings import Settings

    built = []

    def fake_build_lm(settings=None, *, model=None, **overrides):
        built.append((model, overrides))
        return ProbeLM(model)

    monkeypatch.setattr(dspyc.lm, "build_lm", fake_build_lm)
    s = Settings(artifacts_root=tmp_path, num_threads=4, lm_model="qwen2.5-coder-0.5b-instruct")
    out = adapter_check(n=14, stock_n=7, s=s)
    assert [m for m, _ in built] == [s.lm_model, "smollm2-135m-instruct"]
    assert all(o["cache"] is False for _, o in built)
    assert set(out["results"]) == {s.lm_model, "smollm2-135m-instruct"}
    for rows in out["results"].values():
        assert list(rows) == ["new", "old", "ChatAdapter", "JSONAdapter"]
        for name in ("new", "old"):
            r = rows[name]
            assert (
                r["calls"] == 14
                and r["parse_failures"] == 0
                and r["empty"] == 0
                and r["errors"] == 0
                and r["failure_rate"] == 0
            )
            assert r["labelled"] == 12 and r["accuracy"] == 1.0 and r["accuracy_parsed"] == 1.0
            assert r["prompt_tokens_per_call"] == 7 and len(r["by_kind"]) == 7
        assert rows["ChatAdapter"]["calls"] == rows["JSONAdapter"]["calls"] == 7
    saved = json.loads((tmp_path / "bench" / "adapters.json").read_text())
    assert saved["max_tokens"] == 192 and saved["models"] == out["models"] and "flags" in saved["cpu"]
    assert saved["results"][s.lm_model]["new"]["accuracy"] == 1.0


def test_adapter_check_restricts_models_and_adapters(tmp_path, monkeypatch):
    import pytest

    import dspyc.lm
    from dspyc.bench import adapter_check
    from dspyc.errors import DspycError
    from dspyc.settings import Settings

    monkeypatch.setattr(dspyc.lm, "build_lm", lambda settings=None, *, model=None, **kw: ProbeLM(model))
    s = Settings(artifacts_root=tmp_path, num_threads=2)
    out = adapter_check(n=7, stock_n=0, s=s, models=["smollm2-135m-instruct"], only=["new", "JSONAdapter"])
    assert list(out["results"]) == ["smollm2-135m-instruct"] and list(out["results"]["smollm2-135m-instruct"]) == [
        "new"
    ]
    with pytest.raises(DspycError, match="unknown model 'nope'"):
        adapter_check(n=7, s=s, models=["nope"])


def test_a_single_string_reply_comes_as_plain_text_cut_to_its_bound():
    """reply="text": no response_format, the label line asks for the value alone, the bound becomes max_tokens."""
    import dspy

    from dspyc.adapter import ConstrainedJSONAdapter, clean_text

    class Short(dspy.Signature):
        """Answer briefly."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField(max_length=20)

    class LM(dspy.BaseLM):
        def __init__(self):
            super().__init__("fake")
            self.seen = []

        def __call__(self, prompt=None, messages=None, **kw):
            self.seen.append((messages, kw))
            return ['Answer: "The city of Paris, France, on the Seine"\nmore']

        def forward(self, *a, **k):
            raise NotImplementedError

    lm = LM()
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        predict = dspy.Predict(Short, reply="text")
        predict.demos = [dspy.Example(question="Capital of Italy?", answer="Rome")]
        out = predict(question="Capital of France?")
    messages, kwargs = lm.seen[0]
    assert out.answer == "The city of Paris, F" and "response_format" not in kwargs and "reply" not in kwargs
    assert kwargs["max_tokens"] == 14 and messages[0]["content"].endswith("Reply with the answer only.")
    assert [m["content"] for m in messages[1:3]] == ["Question: Capital of Italy?", "Rome"]
    assert clean_text("\n  Query: Eiffel Tower ", 60) == "Eiffel Tower" and clean_text("Note: a b", 60) == "Note: a b"


def test_the_response_format_is_built_once_per_signature_and_handed_out_as_a_copy():
    class Once(dspy.Signature):
        """q"""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    first = response_format_for(Once)
    first["json_schema"]["schema"]["properties"]["answer"]["maxLength"] = 1  # a caller's change stays its own
    assert (
        response_format_for(Once)["json_schema"]["schema"]["properties"]["answer"]["maxLength"]
        == DEFAULT_MAX_STRING_LENGTH
    )
