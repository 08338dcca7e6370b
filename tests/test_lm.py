"""The LM factory's process-wide fix to DSPy's per-call pricing lookup."""

from dspy.clients import capabilities, costs

from dspyc.lm import cache_misses


def test_a_model_without_metadata_is_looked_up_once():
    calls = []

    def lookup(provider, model, *, namespaces=None):
        calls.append(model)
        return {"input_cost_per_token": 1e-6} if model == "known" else {}

    cached = cache_misses(lookup)
    for _ in range(3):
        assert cached("openai", "self-hosted") == {}
        assert cached("openai", "known") == {"input_cost_per_token": 1e-6}
    assert cached("openai", "self-hosted", namespaces=["vllm"]) == {}  # another key
    assert calls == ["self-hosted", "known", "known", "known", "self-hosted"]


def test_dspy_prices_through_the_cache_and_still_knows_hosted_models():
    assert costs.model_info.dspyc_cached and capabilities.model_info.dspyc_cached
    assert costs.model_info("openai", "qwen2.5-coder-0.5b-instruct") == {}
    assert costs.model_info("openai", "gpt-4o-mini")  # a model in DSPy's table keeps its metadata
