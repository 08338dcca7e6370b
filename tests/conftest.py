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
