"""The program server's endpoints, auth, limits and records, over an instant stub upstream."""

from __future__ import annotations

import json
import threading
import time

import pytest

from dspyc import loading
from dspyc.errors import DspycError


def test_health_and_readiness(client):
    assert client.get("/healthz", headers={"Authorization": ""}).json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["programs"]["qa"]["version"] == 1


def test_readiness_fails_when_a_program_cannot_load(serve_settings, store, make, fake_store):
    store.alias["pair"] = 9  # no such version
    c, _ = make(serve_settings, store)
    with c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "not found" in r.json()["programs"]["pair"]["error"]
        r = c.post(
            "/v1/programs/pair/predict", json={"left": "a", "right": "b"}, headers={"Authorization": "Bearer k1"}
        )
        assert r.status_code == 503


def test_predict_is_typed_and_carries_version_and_usage(client):
    r = client.post("/v1/programs/qa/predict", json={"question": "Capital of France?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-dspyc-version"] == "qa@1" and body["version"] == 1
    assert set(body["outputs"]) == {"answer", "confidence"} and isinstance(body["outputs"]["confidence"], float)
    assert body["usage"]["lm_calls"] == 1 and body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["estimated_cost_usd"] > 0


def test_openapi_schema_is_exact(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["QaInputs"]["required"] == ["question"] and schemas["QaInputs"]["additionalProperties"] is False
    assert set(schemas["PairInputs"]["properties"]) == {"left", "right"}
    assert set(schemas["QaOutputs"]["properties"]) == {"answer", "confidence"}
    assert "/v1/programs/qa/predict" in spec["paths"] and "/v1/chat/completions" in spec["paths"]


def test_predict_rejects_bad_inputs(client):
    assert client.post("/v1/programs/qa/predict", json={"question": 3}).status_code == 422
    assert client.post("/v1/programs/qa/predict", json={"question": "x", "extra": 1}).status_code == 422
    assert client.post("/v1/programs/qa/predict", json={}).status_code == 422


def test_pinned_version_and_unknown_version(client, store):
    r = client.post("/v1/programs/qa/predict?version=2", json={"question": "q"})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["x-dspyc-version"] == "qa@2"
    assert client.post("/v1/programs/qa/predict?version=7", json={"question": "q"}).status_code == 404
    assert client.post("/v1/programs/qa/predict?version=nope", json={"question": "q"}).status_code == 404


def test_programs_and_models_listing(client):
    data = client.get("/v1/programs").json()["data"]
    qa = next(p for p in data if p["name"] == "qa")
    assert qa["version"] == 1 and qa["aliases"] == {"champion": 1} and qa["input_schema"]["required"] == ["question"]
    assert client.get("/v1/programs/pair").json()["name"] == "pair"
    assert client.get("/v1/programs/nope").status_code == 404
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert {"qa", "pair"} <= set(ids)


def test_chat_completions(client):
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "qa",
            "temperature": 0.3,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Capital of France?"}],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "ok" and body["model"] == "qa@1"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "qa@2",
            "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "q"}],
        },
    )
    assert r.json()["model"] == "qa@2" and set(json.loads(r.json()["choices"][0]["message"]["content"])) == {
        "answer",
        "confidence",
    }
    # several inputs: the message is a JSON object of them
    r = client.post(
        "/v1/chat/completions",
        json={"model": "pair", "messages": [{"role": "user", "content": '{"left": "a", "right": "b"}'}]},
    )
    assert r.status_code == 200 and r.json()["dspyc"]["outputs"]["verdict"] is True
    r = client.post(
        "/v1/chat/completions", json={"model": "pair", "messages": [{"role": "user", "content": "not json"}]}
    )
    assert r.status_code == 422 and "left, right" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 404
    r = client.post("/v1/chat/completions", json={"model": "qa", "messages": [{"role": "system", "content": "q"}]})
    assert r.status_code == 422


def test_chat_stream_is_one_chunk_then_done(client):
    r = client.post(
        "/v1/chat/completions", json={"model": "qa", "stream": True, "messages": [{"role": "user", "content": "q"}]}
    )
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["delta"]["content"] == "ok"


def test_auth(client):
    anon = {"Authorization": ""}
    for method, path in [("get", "/v1/programs"), ("get", "/v1/models"), ("get", "/metrics")]:
        assert getattr(client, method)(path, headers=anon).status_code == 401
    assert (
        client.post(
            "/v1/programs/qa/predict", json={"question": "q"}, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    r = client.post(
        "/v1/chat/completions", json={"model": "qa", "messages": [{"role": "user", "content": "q"}]}, headers=anon
    )
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/programs", headers={"Authorization": "Bearer k2"}).status_code == 200
    assert client.get("/v1/programs", headers={"Authorization": "", "X-API-Key": "k1"}).status_code == 200


def test_no_keys_needs_explicit_dev_mode(serve_settings, store, make, fake_store):
    s = serve_settings.model_copy(update={"serve_api_keys": ""})
    with pytest.raises(DspycError, match="--dev"):
        make(s, store)
    c, _ = make(s, store, dev=True)
    with c:
        assert c.get("/v1/programs").status_code == 200
        assert "dev mode" in c.get("/healthz").json()["auth"]


def test_dev_mode_refused_off_loopback(serve_settings):
    from dspyc.serve.server import serve

    with pytest.raises(DspycError, match="loopback"):
        serve(host="0.0.0.0", dev=True, s=serve_settings)


def test_body_and_input_size_limits(serve_settings, store, make, fake_store):
    s = serve_settings.model_copy(update={"serve_max_body_bytes": 2000, "serve_max_input_chars": 100})
    c, _ = make(s, store)
    with c:
        h = {"Authorization": "Bearer k1"}
        assert c.post("/v1/programs/qa/predict", json={"question": "x" * 5000}, headers=h).status_code == 413
        assert c.post("/v1/programs/qa/predict", json={"question": "x" * 500}, headers=h).status_code == 422
        assert c.post("/v1/programs/qa/predict", json={"question": "x" * 50}, headers=h).status_code == 200

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"x" * 500

        r = c.post("/v1/programs/qa/predict", content=chunks(), headers=h | {"Content-Type": "application/json"})
        assert r.status_code == 413


def test_saturation_answers_503_and_timeout_504(serve_settings, stub, make, fake_store):
    store = fake_store(stub.url, slow_s=1.0)
    s = serve_settings.model_copy(update={"serve_max_concurrency": 1, "serve_max_queue": 1, "serve_timeout_s": 3.0})
    c, _ = make(s, store)
    with c:
        h = {"Authorization": "Bearer k1"}
        results: list[int] = []

        def call():
            results.append(c.post("/v1/programs/qa/predict", json={"question": "q"}, headers=h).status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results).count(200) >= 1 and 503 in results
        r = c.post("/v1/programs/qa/predict", json={"question": "q"}, headers=h)
        assert r.status_code == 200
        assert 'dspyc_rejected_total{reason="saturated"}' in c.get("/metrics", headers=h).text
    store = fake_store(stub.url, slow_s=2.0)
    c, _ = make(serve_settings.model_copy(update={"serve_timeout_s": 0.5}), store)
    with c:
        r = c.post("/v1/programs/qa/predict", json={"question": "q"}, headers={"Authorization": "Bearer k1"})
        assert r.status_code == 504 and "timeout" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/programs/..%2F..%2Fetc/predict",
        "/v1/programs/../../etc/passwd",
        "/v1/programs/%2e%2e/predict",
        "/v1/programs/qa/predict?version=..%2F1",
        "/v1/programs/Qa/predict",
    ],
)
def test_no_path_outside_the_store(client, path):
    r = client.post(path, json={"question": "q"})
    assert r.status_code in (404, 405, 422)


def test_model_refs_are_checked_before_the_store():
    from dspyc.serve.pool import UnknownProgram, parse_model_ref

    assert parse_model_ref("rag@3") == ("rag", "3") and parse_model_ref("rag") == ("rag", None)
    for bad in ("../rag", "rag@../../x", "rag/x", "/etc/passwd", "rag@3/..", ""):
        with pytest.raises(UnknownProgram):
            parse_model_ref(bad)


def test_request_log_and_metrics(client, serve_settings):
    client.post("/v1/programs/qa/predict", json={"question": "secret question"})
    client.post("/v1/programs/qa/predict", json={"question": 1})  # 422 at the edge: not a program run
    client.post("/v1/programs/qa/predict?version=7", json={"question": "q"})
    client.app.state.server.log._f.flush()
    lines = [json.loads(line) for line in serve_settings.serve_log_path.read_text().splitlines()]
    ok = next(r for r in lines if r["status"] == 200)
    assert ok["inputs"] == {"question": "secret question"} and ok["version"] == 1 and ok["prompt_tokens"] > 0
    assert ok["key_id"] and "k1" not in json.dumps(ok)
    assert any(r["status"] == 404 for r in lines)
    text = client.get("/metrics").text
    assert 'dspyc_requests_total{endpoint="predict",program="qa",status="200",version="1"}' in text
    assert 'dspyc_tokens_total{kind="prompt",program="qa",version="1"}' in text
    assert "dspyc_request_latency_seconds_bucket" in text and "dspyc_cost_usd_total" in text


def test_redacted_log_keeps_no_payload(serve_settings, store, make, fake_store):
    s = serve_settings.model_copy(update={"serve_log": "redact"})
    c, _ = make(s, store)
    with c:
        c.post("/v1/programs/qa/predict", json={"question": "secret question"}, headers={"Authorization": "Bearer k1"})
    text = s.serve_log_path.read_text()
    assert "secret" not in text and '"chars": 15' in text


def test_hot_swap_under_concurrent_requests(serve_settings, store, make, fake_store):
    """The alias moves while requests run: none fails, each names the version that served it, and both versions serve."""
    s = serve_settings.model_copy(update={"serve_poll_s": 0.05})
    c, pool = make(s, store)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()
    with c:

        def hammer():
            while not stop.is_set():
                r = c.post("/v1/programs/qa/predict", json={"question": "q"}, headers={"Authorization": "Bearer k1"})
                seen.append((r.status_code, r.json().get("version")))
                assert r.headers.get("x-dspyc-version") == f"qa@{r.json().get('version')}"

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        store.alias["qa"] = 2  # `dspyc promote qa 2`
        deadline = time.monotonic() + 10
        while (pool.current("qa").version != 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert pool.current("qa").version == 2
        assert {code for code, _ in seen} == {200}
        versions = [v for _, v in seen]
        assert 1 in versions and 2 in versions
        assert versions.index(2) > 0 and 1 not in versions[-4:]  # once swapped, new requests get the new version
        assert c.get("/v1/programs/qa", headers={"Authorization": "Bearer k1"}).json()["swaps"] == 1
        assert (
            'dspyc_hot_swaps_total{program="qa"} 1.0' in c.get("/metrics", headers={"Authorization": "Bearer k1"}).text
        )


def test_failed_swap_keeps_serving_the_old_version(serve_settings, store, make, fake_store):
    c, pool = make(serve_settings, store)
    with c:
        store.alias["qa"] = 5  # the alias points at a version that does not load
        assert pool.refresh() == []
        assert pool.current("qa").version == 1 and "not found" in pool.status("qa").error
        assert (
            c.post(
                "/v1/programs/qa/predict", json={"question": "q"}, headers={"Authorization": "Bearer k1"}
            ).status_code
            == 200
        )


def test_student_adapters_are_found_in_the_store(serve_settings):
    from dspyc.serve.server import student_adapters

    root = serve_settings.artifacts_dir
    v = root / "tone" / "4"
    (v / "adapter").mkdir(parents=True)
    (v / "adapter" / "adapter_config.json").write_text("{}")
    (v / "manifest.json").write_text(
        json.dumps(
            {
                "program": "tone",
                "version": 4,
                "kind": "student",
                "config": {"student": {"lora_name": "tone-abc", "adapter": "adapter"}},
            }
        )
    )
    (root / "rag" / "1").mkdir(parents=True)
    (root / "rag" / "1" / "manifest.json").write_text(json.dumps({"program": "rag", "version": 1, "kind": "program"}))
    assert student_adapters(serve_settings) == {"tone-abc": v / "adapter"}


def _manifest(kind: str, backend: str, model: str, base: str | None = None, adapter=None):
    from types import SimpleNamespace

    student = {"lora_name": "tone-abc", "base_model": base} if kind == "student" else None
    return SimpleNamespace(
        program="tone",
        version=1,
        kind=kind,
        lm=SimpleNamespace(backend=backend, model=model),
        config={"student": student} if student else {},
        adapter=adapter,
    )


def test_each_version_routes_to_the_engine_of_its_model(serve_settings):
    from dspyc import artifacts
    from dspyc.loading import serving_model

    s = serve_settings.model_copy(update={"lm_model": "qwen-x", "adapter_serving": "lora"})
    assert serving_model(_manifest("program", "engine", "smol-y"), s) == "smol-y"  # compiled on another model
    assert serving_model(_manifest("program", "url", "remote"), s) is None  # the program LM (DSPYC_LM_*)
    assert serving_model(_manifest("student", "engine", "smol-y", base="smol-z"), s) == "smol-z"  # its base model
    ft = artifacts.AdapterRef(lora_name="tone-ft-1", base_model="smol-w")  # a weights compile: its adapter's base
    assert serving_model(_manifest("program", "url", "remote", adapter=ft), s) == "smol-w"
    assert (
        serving_model(_manifest("program", "engine", "smol-y"), s.model_copy(update={"lm_backend": "transformers"}))
        is None
    )


def test_serve_starts_only_the_engines_it_needs_and_lora_only_for_students(serve_settings, monkeypatch):
    from dspyc import artifacts, engine, registry
    from dspyc.serve import server

    s = serve_settings.model_copy(update={"lm_model": "qwen-x", "serve_alias": "latest", "adapter_serving": "lora"})
    root = s.artifacts_dir
    for program, version, base in (("tone", 2, "smol-y"), ("other", 1, "tiny-z")):
        v = root / program / str(version)
        (v / "adapter").mkdir(parents=True)
        (v / "adapter" / "adapter_config.json").write_text("{}")
        (v / "manifest.json").write_text(
            json.dumps(
                {
                    "program": program,
                    "version": version,
                    "kind": "student",
                    "config": {"student": {"lora_name": f"{program}-a", "adapter": "adapter", "base_model": base}},
                }
            )
        )
    assert server.student_adapters(s, "smol-y") == {"tone-a": root / "tone" / "2" / "adapter"}
    served = {
        "rag": _manifest("program", "engine", "qwen-x"),
        "agent": _manifest("program", "url", "remote"),
        "tone": _manifest("student", "engine", "smol-y", base="smol-y"),
    }
    monkeypatch.setattr(registry, "available", lambda: list(served) + ["broken"])
    monkeypatch.setattr(loading, "resolve_version", lambda name, tag, s=None: 1)
    monkeypatch.setattr(artifacts, "read_manifest", lambda name, version, s=None, verify=True: served[name])
    calls = []
    monkeypatch.setattr(
        engine, "ensure", lambda s, model=None, lora=False: calls.append(("ensure", model, lora)) or f"http://{model}"
    )
    monkeypatch.setattr(engine, "load_lora", lambda name, path, s, model=None: calls.append(("load", name, model)))
    assert server.prepare_engine(s) == {"qwen-x": "http://qwen-x", "smol-y": "http://smol-y"}
    # the program LM without LoRA, the student's base with it and its stored adapters; tiny-z is not served
    assert calls == [("ensure", "qwen-x", False), ("ensure", "smol-y", True), ("load", "tone-a", "smol-y")]
