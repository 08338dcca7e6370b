"""End to end against the real engine: compile a tiny rag, load it, run the notebook, check tracking."""

import os
from pathlib import Path

import pytest

from dspyc import artifacts
from dspyc.compiler import BudgetExceeded, compile_program

pytestmark = pytest.mark.integration
TINY = dict(recipe_name="bootstrap", sizes=(3, 3, 3), config={"hops": 1, "retriever": "hybrid"})


@pytest.fixture
def data_dir(request):
    from conftest import HOTPOT

    return str(HOTPOT) if (HOTPOT / "questions.jsonl").exists() else "wiki"


def test_compile_load_and_notebook(live_engine, settings, data_dir, monkeypatch):
    m = compile_program("rag", data=data_dir, s=settings, **TINY)
    assert m.version == 1 and set(m.metrics) == {"baseline", "compiled"}
    for which in ("baseline", "compiled"):
        for split in ("dev", "test"):
            row = m.metrics[which][split]
            assert 0.0 <= row["f1"] <= 1.0 and 0.0 <= row["retrieval_recall"] <= 1.0
    assert m.usage["lm_calls"] > 0 and m.dataset.version and m.files["program.json"]
    vdir = settings.artifacts_dir / "rag" / "1"
    assert (vdir / "program.json").exists() and (vdir / "manifest.json").exists()

    program = artifacts.load_program("rag@1", s=settings)
    pred = program(question="What is the capital of France?")
    assert isinstance(pred.answer, str) and pred.context_titles

    # The registry indexed the artifact in the embedded MLflow store.
    import mlflow

    from dspyc.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri(settings), registry_uri=tracking_uri(settings))
    versions = client.search_model_versions("name='rag'")
    assert [v.tags.get("dspyc.version") for v in versions] == ["1"]

    # A notebook that imports the compiled program runs.
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(Path(__file__).parent.parent / "notebooks" / "use_compiled_rag.ipynb", as_version=4)
    monkeypatch.setenv("DSPYC_ARTIFACTS_DIR", str(settings.artifacts_dir))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(__file__).parent.parent / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "rag@1" in outputs and "answer:" in outputs


def test_token_budget_stops_cleanly_without_artifact(live_engine, settings, data_dir):
    with pytest.raises(BudgetExceeded, match="token budget"):
        compile_program("rag", data=data_dir, s=settings, token_budget=500, **TINY)
    assert artifacts.versions("rag", settings) == []


def test_tampered_artifact_is_refused_on_load(live_engine, settings, data_dir):
    m = compile_program("rag", data=data_dir, s=settings, skip_test=True, **TINY)
    f = settings.artifacts_dir / "rag" / str(m.version) / "program.json"
    f.write_text(f.read_text().replace("{", "{ ", 1))
    with pytest.raises(artifacts.ArtifactError, match="does not match"):
        artifacts.load_program(f"rag@{m.version}", s=settings)
