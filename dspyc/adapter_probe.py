"""The calls `dspyc adapter-check` makes: Predict, ChainOfThought, a typed pydantic output, a list and a
Literal field. Module-level and without `from __future__ import annotations`, so DSPy can resolve every
output type into a JSON schema (a signature defined inside a function, with string annotations, cannot)."""

from typing import Literal

import dspy
import pydantic


class City(pydantic.BaseModel):
    name: str
    country: str
    population_millions: float


class Describe(dspy.Signature):
    """Give structured facts about the city."""

    city: str = dspy.InputField()
    facts: City = dspy.OutputField()


class Keywords(dspy.Signature):
    """List the keywords of the text."""

    text: str = dspy.InputField()
    keywords: list[str] = dspy.OutputField()


class Sentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()
    confidence: float = dspy.OutputField()


def adapter_calls() -> list[tuple[dspy.Module, dict[str, str]]]:
    """200 calls, the five kinds interleaved, so any prefix mixes them."""
    cities = ["Paris", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul"] * 4
    topics = [f"the {t} of {c}" for t, c in zip(["history", "food", "weather", "music"] * 10, cities)]
    reviews = [f"{a} {t}." for a, t in zip(["I loved", "I hated", "It was fine:", "Terrible,", "Wonderful"] * 8, topics)]
    qa, cot = dspy.Predict("question -> answer"), dspy.ChainOfThought("question -> answer")
    calls = []
    for i in range(40):
        calls += [(qa, {"question": f"What is {topics[i]} like?"}), (cot, {"question": f"Which country is {cities[i]} in?"}),
                  (dspy.Predict(Describe), {"city": cities[i]}), (dspy.Predict(Keywords), {"text": reviews[i]}),
                  (dspy.Predict(Sentiment), {"review": reviews[i]})]
    return calls
