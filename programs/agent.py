"""Tool-calling agent: choose a function and its arguments under a schema, run it, answer from the results.

`FunctionCaller` is the single-step core that BFCL scores and that `dspyc compile agent` optimizes: a
predictor that splits the request into its tasks, then one whose output is constrained per call to one
`anyOf` branch per available function (name and arguments together) and to exactly one call per task, so
even SmolLM2-135M can only emit a call to a listed function with well-typed arguments. `ToolAgent` (behind
`dspyc ask`) runs that caller over a tool registry in a bounded loop: execute the calls, feed the results
back, let the model call again or `finish`, and always end with an answer that carries the tool results it
used. Where the LM supports native tool calls (DSPy's `ToolCalls` with the server's tool parser),
`tool_calling="native"` uses them instead.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import dspy

from dspyc.adapter import DEFAULT_MAX_STRING_LENGTH
from dspyc.data.bfcl import BFCLDataset, ast_check, load_bfcl, to_bfcl_calls
from dspyc.errors import DspycError
from dspyc.metrics import mean
from dspyc.registry import ProgramSpec
from dspyc.settings import Settings, get_settings
from dspyc.tools.base import ToolRegistry, ToolResult
from dspyc.tools.schema import calls_response_format, render_function
from signatures.agent import (
    AnswerFromResults,
    CallFunctions,
    CountThenSplit,
    NextStep,
    SplitIntoCalls,
    SplitTasks,
    SplitWithFunctions,
)

FINISH = {
    "name": "finish",
    "description": "Stop calling functions: the results answer the request.",
    "parameters": {"type": "dict", "properties": {}, "required": []},
}


class NativeCall(dspy.Signature):
    """Call the right tool(s) for the request."""

    question: str = dspy.InputField()
    tools: list[dspy.Tool] = dspy.InputField()
    tool_calls: dspy.ToolCalls = dspy.OutputField()


def _as_dict(call: Any) -> dict[str, Any]:
    if hasattr(call, "model_dump"):
        call = call.model_dump()
    return {"name": call.get("name", ""), "arguments": dict(call.get("arguments") or call.get("args") or {})}


def _stub_tool(spec: dict[str, Any]) -> dspy.Tool:
    """A dspy.Tool that only describes a function (native tool calling needs the schema, not the body)."""
    params = spec.get("parameters") or {}
    return dspy.Tool(
        func=lambda **kw: None,
        name=spec["name"],
        desc=spec.get("description", ""),
        args=(params.get("properties") or {}),
    )


SplitStep = Literal["plain", "count_first", "with_functions", "as_calls"]
SPLIT_STEPS: dict[str, type[dspy.Signature]] = {
    "plain": SplitTasks,
    "count_first": CountThenSplit,
    "with_functions": SplitWithFunctions,
    "as_calls": SplitIntoCalls,
}


class FunctionCaller(dspy.Module):
    """question + function schemas → calls `[{"name", "arguments"}]`, constrained to the given functions."""

    def __init__(
        self,
        max_calls: int = 4,
        tool_calling: str = "constrained",
        max_tokens: int = 200,
        split_tasks: bool = True,
        call_per_task: bool = True,
        split_step: SplitStep = "plain",
    ):
        super().__init__()
        # max_tokens bounds the cost of a runaway reply (~8 tok/s on the CPU engine); a call list is far shorter.
        self.max_calls, self.tool_calling, self.max_tokens = max_calls, tool_calling, max_tokens
        # Qwen 0.5B wrote one call for every BFCL parallel request (0 of 20 right); told how many tasks there
        # are, it must write that many (train+dev: 0.250 -> 0.312 overall, parallel 0.00 -> 0.19).
        self.split_tasks = split_tasks
        # A call step per task picks each task's function; asked for all calls at once, Qwen wrote one per
        # listed function (BFCL train+dev: 0.438 -> 0.500). The task comes last: after the request, the
        # 17 * 23 of "Apple's stock price, and 17 * 23?" became get_stock_price(AAPL).
        self.call_per_task = call_per_task
        # How the split step reads the request (SPLIT_STEPS). "count_first": it writes its task count first, and the
        # list is held to that many lines; a finetune compile trained and served under it (agent@6) did worse than
        # on the plain split: test +0.067 against agent@5's +0.144, parallel 0.167 against 0.333.
        # "with_functions": it sees the function schemas, which say how many values one call takes (agent@7, trained
        # and served under it: test +0.156 [+0.078, +0.244], parallel 0.033 -> 0.400).
        # "as_calls": it reads the functions and writes each task as the call itself, `name(arg=value, ...)`: the form
        # the untrained coder model reached for under "with_functions" (`fact(5)`), where agent@7's adapter, taught
        # "fact: 5" lines, ran two tasks' values together or gave one task another's values. What a finetune compile
        # trains and serves (agent@11, LoRA on every layer: dev +0.200 [+0.033, +0.367], kept; test +0.289 [+0.189,
        # +0.389], parallel 0.033 -> 0.667; docs/results.md). The program as built keeps the plain split, the
        # baseline every agent compile is measured against (untrained, "as_calls" is level on dev).
        # Tried and removed: a call step over the whole request allowed up to max_calls where the split found one task
        # wrote one all the same (agent@7's adapter: identical scores); trained on whole-request rows of every
        # multi-call gold trace too (agent@8), test +0.100, parallel 0.367, below agent@7 (docs/results.md).
        if split_step not in SPLIT_STEPS:
            raise DspycError(f"unknown split_step {split_step!r}: choose {', '.join(SPLIT_STEPS)}")
        self.split_step = split_step
        self.split = dspy.Predict(SPLIT_STEPS[split_step])
        self.call = dspy.Predict(CallFunctions)
        self.native = dspy.Predict(NativeCall, tool_choice="required")

    def forward(
        self,
        question: str,
        functions: list[str] | None = None,
        schemas: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
    ) -> dspy.Prediction:
        schemas = schemas or []
        functions = functions or [render_function(f) for f in schemas]
        if self.tool_calling == "native":
            with dspy.context(adapter=dspy.JSONAdapter(use_native_function_calling=True)):
                pred = self.native(question=question, tools=[_stub_tool(f) for f in schemas])
            calls = [
                {"name": c.name, "arguments": dict(c.args)}
                for c in (pred.tool_calls.tool_calls if pred.tool_calls else [])
            ]
            return dspy.Prediction(calls=calls)
        fewest, most, tasks = 1, max_calls or self.max_calls, []
        if self.split_tasks and most > 1:  # exactly one call per task
            tasks = self.split_tasks_of(question, functions, most)[:most]
            fewest = most = max(len(tasks), 1)
        if self.call_per_task and len(tasks) > 1:  # (request, response_format) per call step
            one = calls_response_format(schemas, 1, min_calls=1)
            steps = [(task_request(question, task), one) for task in tasks]
        else:
            steps = [(question, calls_response_format(schemas, most, min_calls=fewest))]
        calls = [
            c
            for request, fmt in steps
            for c in self.call(
                question=request, functions=functions, config={"response_format": fmt, "max_tokens": self.max_tokens}
            ).calls
            or []
        ]
        return dspy.Prediction(calls=dedupe([_as_dict(c) for c in calls]))

    def split_tasks_of(self, question: str, functions: list[str], most: int) -> list[str]:
        """The split step's task lines, whichever split step it is."""
        if self.split_step in ("with_functions", "as_calls"):  # they read the function schemas
            pred = self.split(functions=functions, question=question)
        elif self.split_step == "count_first":
            pred = self.split(question=question, config={"response_format": counted_tasks_format(most)})
        else:
            pred = self.split(question=question)
        return task_lines(pred)


def task_lines(outputs: Any) -> list[str]:
    """A split step's task lines from its outputs (a Prediction or a trace's dict): `call_lines` under "as_calls",
    `tasks` under every other split step."""
    return outputs.get("tasks") or outputs.get("call_lines") or []


def counted_tasks_format(most: int) -> dict[str, Any]:
    """The split step's `response_format` under "count_first": `{"count": n, "tasks": [n lines]}` for n in 1..most,
    so the count is written first and the list holds exactly that many tasks."""
    line = {"type": "string", "maxLength": DEFAULT_MAX_STRING_LENGTH}
    branches = [
        {
            "type": "object",
            "properties": {
                "count": {"type": "integer", "enum": [n]},
                "tasks": {"type": "array", "items": line, "minItems": n, "maxItems": n},
            },
            "required": ["count", "tasks"],
            "additionalProperties": False,
        }
        for n in range(1, max(1, most) + 1)
    ]
    return {"type": "json_schema", "json_schema": {"name": "tasks", "schema": {"anyOf": branches}, "strict": True}}


def task_request(question: str, task: str) -> str:
    """The request a per-task call step sees: the task comes last (after the request, Qwen called the wrong function)."""
    return f'From the request "{question}", this call does only: {task}'


def dedupe(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop exact repeats: a small model fills the allowed list with copies, and a repeat never adds anything."""
    seen: set[str] = set()
    out = []
    for c in calls:
        key = json.dumps(c, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


class ToolAgent(dspy.Module):
    """A bounded tool loop over a registry; always returns an answer and the tool results behind it."""

    def __init__(
        self, registry: ToolRegistry, max_steps: int = 3, max_calls: int = 2, tool_calling: str = "constrained"
    ):
        super().__init__()
        self.registry, self.max_steps, self.max_calls = registry, max_steps, max_calls
        self.caller = FunctionCaller(max_calls=max_calls, tool_calling=tool_calling)
        self.next_step = dspy.Predict(NextStep)
        self.respond = dspy.Predict(AnswerFromResults)

    def forward(self, question: str) -> dspy.Prediction:
        schemas = self.registry.schemas()
        functions = [render_function(f) for f in schemas]
        results: list[ToolResult] = []
        seen: set[str] = set()
        calls = self.caller(question=question, functions=functions, schemas=schemas).calls
        steps = 0
        while calls and steps < self.max_steps:
            steps += 1
            # A repeated call brings nothing new; a weak model repeats rather than finishing, so it ends the loop.
            fresh = [c for c in calls if json.dumps(c, sort_keys=True, default=str) not in seen]
            if not fresh:
                break
            for c in fresh:
                seen.add(json.dumps(c, sort_keys=True, default=str))
                results.append(self.registry.call(c["name"], c["arguments"]))
            if steps >= self.max_steps:
                break
            nxt = self.next_step(
                question=question,
                functions=[*functions, render_function(FINISH)],
                results=[r.as_text() for r in results],
                config={"response_format": calls_response_format([*schemas, FINISH], 1)},
            )
            calls = [_as_dict(c) for c in nxt.calls or []]
            if any(c["name"] == "finish" for c in calls):
                break
        observations = [r.as_text() for r in results]
        answer = (
            self.respond(question=question, results=observations).answer
            if results
            else "No tool was called, so there is nothing to answer from."
        )
        return dspy.Prediction(answer=answer, tool_results=[r.model_dump() for r in results], steps=steps)


# --- what dspyc needs: data, build, metric, report ---------------------------------------------------

# Split sizes are per BFCL category (`--set test=40`): 30 test items each, so a compile's gain shows through its interval.
CONFIG = {
    "max_calls": 4,
    "tool_calling": "constrained",
    "max_tokens": 200,
    "split_tasks": True,
    "call_per_task": True,
    "split_step": "plain",
    "train": 10,
    "dev": 10,
    "test": 30,
}


def resolve_tool_calling(mode: str | None = None) -> str:
    """`auto`: native tool calls where DSPy knows the LM supports them (hosted models via LiteLLM); the
    constrained JSON schema elsewhere (the embedded SmolLM2's chat template ignores `tools`)."""
    s = get_settings()
    mode = mode or s.agent_tool_calling
    if mode == "auto":
        lm = dspy.settings.lm
        return (
            "native" if s.lm_backend == "litellm" and getattr(lm, "supports_function_calling", False) else "constrained"
        )
    if mode not in ("constrained", "native"):
        raise DspycError(f"unknown agent_tool_calling {mode!r}: choose constrained, native or auto")
    return mode


def tool_agent(s: Settings, max_steps: int | None, compiled: FunctionCaller | None) -> ToolAgent:
    """`dspyc ask`: a ToolAgent over the built-in tools, its function caller the compiled one when given."""
    from dspyc.tools.builtin import default_registry

    agent = ToolAgent(
        default_registry(s),
        max_steps=max_steps or s.agent_max_steps,
        tool_calling=resolve_tool_calling(s.agent_tool_calling),
    )
    if compiled is not None:  # the compiled caller, with the loop's own bounds
        compiled.max_calls, compiled.tool_calling = agent.caller.max_calls, agent.caller.tool_calling
        agent.caller = compiled
    return agent


def load_data(dataset: str, seed: int) -> BFCLDataset:
    data = load_bfcl(dataset if dataset.startswith("bfcl") else "bfcl", get_settings())
    data.split(seed, CONFIG["train"], CONFIG["dev"], CONFIG["test"])
    return data


def build(data: BFCLDataset, config: dict[str, Any]) -> FunctionCaller:
    cfg = CONFIG | config
    return FunctionCaller(
        max_calls=cfg["max_calls"],
        tool_calling=cfg["tool_calling"],
        max_tokens=cfg["max_tokens"],
        split_tasks=cfg["split_tasks"],
        call_per_task=cfg["call_per_task"],
        split_step=cfg["split_step"],
    )


SPLIT_WEIGHT = 3  # times a multi-task split row is trained


def gold_task(call: dict[str, Any]) -> str:
    """A task line for a gold call: what it does, then the argument values the request states ("power: 2, 3" and
    "power: 3, 5"). The leading name marks where each task starts: taught bare values, SmolLM2 ran a parallel
    request's tasks together ("5,10,15") or repeated a value until the length bound."""
    values = [v if isinstance(v, str) else json.dumps(v) for v in call["arguments"].values()]
    what = call["name"].split(".")[-1].replace("_", " ")
    return (f"{what}: {', '.join(values)}" if values else what)[:DEFAULT_MAX_STRING_LENGTH]


def gold_call_line(call: dict[str, Any]) -> str:
    """A task line under the "as_calls" split: the call itself, `name(arg=value, ...)`, values as Python literals."""
    args = ", ".join(f"{k}={v!r}" for k, v in call["arguments"].items())
    return f"{call['name']}({args})"[:DEFAULT_MAX_STRING_LENGTH]


def gold_trace(example: dspy.Example) -> list[dict[str, Any]]:
    """BFCL's possible answers as the trace `FunctionCaller` would leave: the split step's tasks, then one call step
    per task (or one on the request itself for a single task). The split row carries the count and the functions,
    and a row holds only what its step's signature names, so one trace fits every `split_step`. `dspyc distill
    agent` trains the student on these beside the teacher's passing traces; it never passes dev or test examples."""
    calls, q, functions = example.calls, example.question, example.functions
    if not calls or len(calls) > CONFIG["max_calls"]:  # the program could not write it: no label to learn
        return []
    tasks = [gold_task(c) for c in calls]
    steps = [(task_request(q, t), [c]) for t, c in zip(tasks, calls)] if len(calls) > 1 else [(q, calls)]
    # A split into several tasks is the rare step that decides a parallel request (a third of the split rows), and
    # the one the adapter learned least: agent@2's compiled program wrote fewer calls than asked on 24 of 30 parallel test items.
    # Weighing the per-task call rows twice as well (and 640 rows, gold_extra 300) did worse: agent@4, test +0.078.
    weight = SPLIT_WEIGHT if len(calls) > 1 else 1
    return [
        {
            "predictor": "split",
            "inputs": {"question": q, "functions": functions},  # every split step reads what it names of these
            "outputs": {"count": len(tasks), "tasks": tasks, "call_lines": [gold_call_line(c) for c in calls]},
            "weight": weight,
        },
        *(
            {"predictor": "call", "inputs": {"question": r, "functions": functions}, "outputs": {"calls": c}}
            for r, c in steps
        ),
    ]


def keep_trace(example: dspy.Example, calls: list[Any]) -> bool:
    """A passing teacher trace is SFT data only when its split step found as many tasks as the gold answer has
    calls: Qwen often split one request in two, wrote the same call twice, and passed once `dedupe` merged them."""
    tasks = next((task_lines(c.outputs) for c in calls if c.predictor == "split"), None)
    return tasks is None or max(len(tasks), 1) == len(example.calls)


def check(example: dspy.Example, pred: dspy.Prediction) -> bool:
    return ast_check(
        example.schemas, to_bfcl_calls(pred.get("calls") or []), example.possible_answer, example.category
    ).valid


def metric(example: dspy.Example, pred: dspy.Prediction, trace=None) -> float | bool:
    ok = check(example, pred)
    return ok if trace is not None else float(ok)


def report(results: list[tuple[dspy.Example, dspy.Prediction]]) -> dict[str, float]:
    """Overall AST accuracy and one `accuracy_<category>` per BFCL category (a failed call counts as wrong)."""
    scores = {"accuracy": mean(float(check(ex, p)) for ex, p in results)}
    for cat in dict.fromkeys(ex.category for ex, _ in results):
        scores[f"accuracy_{cat}"] = mean(float(check(ex, p)) for ex, p in results if ex.category == cat)
    return scores


PROGRAM = ProgramSpec(
    name="agent",
    build=build,
    load_data=load_data,
    metric=metric,
    report=report,
    dataset="bfcl",
    default_recipe="bootstrap",
    config=CONFIG,
    # `--objective cost|pareto`: the split step, one call step per task, the reply's token bound
    cost_space={"split_tasks": [True, False], "call_per_task": [True, False], "max_tokens": [200, 120]},
    gold_trace=gold_trace,
    keep_trace=keep_trace,
    finetune_config={"split_step": "as_calls"},  # the split step a trained adapter reads: see FunctionCaller
    tool_agent=tool_agent,
    sft_recipe="sft_agent",  # `dspyc distill agent`: sft_r16_qv plus BFCL's gold labels
    description="Function calling under a per-call JSON schema (scored on BFCL) and a bounded tool loop (dspyc ask).",
)
