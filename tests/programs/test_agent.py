"""The agent program with a scripted LM (unit); the real engine in the integration tests."""

import json

import dspy
import pytest
from dspy.utils import DummyLM

from dspyc import registry
from dspyc.adapter import ConstrainedJSONAdapter
from dspyc.settings import get_settings
from dspyc.tools.base import ToolRegistry


@pytest.fixture(scope="module")
def agent_mod():
    registry.get("agent")
    import programs.agent as mod

    return mod


TASK = {"tasks": ["the one thing asked"]}  # the caller's split step comes first


class RecordingLM(DummyLM):
    def __init__(self, answers):
        super().__init__(answers, adapter=ConstrainedJSONAdapter())
        self.seen: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.seen.append(kwargs)
        return super().__call__(*args, **kwargs)


def get_weather(city: str) -> dict:
    """Get the current weather for a city."""
    return {"city": city, "temperature_c": 14.2, "source": "test"}


def get_stock_price(symbol: str) -> dict:
    """Get a stock price."""
    return {"symbol": symbol, "price": 1.0}


def test_function_caller_sends_a_per_call_schema_and_dedupes(agent_mod):
    schemas = [
        {
            "name": "get_weather",
            "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    lm = RecordingLM([TASK, {"calls": [call, call]}])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.FunctionCaller(max_calls=2)(question="Weather in Paris?", schemas=schemas)
    assert pred.calls == [call]
    rf = lm.seen[1]["response_format"]["json_schema"]["schema"]
    assert rf["properties"]["calls"]["items"]["properties"]["name"]["enum"] == ["get_weather"]
    # the program asks for 200; the adapter raises it to the longest reply the schema admits (none is cut off)
    from dspyc.adapter import worst_case_tokens

    assert lm.seen[1]["max_tokens"] == max(200, min(worst_case_tokens(rf), get_settings().max_reply_tokens))


def test_the_caller_writes_one_call_per_task_the_request_holds(agent_mod):
    """Qwen 0.5B wrote one call for every parallel BFCL request; the task count now sets how many calls there are:
    one call step per task (the task line, with the request for context), or one list of exactly that many."""
    schemas = [
        {"name": "fact", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    ]
    calls = [{"name": "fact", "arguments": {"n": n}} for n in (5, 10, 15)]
    tasks = {"tasks": ["factorial of 5", "factorial of 10", "factorial of 15"]}
    lm = RecordingLM([tasks, *({"calls": [c]} for c in calls)])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.FunctionCaller(max_calls=4)(question="Factorials of 5, 10 and 15?", schemas=schemas)
    assert pred.calls == calls and len(lm.seen) == 4
    for seen in lm.seen[1:]:
        items = seen["response_format"]["json_schema"]["schema"]["properties"]["calls"]
        assert items["minItems"] == items["maxItems"] == 1
    user = [m["content"] for m in lm.history[2]["messages"] if m["role"] == "user"][-1]
    assert user.index("Factorials of 5, 10 and 15?") < user.index("this call does only: factorial of 10")
    assert user.index("Functions") < user.index("Question")  # the functions come before the request

    lm = RecordingLM([tasks, {"calls": calls}])  # call_per_task=False: one list of exactly as many calls
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.FunctionCaller(max_calls=4, call_per_task=False)(
            question="Factorials of 5, 10 and 15?", schemas=schemas
        )
    items = lm.seen[1]["response_format"]["json_schema"]["schema"]["properties"]["calls"]
    assert pred.calls == calls and items["minItems"] == items["maxItems"] == 3
    lm = RecordingLM([{"calls": calls[:1]}])  # split_tasks=False: no split call, 1..max_calls calls
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        agent_mod.FunctionCaller(max_calls=4, split_tasks=False)(question="Factorial of 5?", schemas=schemas)
    items = lm.seen[0]["response_format"]["json_schema"]["schema"]["properties"]["calls"]
    assert len(lm.seen) == 1 and (items["minItems"], items["maxItems"]) == (1, 4)


def test_a_count_first_split_holds_the_task_list_to_its_count(agent_mod):
    """Under "count_first" the split writes its count first and the schema holds the list to it (agent@6 trained and
    served it: worse than the plain split). The program as built keeps the plain split."""
    schemas = [
        {"name": "fact", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    ]
    calls = [{"name": "fact", "arguments": {"n": n}} for n in (5, 10, 15)]
    split = {"count": 3, "tasks": ["fact: 5", "fact: 10", "fact: 15"]}
    lm = RecordingLM([split, *({"calls": [c]} for c in calls)])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.FunctionCaller(max_calls=4, split_step="count_first")(
            question="Factorials of 5, 10, 15?", schemas=schemas
        )
    assert pred.calls == calls
    branches = lm.seen[0]["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [b["properties"]["count"]["enum"] for b in branches] == [[1], [2], [3], [4]]
    assert all(
        b["properties"]["tasks"]["minItems"] == b["properties"]["tasks"]["maxItems"] == n
        for n, b in enumerate(branches, 1)
    )
    assert list(branches[0]["properties"]) == ["count", "tasks"]  # the count is written first
    assert "count" not in agent_mod.build(None, {}).split.signature.output_fields  # as built: the plain split
    assert "count" in agent_mod.build(None, {"split_step": "count_first"}).split.signature.output_fields
    ex = dspy.Example(question="Factorials of 5 and 10?", functions=[], calls=calls[:2])
    assert agent_mod.gold_trace(ex)[0]["outputs"] == {
        "count": 2,
        "tasks": ["fact: 5", "fact: 10"],
        "call_lines": ["fact(n=5)", "fact(n=10)"],
    }


def test_a_split_step_can_read_the_functions(agent_mod):
    """The "with_functions" split step (agent@7's) sees the function schemas, which say how many values one call
    takes; the program as built keeps the plain split, and one gold trace fits both."""
    config = {"split_step": "with_functions"}
    schemas = [
        {"name": "fact", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    ]
    calls = [{"name": "fact", "arguments": {"n": n}} for n in (5, 10)]
    lm = RecordingLM([{"tasks": ["fact: 5", "fact: 10"]}, *({"calls": [c]} for c in calls)])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        caller = agent_mod.build(None, config)
        assert caller(question="Factorials of 5 and 10?", schemas=schemas).calls == calls
    split_prompt = lm.history[0]["messages"][-1]["content"]
    assert split_prompt.index("fact(n: integer)") < split_prompt.index("Factorials of 5 and 10?")
    ex = dspy.Example(question="Factorials of 5 and 10?", functions=["fact(n: integer)"], calls=calls)
    split_row = agent_mod.gold_trace(ex)[0]
    from dspyc.distill.traces import chat_row

    adapter = ConstrainedJSONAdapter()
    for cfg in ({}, config):
        pred = agent_mod.build(None, cfg).split
        prompt, completion = chat_row(adapter, pred, split_row["inputs"], split_row["outputs"])
        assert ("fact(n: integer)" in prompt[-1]["content"]) == bool(cfg)
        assert completion[0]["content"] == '{"tasks":["fact: 5","fact: 10"]}'


def test_an_as_calls_split_writes_each_task_as_its_call(agent_mod):
    """Under "as_calls" (what a finetune compile trains and serves: agent@9) the split step reads the functions and
    writes each task as `name(arg=value, ...)`; its gold lines come from the same gold trace as every other split
    step's, and each call step reads one line."""
    assert registry.get("agent").finetune_config == {"split_step": "as_calls"}
    schemas = [
        {
            "name": "geo.area",
            "parameters": {
                "type": "dict",
                "properties": {"base": {"type": "integer"}, "unit": {"type": "string"}},
                "required": ["base"],
            },
        }
    ]
    calls = [{"name": "geo.area", "arguments": {"base": b, "unit": u}} for b, u in ((15, "m"), (25, "ft"))]
    lines = ["geo.area(base=15, unit='m')", "geo.area(base=25, unit='ft')"]
    lm = RecordingLM([{"call_lines": lines}, *({"calls": [c]} for c in calls)])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        caller = agent_mod.build(None, {"split_step": "as_calls"})
        assert caller(question="Areas of 15 m and 25 ft?", schemas=schemas).calls == calls
    assert "geo.area(base: integer" in lm.history[0]["messages"][-1]["content"]
    assert lm.history[1]["messages"][-1]["content"].count(lines[0]) == 1  # the first call step reads its line
    ex = dspy.Example(question="Areas of 15 m and 25 ft?", functions=[], calls=calls)
    split_row = agent_mod.gold_trace(ex)[0]
    assert split_row["outputs"]["call_lines"] == lines
    from dspyc.distill.traces import chat_row

    prompt, completion = chat_row(ConstrainedJSONAdapter(), caller.split, split_row["inputs"], split_row["outputs"])
    assert (
        completion[0]["content"] == '{"call_lines":["geo.area(base=15, unit=\'m\')","geo.area(base=25, unit=\'ft\')"]}'
    )
    # a passing trace under it is kept only where it wrote as many lines as the gold answer has calls
    from dspyc.distill.traces import PredictorCall

    split = PredictorCall(predictor="split", inputs={}, outputs={"call_lines": lines[:1]})
    assert not agent_mod.keep_trace(ex, [split])


def test_a_schema_that_admits_more_than_the_context_asks_for_the_reply_cap(agent_mod):
    """BFCL's list-of-strings arguments admit ~12k tokens; asking for that, the engine refused the call (400)."""
    text = {"type": "string"}
    schemas = [
        {
            "name": f"f{i}",
            "parameters": {
                "type": "dict",
                "properties": {"names": {"type": "array", "items": text}, "note": text},
                "required": ["names"],
            },
        }
        for i in range(3)
    ]
    lm = RecordingLM([TASK, {"calls": [{"name": "f0", "arguments": {"names": ["a"]}}]}])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.FunctionCaller(max_calls=4)(question="q", schemas=schemas)
    assert pred.calls == [{"name": "f0", "arguments": {"names": ["a"]}}]
    from dspyc.adapter import worst_case_tokens

    assert worst_case_tokens(lm.seen[1]["response_format"]["json_schema"]["schema"]) > 4096
    assert lm.seen[1]["max_tokens"] == get_settings().max_reply_tokens


def test_tool_agent_runs_the_tool_stops_on_finish_and_answers(agent_mod):
    reg = ToolRegistry([get_weather, get_stock_price])
    lm = RecordingLM(
        [
            TASK,
            {"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"calls": [{"name": "finish", "arguments": {}}]},
            {"answer": "It is 14.2 °C in Paris."},
        ]
    )
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.ToolAgent(reg, max_steps=3)(question="What's the weather in Paris?")
    assert pred.answer == "It is 14.2 °C in Paris."
    assert [r["tool"] for r in pred.tool_results] == ["get_weather"] and pred.tool_results[0]["ok"]
    next_step_schema = json.dumps(lm.seen[2]["response_format"])
    assert '"finish"' in next_step_schema and '"get_stock_price"' in next_step_schema
    assert "temperature_c: 14.2" in json.dumps(lm.seen[3]["messages"])  # the result reached the answer step


def test_tool_agent_answers_a_two_tool_request_with_both_results(agent_mod):
    """ "Apple's stock price, and the weather in Paris?": two tasks, one call step each, both tools run."""
    reg = ToolRegistry([get_weather, get_stock_price])
    lm = RecordingLM(
        [
            {"tasks": ["stock price of Apple", "weather in Paris"]},
            {"calls": [{"name": "get_stock_price", "arguments": {"symbol": "AAPL"}}]},
            {"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"calls": [{"name": "finish", "arguments": {}}]},
            {"answer": "AAPL is at 1.0, and it is 14.2 °C in Paris."},
        ]
    )
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.ToolAgent(reg, max_steps=3)(question="Apple's stock price, and the weather in Paris?")
    assert [r["tool"] for r in pred.tool_results] == ["get_stock_price", "get_weather"]
    assert "price: 1.0" in json.dumps(lm.seen[4]["messages"]) and "temperature_c: 14.2" in json.dumps(
        lm.seen[4]["messages"]
    )


def test_tool_agent_is_bounded_and_stops_on_a_repeated_call(agent_mod):
    reg = ToolRegistry([get_weather, get_stock_price])
    same = {"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    lm = RecordingLM([TASK, same, same, {"answer": "14.2"}])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.ToolAgent(reg, max_steps=5)(question="Weather?")
    assert len(pred.tool_results) == 1 and pred.answer == "14.2" and len(lm.seen) == 4

    calls = [{"calls": [{"name": "get_stock_price", "arguments": {"symbol": s}}]} for s in ("A", "B", "C", "D")]
    lm = RecordingLM([TASK, *calls[:2], {"answer": "done"}])
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.ToolAgent(reg, max_steps=2)(question="Prices?")
    assert len(pred.tool_results) == 2 and pred.steps == 2 and pred.answer == "done"


def test_tool_errors_reach_the_model_instead_of_raising(agent_mod):
    reg = ToolRegistry([get_weather])
    lm = RecordingLM([TASK, {"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, {"answer": "sorry"}])
    reg._tools["get_weather"].fn = lambda city: (_ for _ in ()).throw(ConnectionError("down"))
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        pred = agent_mod.ToolAgent(reg, max_steps=1)(question="Weather?")
    assert not pred.tool_results[0]["ok"] and "ConnectionError: down" in json.dumps(lm.seen[-1]["messages"])


def test_metric_and_per_category_report(agent_mod):
    ex = dspy.Example(
        category="simple_python",
        schemas=[{"name": "f", "parameters": {"properties": {"x": {"type": "integer"}}, "required": ["x"]}}],
        possible_answer=[{"f": {"x": [1]}}],
    )
    ex2 = ex.copy(category="parallel")
    right, wrong = (
        dspy.Prediction(calls=[{"name": "f", "arguments": {"x": 1}}]),
        dspy.Prediction(calls=[{"name": "f", "arguments": {"x": 2}}]),
    )
    assert agent_mod.metric(ex, right) == 1.0 and agent_mod.metric(ex, wrong, trace=[]) is False
    scores = agent_mod.report([(ex, right), (ex, wrong), (ex2, right), (ex2, dspy.Prediction())])
    assert scores == {"accuracy": 0.5, "accuracy_simple_python": 0.5, "accuracy_parallel": 0.5}


def test_program_is_registered(agent_mod):
    spec = registry.get("agent")
    assert spec.dataset == "bfcl" and spec.report is agent_mod.report


# --- against the real engine -------------------------------------------------------------------------


@pytest.mark.integration
def test_function_caller_on_bfcl_through_the_engine(live_engine, agent_mod):
    """Two BFCL items through the constrained adapter: every reply parses into calls to listed functions
    with their required arguments (the schema, not luck, guarantees it); the checker then scores them."""
    from dspyc.data import bfcl
    from dspyc.lm import configure

    configure()
    examples = [e for c in ("simple_python", "multiple") for e in bfcl.load_category(c)[:1]]
    results = []
    for ex in examples:
        pred = agent_mod.FunctionCaller()(**ex.inputs())
        names = {f["name"]: f for f in ex.schemas}
        assert pred.calls, ex.id
        for call in pred.calls:
            assert call["name"] in names
            assert set(names[call["name"]]["parameters"].get("required", [])) <= set(call["arguments"])
        results.append((ex, pred))
    scores = agent_mod.report(results)
    assert set(scores) == {"accuracy", "accuracy_simple_python", "accuracy_multiple"}


@pytest.mark.integration
def test_ask_answers_with_the_weather_tool_end_to_end(live_engine, monkeypatch):
    """`dspyc ask` through the real engine with the offline provider: a tool runs and its source is shown."""
    from typer.testing import CliRunner

    from dspyc.cli import app

    monkeypatch.setenv("DSPYC_TOOLS_PROVIDER", "offline")
    from dspyc.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["ask", "What's the weather in Paris?", "--max-steps", "2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "tool " in result.output and "[source: offline:" in result.output


def test_an_unknown_split_step_is_a_one_line_error(agent_mod):
    from dspyc.errors import DspycError

    with pytest.raises(
        DspycError, match="unknown split_step 'bogus': choose plain, count_first, with_functions, as_calls"
    ):
        agent_mod.build(None, {"split_step": "bogus"})
