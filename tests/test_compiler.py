"""End to end against the real engine: compile a tiny rag, load it, run the notebook, check tracking."""

from pathlib import Path

import pytest

from dspyc import artifacts, loading
from dspyc.compiler import BudgetExceeded, compile_program

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
HOTPOT = ROOT.parent / "shared" / "datasets" / "hotpotqa-mini"  # beside the project in dev and CI
TINY = dict(recipe_name="bootstrap", sizes=(3, 3, 3), config={"hops": 1, "retriever": "hybrid"})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small real corpus: 12 questions and only their own paragraphs (embedding thousands takes minutes on CPU)."""
    import json

    src = HOTPOT if (HOTPOT / "questions.jsonl").exists() else ROOT / "datasets" / "wiki"
    questions = [json.loads(line) for line in (src / "questions.jsonl").open()][:12]
    gold = {
        t for q in questions for t in ([f[0] for f in q.get("supporting_facts", [])] or q.get("supporting_titles", []))
    }
    context = {t for q in questions for t, _ in q.get("context", [])}
    corpus = [row for row in map(json.loads, (src / "corpus.jsonl").open()) if row["title"] in gold | context]
    out = tmp_path_factory.mktemp("tiny-qa")
    (out / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus[:300]))
    return str(out)


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """A DSPy cache of this module's own: the first compile is truly cold (tokens billed), later ones can hit it."""
    import dspy

    before = dspy.cache
    dspy.configure_cache(disk_cache_dir=str(tmp_path_factory.mktemp("dspy-cache")))
    yield
    dspy.cache = before


@pytest.fixture(scope="module")
def compiled(live_engine, data_dir, tmp_path_factory, fresh_cache):
    from dspyc.settings import Settings

    settings = Settings(artifacts_root=tmp_path_factory.mktemp("artifacts"))
    return settings, compile_program("rag", data=data_dir, s=settings, **TINY)


def test_same_seed_data_and_cache_give_the_same_program(compiled, data_dir, tmp_path):
    from dspyc.settings import Settings

    settings, m = compiled
    again = Settings(artifacts_root=tmp_path / "again")
    m2 = compile_program("rag", data=data_dir, s=again, **TINY)
    first = (settings.artifacts_dir / "rag" / str(m.version) / "program.json").read_text()
    assert (again.artifacts_dir / "rag" / str(m2.version) / "program.json").read_text() == first
    assert m2.usage["input_tokens"] == 0  # every call was served from the cache


def test_compile_writes_a_complete_artifact(compiled):
    settings, m = compiled
    assert (
        m.version == 1
        and set(m.metrics) == {"baseline", "compiled", "delta", "cost"}
        and m.kept in ("compiled", "uncompiled")
    )
    for split in ("dev", "test"):  # compiled − uncompiled on the same examples, with its paired-bootstrap interval
        d = m.metrics["delta"][split]
        assert d["n"] == 3 and d["low"] <= d["mean"] <= d["high"]
    for which in ("baseline", "compiled"):
        for split in ("dev", "test"):
            row = m.metrics[which][split]
            assert 0.0 <= row["f1"] <= 1.0 and 0.0 <= row["retrieval_recall"] <= 1.0
    assert m.usage["lm_calls"] > 0 and m.usage["input_tokens"] > 0 and m.usage["output_tokens"] > 0
    vdir = settings.artifacts_dir / "rag" / "1"
    assert (vdir / "program.json").exists() and (vdir / "manifest.json").exists()
    assert m.files["program.json"] == artifacts.sha256_file(vdir / "program.json")


def test_compiled_program_loads_and_answers(compiled):
    settings, m = compiled
    program = loading.load_program(f"rag@{m.version}", s=settings)
    pred = program(question="What is the capital of France?")
    assert isinstance(pred.answer, str) and pred.context_titles


def test_registry_indexes_the_artifact(compiled):
    import mlflow

    from dspyc.tracking import tracking_uri

    settings, m = compiled
    client = mlflow.MlflowClient(tracking_uri(settings), registry_uri=tracking_uri(settings))
    versions = client.search_model_versions("name='rag'")
    assert [v.tags.get("dspyc.version") for v in versions] == [str(m.version)]
    runs = mlflow.search_runs(experiment_names=["dspyc/rag"], output_format="list")
    assert runs and runs[0].data.metrics["compiled.dev.f1"] == m.metrics["compiled"]["dev"]["f1"]


def test_notebook_imports_the_compiled_program(compiled, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    settings, m = compiled
    nb_dir = Path(__file__).parent.parent / "notebooks"
    nb = nbformat.read(nb_dir / "use_compiled_rag.ipynb", as_version=4)
    monkeypatch.setenv("DSPYC_ARTIFACTS_DIR", str(settings.artifacts_dir))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(nb_dir)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"rag@{m.version}" in outputs and "answer:" in outputs


def test_tampered_artifact_is_refused_on_load(compiled):
    settings, m = compiled
    f = settings.artifacts_dir / "rag" / str(m.version) / "program.json"
    original = f.read_text()
    try:
        f.write_text(original.replace("{", "{ ", 1))
        with pytest.raises(artifacts.ArtifactError, match="does not match"):
            loading.load_program(f"rag@{m.version}", s=settings)
    finally:
        f.write_text(original)


def test_token_budget_stops_cleanly_without_artifact(live_engine, data_dir, tmp_path):
    from dspyc.settings import Settings

    settings = Settings(artifacts_root=tmp_path)
    with pytest.raises(BudgetExceeded, match="token budget"):
        # cache off: the module's compile already cached these calls, and cache hits bill no tokens
        compile_program("rag", data=data_dir, s=settings, token_budget=500, lm_overrides={"cache": False}, **TINY)
    assert artifacts.versions("rag", settings) == []


def test_pareto_compile_measures_candidates_and_registers_the_frontier(live_engine, data_dir, tmp_path, monkeypatch):
    """A real cost search on the engine: two passage budgets, measured per run (tokens read from DSPy's cache too, so
    a re-run measures the same); fewer passages cost fewer tokens, every frontier point is a version, the plot is in
    the artifact, each candidate a child run."""
    import mlflow

    from dspyc import registry, tracking
    from dspyc.settings import Settings

    monkeypatch.setattr(registry.get("rag"), "cost_space", {"max_passages": [8, 2]})
    settings = Settings(artifacts_root=tmp_path)
    m = compile_program("rag", data=data_dir, s=settings, sizes=(3, 3, 3), config={"hops": 1}, objective="pareto")
    rows = {c["name"]: c for c in m.metrics["candidates"]}
    assert set(rows) == {"uncompiled", "max_passages=2"}
    assert 0 < rows["max_passages=2"]["dev_cost"] < rows["uncompiled"]["dev_cost"]  # measured, cached or not
    assert rows["max_passages=2"]["probe_cost"] > 0 and m.metrics["objective"]["objective"] == "pareto"
    assert "frontier.png" in m.files and m.kept_reason.startswith("objective pareto")
    points = [c for c in m.metrics["candidates"] if c["frontier"]]
    stored = [artifacts.read_manifest("rag", v, settings) for v in artifacts.versions("rag", settings)]
    assert len(stored) == 1 + sum(1 for c in points if not c["chosen"] and c["origin"] != "uncompiled")
    mlflow.set_tracking_uri(tracking.tracking_uri(settings))
    children = mlflow.search_runs(
        experiment_ids=[tracking.experiment("rag", settings)], filter_string="tags.`dspyc.kind` = 'candidate'"
    )
    assert len(children) == 2
