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
        return httpx.Response(
            200, json={"usage": {"prompt_tokens": 700, "completion_tokens": 4}}, request=httpx.Request("POST", url)
        )

    monkeypatch.setattr(bench.httpx, "post", post)
    out = bench.prefill_throughput("http://x/v1", "m", "k", bench.rag_prompts(get_settings(), n=3), concurrency=2)
    assert (out["requests"], out["prompt_tokens"], out["completion_tokens"]) == (3, 2100, 12)
    assert out["prompt_tokens_per_s"] > 0 and out["p50_latency_s"] >= 0
    assert all(j["max_tokens"] == 16 and j["temperature"] == 0 for j in sent)


def test_the_compile_bench_times_the_engine_from_an_empty_prefix_cache(monkeypatch, tmp_path):
    """The engine is restarted (its prefix cache emptied) before the cold run and started before the clock; the
    in-process run comes next, the warm DSPy-cache run last."""
    from types import SimpleNamespace

    import dspy

    from dspyc import compiler

    events = []
    monkeypatch.setattr(bench.engine, "down", lambda s: events.append("down"))
    monkeypatch.setattr(bench.engine, "ensure", lambda s: events.append("up"))
    monkeypatch.setattr(bench.engine, "status", lambda s: None)
    monkeypatch.setattr(dspy, "configure_cache", lambda **kw: events.append("fresh DSPy cache"))
    monkeypatch.setattr(bench, "_save", lambda name, result, s: None)

    def compile_program(name, recipe, s, lm_overrides, **kw):
        events.append((s.lm_backend, s.num_threads, lm_overrides["cache"]))
        return SimpleNamespace(
            usage={"lm_calls": 2, "input_tokens": 10, "output_tokens": 1},
            metrics={"compiled": {"dev": {"metric": 0.5}}},
        )

    monkeypatch.setattr(compiler, "compile_program", compile_program)
    out = bench.bench_compile("rag", s=get_settings().model_copy(update={"artifacts_root": tmp_path}))
    assert events == [
        "fresh DSPy cache",
        "down",
        "up",
        ("engine", 16, True),
        ("transformers", 1, False),
        ("engine", 16, True),
    ]
    assert list(out["runs"]) == ["engine, cold caches", "in-process, sequential", "engine, warm DSPy cache (re-run)"]
    runs = out["runs"]  # the speedup is in-process time over engine time, as measured
    assert out["engine_speedup"] == round(
        runs["in-process, sequential"]["wall_s"] / max(runs["engine, cold caches"]["wall_s"], 1e-3), 2
    )
