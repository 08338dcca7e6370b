import pytest

pytestmark = pytest.mark.integration


def test_inprocess_backend_parses_constrained_outputs():
    """The transformers backend enforces the JSON schema too: the same constrained calls parse without vLLM."""
    from typing import Literal

    import dspy

    from dspyc.lm import configure
    from dspyc.settings import Settings

    lm = configure(Settings(lm_backend="transformers"), cache=False, max_tokens=96)

    class Sentiment(dspy.Signature):
        """Classify the sentiment of the text."""

        text: str = dspy.InputField()
        sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()

    pred = dspy.Predict(Sentiment)(text="What a wonderful day!")
    assert pred.sentiment in ("positive", "negative", "neutral")
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 96
