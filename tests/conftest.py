import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests pin the fast 135M model; benchmarks and `just compile` use the default (Qwen2.5-Coder-0.5B).
os.environ.setdefault("DSPYC_LM_MODEL", "smollm2-135m-instruct")
ROOT = Path(__file__).resolve().parent.parent
HOTPOT = ROOT.parent / "shared" / "datasets" / "hotpotqa-mini"


@pytest.fixture
def settings(tmp_path):
    """Settings with a private artifact store; models and indexes come from the real cache."""
    from dspyc.settings import Settings

    return Settings(artifacts_root=tmp_path / "artifacts")


@pytest.fixture
def hotpot_dir():
    if not (HOTPOT / "questions.jsonl").exists():
        pytest.skip(f"shared HotPotQA folder not present at {HOTPOT} (it lives beside the project in dev and CI)")
    return HOTPOT


@pytest.fixture
def paris_teaching():
    """A student LM that answers wrong, a teacher LM that answers right, 3 train questions and an exact-match
    metric: whatever bootstraps demos from the teacher gets exactly its 3 passing answers."""
    from types import SimpleNamespace

    import dspy

    from dspyc.adapter import ConstrainedJSONAdapter

    adapter = ConstrainedJSONAdapter()
    return SimpleNamespace(
        adapter=adapter,
        student=dspy.utils.DummyLM([{"answer": "wrong"}] * 8, adapter=adapter),
        teacher=dspy.utils.DummyLM([{"answer": "Paris"}] * 8, adapter=adapter),
        train=[
            dspy.Example(question=f"Capital of France? ({i})", answer="Paris").with_inputs("question") for i in range(3)
        ],
        metric=lambda ex, pred, trace=None: pred.answer == ex.answer,
    )


@pytest.fixture(scope="session", autouse=True)
def no_engine_left_behind():
    """Every engine this test process started (a merged copy's, a student's) is stopped at the end: two SmolLM2
    engines left running held 7 GB and got a later 0.5B training killed for memory. Engines that were running before,
    or that another process started meanwhile (a compile beside the tests), are left alone."""
    from dspyc import engine
    from dspyc.settings import Settings

    s = Settings()  # not get_settings(): tests set the environment and clear its cache themselves
    before = {st.pid for st in engine.engines(s)}
    started: dict[int, str] = {}
    up = engine.up

    def recording_up(*args, **kwargs):
        state = up(*args, **kwargs)
        if state.pid not in before:
            started[state.pid] = state.key or state.model
        return state

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "up", recording_up)
        yield
    alive = {st.pid for st in engine.engines(s)}
    for pid, key in started.items():
        if pid in alive:
            engine.down(s, model=key)


@pytest.fixture(scope="session")
def live_engine():
    """The real vLLM engine (started if needed, stopped at the end only if this session started it)."""
    from dspyc import engine
    from dspyc.settings import get_settings

    s = get_settings()
    was_running = engine.status(s) is not None
    state = engine.up(s, quiet=True)
    yield state
    if not was_running:
        engine.down(s)
