import json

import dspy

from dspyc.distill.traces import collect, dataset_version, sft_rows


class Sig(dspy.Signature):
    """Short instruction."""

    text: str = dspy.InputField()
    rewrite: str = dspy.OutputField()


class Prog(dspy.Module):
    def __init__(self, instructions=None, demos=()):
        super().__init__()
        self.rewrite = dspy.Predict(Sig.with_instructions(instructions) if instructions else Sig)
        self.rewrite.demos = [dspy.Example(**d) for d in demos]

    def forward(self, text):
        return dspy.Prediction(rewrite=self.rewrite(text=text).rewrite)


def metric(ex, pred, trace=None):
    score = 1.0 if pred.rewrite.startswith("We") else 0.2
    return score >= 0.5 if trace is not None else score


def teacher_lm():
    # Answers follow the input: "good ..." inputs get a passing rewrite.
    answers = {"good one": "We are pleased.", "bad one": "lol", "good two": "We note it."}

    class LM(dspy.utils.DummyLM):
        def forward(self, prompt=None, messages=None, **kw):
            user = messages[-1]["content"]
            key = next(k for k in answers if k in user)
            self.answers = iter([{"rewrite": answers[key]}])
            return super().forward(prompt=prompt, messages=messages, **kw)

    return LM([{"rewrite": ""}], adapter=dspy.JSONAdapter())


def examples():
    return [
        dspy.Example(id=str(i), text=t).with_inputs("text") for i, t in enumerate(["good one", "bad one", "good two"])
    ]


def test_only_passing_traces_are_kept_and_use_the_students_prompt():
    teacher = Prog(instructions="THE LONG STYLE GUIDE", demos=[{"text": "demo in", "rewrite": "demo out"}])
    with dspy.context(adapter=dspy.JSONAdapter()):
        runs = collect(teacher, examples(), metric, num_threads=2, lm=teacher_lm())
    assert [r.passed for r in runs] == [True, False, True]
    assert runs[0].calls[0].predictor == "rewrite" and runs[0].calls[0].outputs == {"rewrite": "We are pleased."}
    rows = sft_rows(runs, Prog())
    assert [r.example_id for r in rows] == ["0", "2"]
    prompt = json.dumps(rows[0].prompt)
    # The student's prompt: its own short instruction, no demos, none of the teacher's guide.
    assert "Short instruction." in prompt and "THE LONG STYLE GUIDE" not in prompt and "demo in" not in prompt
    assert [m["role"] for m in rows[0].prompt] == ["system", "user"] and "good one" in rows[0].prompt[-1]["content"]
    assert rows[0].completion == [{"role": "assistant", "content": '{"rewrite":"We are pleased."}'}]


def test_min_score_overrides_the_metric_pass():
    with dspy.context(adapter=dspy.JSONAdapter()):
        runs = collect(Prog(), examples(), metric, min_score=0.0, num_threads=1, lm=teacher_lm())
    assert all(r.passed for r in runs) and len(sft_rows(runs, Prog())) == 3


def test_every_repeat_keeps_its_predictor_names():
    # Repeats run a copy of the teacher; their calls must still map to the student's predictors.
    with dspy.context(adapter=dspy.JSONAdapter()):
        runs = collect(Prog(), examples(), metric, repeats=3, num_threads=2, lm=teacher_lm())
    assert len(runs) == 9 and {c.predictor for r in runs for c in r.calls} == {"rewrite"}
    # 3 repeats of the 2 passing inputs, answered alike: 6 rows, or each row once with `dedupe`
    assert len(sft_rows(runs, Prog())) == 6 and len(sft_rows(runs, Prog(), dedupe=True)) == 2


def test_every_repeat_is_its_own_request_so_a_cached_teacher_can_resume():
    """The teacher LM is cached (a re-run gets its traces back); repeats differ by rollout_id, DSPy's cache key."""
    lm = teacher_lm()
    seen = []
    forward = type(lm).forward

    def record(self, prompt=None, messages=None, **kw):
        seen.append(self.kwargs.get("rollout_id"))
        return forward(self, prompt=prompt, messages=messages, **kw)

    type(lm).forward = record
    with dspy.context(adapter=dspy.JSONAdapter()):
        collect(Prog(), examples()[:1], metric, repeats=3, num_threads=1, lm=lm)
    assert sorted(seen, key=str) == sorted([None, 1, 2], key=str)


def test_a_failing_call_is_a_failed_trace():
    class Boom(dspy.Module):
        def forward(self, text):
            raise RuntimeError("engine down")

    runs = collect(Boom(), examples()[:1], metric, num_threads=1, lm=teacher_lm())
    assert not runs[0].passed and "engine down" in runs[0].error


def test_dataset_version_is_a_content_hash():
    with dspy.context(adapter=dspy.JSONAdapter()):
        runs = collect(Prog(), examples(), metric, num_threads=1, lm=teacher_lm())
    rows = sft_rows(runs, Prog())
    assert dataset_version(rows) == dataset_version(list(rows)) != dataset_version(rows[:1])


def test_gold_labels_become_sft_rows_in_the_students_own_prompt():
    """The agent's BFCL answers train the student beside the teacher's traces: one row per train example."""
    import dspy

    from dspyc.distill import traces as T
    from programs import agent

    ex = dspy.Example(
        id="simple_1",
        question="Area of a circle of radius 3?",
        functions=["area(radius: int)"],
        schemas=[{"name": "area", "parameters": {"type": "dict", "properties": {"radius": {"type": "integer"}}}}],
        calls=[{"name": "area", "arguments": {"radius": 3}}],
    ).with_inputs("question", "functions", "schemas")
    runs = T.gold_runs(agent.gold_trace, [ex])
    assert runs[0].passed and runs[0].source == "gold" and runs[0].score == 1.0
    rows = T.sft_rows(runs, agent.FunctionCaller())
    # the trace the program leaves: the split step's one task, then the call step on the request itself
    assert [r.predictor for r in rows] == ["split", "call"]
    assert rows[0].completion[0]["content"] == '{"tasks":["area: 3"]}'
    assert rows[1].completion[0]["content"] == '{"calls":[{"name":"area","arguments":{"radius":3}}]}'
    assert "Area of a circle" in rows[1].prompt[-1]["content"] and "area(radius: int)" in rows[1].prompt[-1]["content"]


def test_a_parallel_gold_label_is_one_call_step_per_task():
    from dspyc.distill import traces as T
    from programs import agent

    calls = [
        {"name": "power", "arguments": {"base": 2, "exponent": 3}},
        {"name": "power", "arguments": {"base": 3, "exponent": 5}},
    ]
    ex = dspy.Example(
        id="parallel_1",
        question="2 to the 3rd, and 3 to the 5th?",
        functions=["power(base: int, exponent: int)"],
        calls=calls,
    ).with_inputs("question", "functions")
    rows = T.sft_rows(T.gold_runs(agent.gold_trace, [ex]), agent.FunctionCaller())
    # the split into several tasks is trained SPLIT_WEIGHT times: the rare step that decides a parallel request
    assert [r.predictor for r in rows] == ["split"] * agent.SPLIT_WEIGHT + ["call", "call"]
    assert agent.SPLIT_WEIGHT > 1
    assert rows[0].completion[0]["content"] == '{"tasks":["power: 2, 3","power: 3, 5"]}'
    # each call step sees the request and its task, as FunctionCaller.forward sends them
    assert rows[-1].prompt[-1]["content"].endswith(agent.task_request(ex.question, "power: 3, 5"))
    assert rows[-1].completion[0]["content"] == '{"calls":[{"name":"power","arguments":{"base":3,"exponent":5}}]}'
    too_many = ex.copy(calls=calls * 3)  # more calls than the program may write: no label
    assert T.gold_runs(agent.gold_trace, [too_many])[0].calls == []


def test_a_teacher_trace_that_split_one_request_in_two_is_not_kept():
    from dspyc.distill.traces import PredictorCall
    from programs import agent

    ex = dspy.Example(calls=[{"name": "area", "arguments": {"radius": 3}}])
    split = lambda n: PredictorCall(predictor="split", inputs={}, outputs={"tasks": ["t"] * n})  # noqa: E731
    assert agent.keep_trace(ex, [split(1)]) and agent.keep_trace(ex, [split(0)])
    assert not agent.keep_trace(ex, [split(2)])
    assert agent.keep_trace(ex, [])  # no split step (split_tasks=false): nothing to check


def test_typed_outputs_become_the_json_the_engine_sends():
    """The agent's calls are pydantic models in a teacher's trace; `distill agent` failed on json.dumps of them."""
    from signatures.agent import CallFunctions, FunctionCall

    from dspyc.distill.traces import compact_json

    outputs = {"calls": [FunctionCall(name="f", arguments={"x": 1})]}
    assert compact_json(outputs, CallFunctions) == '{"calls":[{"name":"f","arguments":{"x":1}}]}'
