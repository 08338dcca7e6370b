import socket

import httpx
import pytest

from dspyc import engine
from dspyc.errors import DspycError, EngineError
from dspyc.settings import Settings


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        s = Settings(cache_dir=tmp_path, engine_port=port)
        with pytest.raises(EngineError, match=f"port {port} on 127.0.0.1 is in use"):
            engine.up(s)


def test_pick_port_skips_busy_ports():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        busy = sock.getsockname()[1]
        assert engine.pick_port("127.0.0.1", start=busy, tries=5) != busy


def test_command_has_lora_and_loopback(tmp_path):
    s = Settings(cache_dir=tmp_path)
    cmd = engine.build_command(tmp_path / "python", "/m", "m", "127.0.0.1", 8400, s, {"tone": "/a"})
    assert "--enable-lora" in cmd and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--lora-modules") + 1] == "tone=/a"


def test_status_clears_stale_state(tmp_path):
    s = Settings(cache_dir=tmp_path)
    s.engine_dir.mkdir(parents=True)
    (s.engine_dir / "state.json").write_text(engine.EngineState(pid=2**22 + 7, host="127.0.0.1", port=1, model="m",
                                                                 served_model="m", started_at=0).model_dump_json())
    assert engine.status(s) is None and not (s.engine_dir / "state.json").exists()


def test_failed_start_reports_root_cause_from_log(tmp_path):
    s = Settings(cache_dir=tmp_path)
    s.engine_dir.mkdir(parents=True)
    engine.log_file(s).write_text("INFO ok\nERROR ValueError: Available memory is low\nRuntimeError: Engine core initialization failed\n")
    assert engine._last_error_line(s) == "ValueError: Available memory is low"


def test_unreachable_url_is_a_one_line_error():
    from dspyc.lm import build_lm

    with pytest.raises(DspycError, match="unreachable"):
        build_lm(Settings(lm_url="http://127.0.0.1:9/v1"))


def test_unknown_backend_is_refused():
    from dspyc.lm import build_lm

    with pytest.raises(DspycError, match="unknown lm_backend"):
        build_lm(Settings(lm_backend="nope"))


@pytest.mark.integration
def test_engine_serves_and_is_reused(live_engine):
    s = Settings()
    assert engine.healthy(live_engine.base_url)
    assert engine.up(s, quiet=True).pid == live_engine.pid  # healthy engine reused, not restarted
    r = httpx.get(f"{live_engine.base_url}/models", headers={"Authorization": f"Bearer {s.lm_api_key}"})
    assert live_engine.served_model in [m["id"] for m in r.json()["data"]]


@pytest.mark.integration
def test_constrained_calls_parse_through_engine(live_engine):
    from typing import Literal

    import dspy

    from dspyc.lm import configure

    configure(Settings(), cache=False)

    class Sentiment(dspy.Signature):
        """Classify the sentiment of the text."""

        text: str = dspy.InputField()
        sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()
        keywords: list[str] = dspy.OutputField()

    cot = dspy.ChainOfThought("question -> answer")
    out = cot(question="What is the capital of France?")
    assert isinstance(out.answer, str) and out.answer
    pred = dspy.Predict(Sentiment)(text="I love this film, it is wonderful.")
    assert pred.sentiment in ("positive", "negative", "neutral") and isinstance(pred.keywords, list)


@pytest.mark.integration
def test_url_backend_talks_to_a_running_server(live_engine, monkeypatch):
    import dspy

    from dspyc.lm import build_lm

    lm = build_lm(Settings(lm_url=live_engine.base_url), cache=False, max_tokens=8)
    assert lm.model == f"openai/{live_engine.served_model}"
    assert isinstance(lm("Say hi")[0], str)
    assert isinstance(dspy.settings, object)


def test_dtype_setting_wins_over_auto(tmp_path):
    assert engine.engine_dtype(Settings(cache_dir=tmp_path, engine_dtype="bfloat16")) == "bfloat16"
    auto = engine.engine_dtype(Settings(cache_dir=tmp_path))
    assert auto == ("bfloat16" if engine.has_cuda() or engine.cpu_has_native_bf16() else "float32")
