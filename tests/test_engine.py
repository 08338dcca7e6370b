import os
import socket
import subprocess
from pathlib import Path

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


def test_the_embedding_engine_serves_minilm_on_the_pooling_runner(tmp_path):
    s = Settings(cache_dir=tmp_path)
    from dspyc.retrieval.embeddings import DEFAULT_EMBED_MODEL, embedding_model_path

    assert engine.engine_name(s, engine.EMBED) == DEFAULT_EMBED_MODEL  # its own folder, state and log
    assert engine._resolved(engine.EMBED, s) == str(embedding_model_path())
    cmd = engine.build_command(tmp_path / "py", "/minilm", DEFAULT_EMBED_MODEL, "127.0.0.1", 8460, s, {})
    assert cmd[cmd.index("--runner") + 1] == "pooling" and cmd[cmd.index("--dtype") + 1] == "float32"
    assert "--enable-lora" not in cmd and "--structured-outputs-config" not in cmd and "--api-key" not in cmd


def test_lora_rank_fits_the_adapters_not_more(tmp_path):
    """vLLM sizes its LoRA buffers by --max-lora-rank; at 64, an r=16 adapter decoded 2.4x slower on CPU than at 16."""
    import json

    def adapter(name, r):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": r}))
        return str(tmp_path / name)

    s = Settings(cache_dir=tmp_path)

    def rank(loras):
        cmd = engine.build_command(tmp_path / "py", "/m", "m", "127.0.0.1", 8400, s, loras)
        return cmd[cmd.index("--max-lora-rank") + 1]

    assert rank({"a": adapter("r16", 16)}) == "16" and rank({"a": "/no/config"}) == "16"
    assert rank({"a": adapter("r16b", 16), "b": adapter("r20", 20)}) == "32"  # rounded up to a rank vLLM takes
    assert (
        engine.lora_rank(Settings(engine_max_lora_rank=64)) == 64 and engine.lora_rank(s, [adapter("r999", 999)]) == 512
    )


def test_lora_only_when_adapters_or_asked(tmp_path):
    auto, forced, never = (Settings(cache_dir=tmp_path, engine_enable_lora=v) for v in (None, True, False))
    cmd = lambda s, loras={}, lora=None: engine.build_command(
        tmp_path / "py", "/m", "m", "127.0.0.1", 8400, s, loras, lora
    )  # noqa: E731
    assert "--enable-lora" not in cmd(auto)  # torch.compile stays on for engines serving no adapters
    assert "--enable-lora" in cmd(auto, lora=True) and "--enable-lora" in cmd(auto, {"t": "/a"})
    assert "--enable-lora" in cmd(forced) and "--enable-lora" not in cmd(never)
    assert "--enable-lora" in cmd(never, {"t": "/a"})


def test_each_model_has_its_own_state_and_log(tmp_path):
    s = Settings(cache_dir=tmp_path, lm_model="smollm2-135m-instruct")
    assert engine.log_file(s) == tmp_path / "engine" / "smollm2-135m-instruct" / "engine.log"
    assert engine._state_file(s, "other-model") == tmp_path / "engine" / "other-model" / "state.json"
    assert engine.engine_folder(s, "org/name") == tmp_path / "engine" / "org--name"  # a hub id
    engine.log_file(s, "other-model").parent.mkdir(parents=True)
    engine.log_file(s, "other-model").write_text("a\nb\nc\n")
    assert engine.log_tail(s, "other-model", lines=2) == "b\nc" and engine.log_tail(s) == ""


def _write_state(s, model, pid, port, **kw):
    path = engine._state_file(s, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        engine.EngineState(
            pid=pid,
            host="127.0.0.1",
            port=port,
            model=f"/models/{model}",
            key=model,
            served_model=model,
            started_at=0,
            **kw,
        ).model_dump_json()
    )
    return path


def test_status_and_engines_clear_stale_state(tmp_path):
    s = Settings(cache_dir=tmp_path, lm_model="m")
    stale = _write_state(s, "m", 2**22 + 7, 1)
    assert engine.status(s) is None and not stale.exists()
    stale = _write_state(s, "dead", 2**22 + 7, 2)
    live = _write_state(s, "live", os.getpid(), 3)
    assert [st.served_model for st in engine.engines(s)] == ["live"]
    assert not stale.exists() and live.exists()


def test_legacy_single_engine_state_moves_to_its_model_folder(tmp_path):
    s = Settings(cache_dir=tmp_path, lm_model="m")
    s.engine_dir.mkdir(parents=True)
    (s.engine_dir / "state.json").write_text(
        engine.EngineState(
            pid=os.getpid(), host="127.0.0.1", port=1, model="/x", served_model="m", started_at=0
        ).model_dump_json()
    )
    (s.engine_dir / "engine.log").write_text("old\n")
    assert engine.read_state(s).port == 1 and engine.log_tail(s) == "old"
    assert not (s.engine_dir / "state.json").exists()


def test_failed_start_reports_root_cause_from_log(tmp_path):
    s = Settings(cache_dir=tmp_path)
    engine.log_file(s).parent.mkdir(parents=True)
    engine.log_file(s).write_text(
        "INFO ok\nERROR ValueError: Available memory is low\nRuntimeError: Engine core initialization failed\n"
    )
    assert engine._last_error_line(s) == "ValueError: Available memory is low"


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """`engine.up` without vLLM: each engine is a `sleep` in its own session (so `down` kills a real process
    group), always healthy; models resolve to fake paths and adapter loads are recorded."""
    real_popen = subprocess.Popen
    loaded = []
    monkeypatch.setattr(engine, "resolve_lm", lambda name, s=None: f"/models/{name}")
    monkeypatch.setattr(engine, "engine_python", lambda s=None, install=True: tmp_path / "venv" / "python")
    monkeypatch.setattr(engine, "healthy", lambda url, timeout=2.0: True)
    monkeypatch.setattr(engine.subprocess, "Popen", lambda cmd, **kw: real_popen(["sleep", "120"], **kw))
    monkeypatch.setattr(engine, "_load_adapter", lambda base, name, path, s: loaded.append((base, name, str(path))))
    s = Settings(cache_dir=tmp_path / "cache", lm_model="program-lm", engine_port=None)
    yield s, loaded
    engine.down_all(s, timeout=5)


def test_two_engines_get_their_own_ports_and_lora_only_where_adapters_are(fake_vllm):
    s, loaded = fake_vllm
    program = engine.up(s, quiet=True)
    student_base = engine.up(s, "student-base", quiet=True)
    assert program.port != student_base.port  # the first engine's port is excluded though nothing binds it yet
    assert program.key == "program-lm" and student_base.key == "student-base"
    assert not program.lora_enabled and not student_base.lora_enabled
    assert engine.up(s, quiet=True).pid == program.pid  # same command: reused
    assert engine.ensure(s, "student-base") == student_base.base_url
    assert [st.served_model for st in engine.engines(s)] == ["program-lm", "student-base"]


def test_load_lora_restarts_an_engine_without_lora_on_its_port(fake_vllm, capsys):
    s, loaded = fake_vllm
    before = engine.up(s, "student-base", quiet=True)
    base = engine.load_lora("tone-abc", "/adapters/tone", s, model="student-base")
    after = engine.status(s, "student-base")
    assert after.pid != before.pid and after.port == before.port and after.lora_enabled  # restarted with LoRA
    assert "restarting the student-base engine with LoRA" in capsys.readouterr().err
    assert base == after.base_url and loaded == [(base, "tone-abc", "/adapters/tone")]
    assert after.runtime_loras == {"tone-abc": "/adapters/tone"} and after.adapters == ["tone-abc"]
    # an engine that has LoRA is reused, not restarted, to add an adapter; asking it without lora keeps LoRA on
    engine.load_lora("tone-def", "/adapters/tone2", s, model="student-base")
    assert engine.up(s, "student-base", quiet=True).pid == after.pid
    assert engine.status(s, "student-base").adapters == ["tone-abc", "tone-def"]
    assert engine.read_state(s) is None  # the program LM's engine was never started


def test_an_adapter_above_the_engines_rank_restarts_it_with_that_rank(fake_vllm, tmp_path):
    import json

    s, loaded = fake_vllm
    big = tmp_path / "r64"
    big.mkdir()
    (big / "adapter_config.json").write_text(json.dumps({"r": 64}))
    engine.load_lora("tone-abc", "/adapters/tone", s, model="student-base")
    small = engine.status(s, "student-base")
    assert engine.served_rank(small) == 16
    engine.load_lora("big", big, s, model="student-base")
    after = engine.status(s, "student-base")
    assert after.pid != small.pid and engine.served_rank(after) == 64 and after.port == small.port
    assert set(after.adapters) == {"tone-abc", "big"}  # the runtime adapter came back after the restart


def test_engine_port_setting_is_the_default_models_only(fake_vllm):
    s, _ = fake_vllm
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = s.model_copy(update={"engine_port": port})
    assert engine.up(s, quiet=True).port == port
    assert engine.up(s, "student-base", quiet=True).port != port


def test_cli_status_lists_every_engine(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dspyc import cli
    from dspyc.settings import get_settings

    runner = CliRunner()
    monkeypatch.setenv("DSPYC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DSPYC_LM_MODEL", "qwen-x")
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    try:
        assert runner.invoke(cli.app, ["engine", "status"]).exit_code == 1  # none runs
        s = get_settings()
        _write_state(s, "qwen-x", os.getpid(), 1)
        _write_state(
            s,
            "smol-y",
            os.getpid(),
            2,
            loras={"tone-abc": "/a"},
            command=["py", "--dtype", "float32", "--enable-lora", "--max-lora-rank", "16"],
        )
        r = runner.invoke(cli.app, ["engine", "status"])
        assert r.exit_code == 0, r.output
        rows = [ln for ln in r.output.splitlines() if "127.0.0.1" in ln]
        assert len(rows) == 2 and "qwen-x (program LM)" in rows[0] and "off" in rows[0]
        assert "smol-y" in rows[1] and "on, rank ≤ 16" in rows[1] and "tone-abc" in rows[1] and "float32" in rows[1]
        assert runner.invoke(cli.app, ["engine", "status", "nope"]).exit_code == 1
    finally:
        get_settings.cache_clear()


def test_unreachable_url_is_a_one_line_error():
    from dspyc.lm import build_lm

    with pytest.raises(DspycError, match="unreachable"):
        build_lm(Settings(lm_url="http://127.0.0.1:9/v1"))


def test_build_lm_calls_the_engine_of_its_model_and_adapter(tmp_path, monkeypatch):
    from dspyc.lm import build_lm

    calls = []
    monkeypatch.setattr(
        engine, "ensure", lambda s, model=None, lora=False: calls.append((model, lora)) or f"http://{model}/v1"
    )
    s = Settings(cache_dir=tmp_path, lm_model="qwen-x")
    assert build_lm(s).model == "openai/qwen-x"
    lm = build_lm(s, model="smol-y", adapter="tone-abc")
    assert lm.model == "openai/tone-abc" and lm.kwargs["api_base"] == "http://smol-y/v1"
    assert calls == [("qwen-x", False), ("smol-y", True)]  # LoRA is asked only for the adapter's engine
    remote = Settings(cache_dir=tmp_path, lm_model="qwen-x", lm_url="http://remote:9/v1")
    assert build_lm(remote, model="smol-y", adapter="tone-abc").model == "openai/tone-abc"  # a local engine still


def test_ensure_honours_lm_url_for_the_program_lm_only(tmp_path, monkeypatch):
    monkeypatch.setattr(
        engine,
        "up",
        lambda s, model=None, lora=None, quiet=False: engine.EngineState(
            pid=1, host="127.0.0.1", port=8401, model="/m", served_model=model, started_at=0
        ),
    )
    s = Settings(cache_dir=tmp_path, lm_model="qwen-x", lm_url="http://remote:9/v1/")
    assert engine.ensure(s) == "http://remote:9/v1"
    assert engine.ensure(s, "smol-y") == "http://127.0.0.1:8401/v1"


def test_a_misspelt_setting_is_one_line_naming_its_variable(monkeypatch):
    from dspyc.settings import get_settings

    monkeypatch.setenv("DSPYC_LM_BACKEND", "enigne")
    get_settings.cache_clear()
    try:
        with pytest.raises(DspycError, match="setting DSPYC_LM_BACKEND='enigne': Input should be 'engine', 'url'"):
            get_settings()
    finally:
        monkeypatch.delenv("DSPYC_LM_BACKEND")
        get_settings.cache_clear()


@pytest.mark.integration
def test_engine_serves_and_is_reused(live_engine):
    s = Settings()
    assert engine.healthy(live_engine.base_url)
    running = engine.status(s)  # live_engine's, or its restart with LoRA by an earlier distillation test
    assert running.port == live_engine.port and engine.up(s, quiet=True).pid == running.pid  # reused, not restarted
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
    from dspyc.lm import build_lm

    lm = build_lm(Settings(lm_url=live_engine.base_url), cache=False, max_tokens=8)
    assert lm.model == f"openai/{live_engine.served_model}"
    assert isinstance(lm("Say hi")[0], str)


def test_dtype_setting_wins_over_auto(tmp_path):
    assert engine.engine_dtype(Settings(cache_dir=tmp_path, engine_dtype="bfloat16")) == "bfloat16"
    auto = engine.engine_dtype(Settings(cache_dir=tmp_path))
    assert auto == ("bfloat16" if engine.has_cuda() or engine.has_native_bf16() else "float32")


def test_cpu_tuning_names_every_choice_and_its_reason(tmp_path, monkeypatch):
    from dspyc.engine_tuning import cpu_summary, cpu_tuning
    from dspyc.settings import Settings

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    t = cpu_tuning(Settings(engine_kv_cache_gb=3), python)
    assert t.env["VLLM_CPU_KVCACHE_SPACE"] == "3" and "LD_PRELOAD" not in t.env
    assert "no libiomp5" in t.why["LD_PRELOAD"] and "VLLM_CPU_OMP_THREADS_BIND" in t.why
    (tmp_path / "venv" / "lib").mkdir()
    (tmp_path / "venv" / "lib" / "libiomp5.so").write_bytes(b"")
    assert (
        cpu_tuning(Settings(engine_preload_iomp=True), python)
        .env["LD_PRELOAD"]
        .startswith(str(tmp_path / "venv" / "lib" / "libiomp5.so"))
    )
    assert "LD_PRELOAD" not in cpu_tuning(Settings(engine_preload_iomp=False), python).env
    cpu = cpu_summary()
    assert cpu["cores"] >= 1 and isinstance(cpu["flags"], list)
    monkeypatch.delenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", raising=False)
    assert int(t.env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) > 300  # vLLM's default killed an engine on a busy machine


def test_a_second_engine_computes_on_the_cores_the_first_leaves(tmp_path, monkeypatch):
    """Left to vLLM's default, two engines on 2 cores both pin core 0 while core 1 idles (seen in the logs).
    On a machine this small both engines bind every core: one core each was slower for both (measured)."""
    from dspyc import engine_tuning
    from dspyc.settings import Settings

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(engine_tuning.os, "cpu_count", lambda: 2)
    alone = engine_tuning.cpu_tuning(Settings(), tmp_path / "python")
    assert alone.cores == [0, 1] and alone.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    second = engine_tuning.cpu_tuning(Settings(), tmp_path / "python", busy=alone.cores)
    assert second.cores == [0, 1] and second.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert "shared with the other engine" in second.why["VLLM_CPU_OMP_THREADS_BIND"]
    monkeypatch.setattr(engine_tuning.os, "cpu_count", lambda: 8)
    big = engine_tuning.cpu_tuning(Settings(), tmp_path / "python")
    assert big.cores == list(range(7)) and "VLLM_CPU_OMP_THREADS_BIND" not in big.env
    assert engine_tuning.cpu_tuning(Settings(), tmp_path / "python", busy=list(range(7))).cores == [7]
    assert engine_tuning.cpu_tuning(Settings(), tmp_path / "python", busy=[0, 1, 2]).cores == [3, 4, 5, 6]


def test_a_bind_from_the_environment_is_recorded_as_its_cores(tmp_path, monkeypatch):
    """A second engine must know where a hand-bound first one computes."""
    from dspyc import engine_tuning
    from dspyc.settings import Settings

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1,3")
    t = engine_tuning.cpu_tuning(Settings(), tmp_path / "python")
    assert t.cores == [0, 1, 3] and "from the environment" in t.why["VLLM_CPU_OMP_THREADS_BIND"]
    assert engine_tuning.parse_cores("auto") == []


def test_a_lora_engine_wraps_only_the_layers_its_adapters_change(fake_vllm, tmp_path):
    """vLLM-CPU runs every wrapped layer's LoRA ops eagerly on each step, so an engine wraps q/v (what dspyc's
    recipes train) plus whatever its adapters target; an adapter outside that set restarts it, wider."""
    import json

    def adapter(name: str, targets) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"r": 16, "target_modules": targets}))
        return d

    s, loaded = fake_vllm
    engine.load_lora("qv", adapter("qv", ["v_proj", "q_proj"]), s, model="student-base")
    first = engine.status(s, "student-base")
    assert engine.served_targets(first) == {"q_proj", "v_proj"}
    assert first.command[first.command.index("--lora-target-modules") :][:3] == [
        "--lora-target-modules",
        "q_proj",
        "v_proj",
    ]
    engine.load_lora("qv2", adapter("qv2", ["q_proj"]), s, model="student-base")
    assert engine.status(s, "student-base").pid == first.pid  # covered: loaded without a restart
    engine.load_lora("o", adapter("o", ["o_proj"]), s, model="student-base")
    wider = engine.status(s, "student-base")
    assert wider.pid != first.pid and engine.served_targets(wider) == {"o_proj", "q_proj", "v_proj"}
    assert set(wider.adapters) == {"qv", "qv2", "o"}
    engine.load_lora("all", adapter("all", "all-linear"), s, model="student-base")
    assert engine.served_targets(engine.status(s, "student-base")) is None  # every layer vLLM can wrap
    assert engine.lora_targets(Settings(engine_lora_target_modules="")) is None
