"""`dspyc serve` as a real process: the load benchmark at CI size (stub upstream) and the openai client
against the real vLLM engine."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import openai
import pytest

from dspyc.serve.bench import _port, _wait, bench_serve, make_project

pytestmark = pytest.mark.integration


def test_bench_serve_small_has_no_errors(tmp_path):
    from dspyc.settings import Settings

    result = bench_serve(
        requests=300, concurrency=32, engine_requests=0, save=False, s=Settings(artifacts_root=tmp_path / "artifacts")
    )
    stub = result["stub"]
    assert stub["server"]["requests"] == 300 and stub["server"]["errors"] == 0
    assert stub["lm_requests"] == 300 and stub["direct"]["errors"] == 0  # same prompts, replayed directly


def test_openai_client_against_the_real_engine(live_engine, tmp_path):
    env = make_project(tmp_path / "project")
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspyc.cli", "serve", "--alias", "latest", "--port", str(port)],
        cwd=env["DSPYC_PROJECT_DIR"],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | env | {"DSPYC_SERVE_API_KEYS": "test-key", "DSPYC_MAX_TOKENS": "32"},
    )
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test-key", max_retries=0, timeout=300)
        assert "bench_qa" in {m.id for m in client.models.list()}
        reply = client.chat.completions.create(
            model="bench_qa", messages=[{"role": "user", "content": "What is the capital of France?"}]
        )
        assert reply.model == "bench_qa@1" and isinstance(reply.choices[0].message.content, str)
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0  # real tokens from vLLM
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer test-key"})
        assert 'dspyc_requests_total{endpoint="chat",program="bench_qa",status="200",version="1"} 1.0' in r.text
        out = subprocess.run(
            [sys.executable, "-m", "dspyc.cli", "usage", "--since", "1h", "--json"],
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert '"program": "bench_qa"' in out.stdout and '"errors": 0' in out.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
