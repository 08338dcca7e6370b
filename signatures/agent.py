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


class CallFunctions(dspy.Signature):
    """Answer the request by calling the right function(s) from the list, with argument values taken from the request. Make one call per distinct thing the request asks for."""

    question: str = dspy.InputField(desc="the user's request")
    functions: list[str] = dspy.InputField(desc="available functions: name(arg: type, optional?: type) - description")
    calls: list[FunctionCall] = dspy.OutputField(desc="the function calls, each with a name from the list and its arguments")


class NextStep(dspy.Signature):
    """Decide the next step: call another function if the results so far do not answer the request yet, or call `finish` when they do."""

    question: str = dspy.InputField(desc="the user's request")
    functions: list[str] = dspy.InputField(desc="available functions")
    results: list[str] = dspy.InputField(desc="calls made so far and what they returned")
    calls: list[FunctionCall] = dspy.OutputField(desc="one function call, or finish")


class AnswerFromResults(dspy.Signature):
    """Answer the request in one or two sentences using only the function results."""

    question: str = dspy.InputField(desc="the user's request")
    results: list[str] = dspy.InputField(desc="function calls and what they returned")
    answer: str = dspy.OutputField(desc="a short answer stating the values from the results")
