"""The engine bench's compile-like prefill workload (the engine itself is benchmarked, not tested)."""

import httpx

from dspyc import bench
from dspyc.settings import get_settings


def test_prefill_prompts_share_the_instruction_and_differ_in_passages():
    prompts = bench.rag_prompts(get_settings(), n=5)
    assert len(prompts) == 5
    assert {p[0]["content"] for p in prompts} == {bench.PREFILL_SYSTEM}
    users = [p[1]["content"] for p in prompts]
    assert len(set(users)) == 5 and all(u.count("\n[") == 6 for u in users)  # six passages each


def test_prefill_throughput_counts_prompt_tokens_and_the_median_latency(monkeypatch):
    sent = []

    def post(url, json, **kw):
        sent.append(json)
        return httpx.Response(200, json={"usage": {"prompt_tokens": 700, "completion_tokens": 4}},
                              request=httpx.Request("POST", url))

    monkeypatch.setattr(bench.httpx, "post", post)
    out = bench.prefill_throughput("http://x/v1", "m", "k", bench.rag_prompts(get_settings(), n=3), concurrency=2)
    assert (out["requests"], out["prompt_tokens"], out["completion_tokens"]) == (3, 2100, 12)
    assert out["prompt_tokens_per_s"] > 0 and out["p50_latency_s"] >= 0
    assert all(j["max_tokens"] == 16 and j["temperature"] == 0 for j in sent)
