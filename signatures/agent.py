"""Signatures of the tool-calling agent (`programs/agent.py`).

The output schema of `CallFunctions` is narrowed per call: the program sends a `response_format` with one
`anyOf` branch per available function (`dspyc.tools.schema.calls_response_format`), so the model can only
name a listed function, with arguments of the declared types.
"""

from typing import Any

import dspy
from pydantic import BaseModel


class FunctionCall(BaseModel):
    name: str
    arguments: dict[str, Any]


class SplitTasks(dspy.Signature):
    """Split the request into the separate tasks it asks for. A request about one thing is one task; "X for A and B" is two tasks."""

    question: str = dspy.InputField(desc="the user's request")
    tasks: list[str] = dspy.OutputField(desc="one short line per task", max_length=4)


class CountThenSplit(dspy.Signature):
    """Count the separate tasks the request asks for, then write one short line per task. A request about one thing is one task; "X for A and B" is two tasks; "X of 5, 10 and 15" is three."""

    question: str = dspy.InputField(desc="the user's request")
    count: int = dspy.OutputField(desc="how many separate tasks the request asks for")
    tasks: list[str] = dspy.OutputField(desc="exactly `count` short lines, one per task", max_length=4)


class SplitWithFunctions(dspy.Signature):
    """Split the request into the separate function calls it asks for: one task per call, with the values that call takes. A request about one thing is one task; "X for A and B" is two tasks."""

    # The functions come first, as in CallFunctions: they say how many values one call takes.
    functions: list[str] = dspy.InputField(desc="available functions: name(arg: type, optional?: type) - description")
    question: str = dspy.InputField(desc="the user's request")
    tasks: list[str] = dspy.OutputField(desc="one short line per call", max_length=4)


class SplitIntoCalls(dspy.Signature):
    """Write the separate function calls the request asks for, one per line as name(arg=value, ...), with the values the request gives. A request about one thing is one call; "X for A and B" is two calls."""

    functions: list[str] = dspy.InputField(desc="available functions: name(arg: type, optional?: type) - description")
    question: str = dspy.InputField(desc="the user's request")
    # Not `tasks`: a gold split row carries both, and each split step learns the lines its own field names.
    call_lines: list[str] = dspy.OutputField(desc="one line per call: name(arg=value, ...)", max_length=4)


class CallFunctions(dspy.Signature):
    """Answer the request by calling the right function(s) from the list, with argument values taken from the request. Make one call per distinct thing the request asks for."""

    # The functions come before the request: after it, Qwen 0.5B called the first listed function with its
    # example value ("Price of AAPL?" -> get_weather(city='Paris')); BFCL train+dev 0.312 -> 0.438, multiple 0.19 -> 0.56.
    functions: list[str] = dspy.InputField(desc="available functions: name(arg: type, optional?: type) - description")
    question: str = dspy.InputField(desc="the user's request")
    calls: list[FunctionCall] = dspy.OutputField(
        desc="the function calls, each with a name from the list and its arguments"
    )


class NextStep(dspy.Signature):
    """Decide the next step. If the results so far answer the request, call `finish`. Call another function only for a part of the request that no result covers yet."""

    functions: list[str] = dspy.InputField(desc="available functions")
    question: str = dspy.InputField(desc="the user's request")
    results: list[str] = dspy.InputField(desc="calls made so far and what they returned")
    calls: list[FunctionCall] = dspy.OutputField(desc="one function call, or finish")


class AnswerFromResults(dspy.Signature):
    """Answer the request in one or two sentences that state the values the function results give (for weather: the temperature and the conditions). Use only the results."""

    results: list[str] = dspy.InputField(desc="function calls and what they returned")
    question: str = dspy.InputField(desc="the user's request")
    answer: str = dspy.OutputField(desc="one or two sentences", max_length=240)
