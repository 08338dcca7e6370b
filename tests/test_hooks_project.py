"""Every optional ProgramSpec hook works from a project outside dspyc, with no core change.

tests/fixtures/hooks_project is such a project: programs/atlas.py sets every hook. Each test copies it to a temporary
folder, points dspyc's settings at the copy and drives one hook through the core code that consumes it (the CLI, the
compiler, the finetune and distill row builders, the program server, `dspyc ask`), never by calling the hook itself.
No engine runs: an LM that answers from a table stands in for it.
"""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import dspy
import pytest

from dspyc import registry
from dspyc import settings as settings_module
from dspyc.adapter import ConstrainedJSONAdapter
from dspyc.settings import Settings

FIXTURE = Path(__file__).parent / "fixtures" / "hooks_project"
QUESTIONS = [json.loads(line) for line in (FIXTURE / "datasets" / "atlas" / "questions.jsonl").read_text().splitlines()]
PASSAGE = {
    json.loads(line)["title"]: json.loads(line)["text"]
    for line in (FIXTURE / "datasets" / "atlas" / "corpus.jsonl").read_text().splitlines()
}
ANSWER = {q["id"]: q["answer"] for q in QUESTIONS}
COUNTRY = {q["id"]: q["supporting_titles"][0] for q in QUESTIONS}
DEFAULT = {"guide": "long", "passage_chars": 60}  # atlas's config: what the program is built with uncompiled


def table_lm(answers: dict[str, str] | None = None) -> dspy.utils.DummyLM:
    """Answers every question right, from the dataset itself, except those (by id) `answers` answers otherwise."""
    table = {q["question"]: {"answer": (answers or {}).get(q["id"], q["answer"])} for q in QUESTIONS}
    return dspy.utils.DummyLM(table, adapter=ConstrainedJSONAdapter())


def _configure(lm: dspy.LM) -> dspy.LM:
    """What dspyc.lm.configure does, with the table LM for the engine's."""
    dspy.configure(lm=lm, adapter=ConstrainedJSONAdapter())
    return lm


def _programs_modules() -> list[str]:
    return [k for k in sys.modules if k == "programs" or k.startswith("programs.")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the fixture project that every settings reader of dspyc points at (its data, recipes, artifacts)."""
    import dspyc.cli  # noqa: F401 - imported first, so that their `get_settings` is patched below
    import dspyc.compiler  # noqa: F401
    import dspyc.data.qa  # noqa: F401
    import dspyc.distill.pipeline  # noqa: F401
    import dspyc.serve.app  # noqa: F401
    import dspyc.tools.ask  # noqa: F401

    root = tmp_path / "atlas_project"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
    s = Settings(
        project_dir=root,
        artifacts_root=root / "artifacts",
        cache_dir=tmp_path / "cache",
        mlflow_traces=False,
        num_threads=2,
        lm_backend="litellm",
        lm_model="openai/unused",
        reoptimize_resamples=500,
        serve_log="none",
    )
    real = settings_module.get_settings

    def project_settings() -> Settings:
        return s

    for name, module in list(sys.modules.items()):
        if (name == "dspyc" or name.startswith("dspyc.")) and getattr(module, "get_settings", None) is real:
            monkeypatch.setattr(module, "get_settings", project_settings)
    monkeypatch.setattr(sys, "path", [str(root), *sys.path])
    for name in _programs_modules():  # this checkout's programs/ (or another test's) must not answer for atlas
        monkeypatch.delitem(sys.modules, name)
    spec = registry.get("atlas")
    lm, adapter = dspy.settings.lm, dspy.settings.adapter
    yield SimpleNamespace(root=root, s=s, spec=spec, data=spec.load_data(spec.dataset, 0))
    dspy.configure(lm=lm, adapter=adapter)  # the table LM some tests configure goes with the test
    for name in _programs_modules():  # the copy's modules go; monkeypatch then puts back the ones it took out
        del sys.modules[name]
    for name, module in list(sys.modules.items()):  # a module first imported during the test took the patched one
        if name.startswith("dspyc") and getattr(module, "get_settings", None) is project_settings:
            module.get_settings = real


def _ids(examples) -> list[str]:
    return [ex.id for ex in examples]


def _in_no_split(data) -> list[str]:
    held = {ex.id for split in ("train", "dev", "test") for ex in data.splits[split]}
    return [ex.id for ex in data.splits["all"] if ex.id not in held]


def _compile(project, monkeypatch, lm=None, save=False, **kw):
    from dspyc import compiler, tracking

    lm = lm or table_lm()
    monkeypatch.setattr(compiler, "configure", lambda settings, **o: _configure(lm))
    monkeypatch.setattr(tracking, "log_compile", lambda *a, **k: "no-mlflow")  # the registry is not what is tested
    return compiler.compile_program("atlas", s=project.s, save=save, **kw)


# --- prepare_data: `dspyc data prepare` ---------------------------------------------------------------------


def test_data_prepare_writes_the_dataset_through_prepare_data(project):
    from typer.testing import CliRunner

    from dspyc import cli

    folder = project.root / "datasets" / "atlas"
    shutil.rmtree(folder)
    r = CliRunner().invoke(cli.app, ["data", "prepare", "atlas"])
    assert r.exit_code == 0, r.output
    assert str(folder) in r.output  # prepare_data's return value, printed
    for name in ("questions.jsonl", "corpus.jsonl"):  # the files the fixture ships are the ones the hook writes
        assert (folder / name).read_bytes() == (FIXTURE / "datasets" / "atlas" / name).read_bytes()
    r = CliRunner().invoke(cli.app, ["data", "prepare", "wiki"])  # this project's programs prepare atlas alone
    assert r.exit_code != 0 and not (project.root / "datasets" / "wiki").exists()


# --- learned_from (and build, load_data, metric, report, config, default_recipe): the compile's manifest -----------


def test_learned_from_ids_join_the_manifests_trained_on(project, monkeypatch):
    m = _compile(project, monkeypatch)
    data = project.data
    solved = _in_no_split(data)[0]  # the long guide's worked example: in no split
    assert m.recipe["name"] == "labeled" and m.config == DEFAULT  # default_recipe, config
    assert m.metrics["baseline"]["test"] == {"accuracy": 1.0, "metric": 1.0, "errors": 0}  # report, metric
    assert m.trained_on == [*_ids(data.splits["train"]), *_ids(data.splits["dev"]), solved]
    short = _compile(project, monkeypatch, config={"guide": "short"})  # no worked example: nothing more learned from
    assert short.trained_on == [*_ids(data.splits["train"]), *_ids(data.splits["dev"])]


# --- cost_space: the candidates of `--objective cost|pareto` --------------------------------------------------


def test_the_cost_search_candidates_are_the_cost_space_grid_minus_the_uncompiled_config(project):
    from dspyc import compiler

    setup = compiler.prepare("atlas", None, None, 0, None, None, objective="cost")  # the project's optimizers/cost.yaml
    assert setup.recipe.objective == "cost" and not setup.recipe.optimizes and setup.config == DEFAULT
    program = project.spec.build(setup.dataset, setup.config)
    found = compiler.candidates(setup, compiler.Compiled(program), [], project.s)
    assert [(c.name, c.config, c.origin) for c in found] == [
        ("passage_chars=30", {"passage_chars": 30}, "settings"),
        ("guide=short", {"guide": "short"}, "settings"),
        ("guide=short passage_chars=30", {"guide": "short", "passage_chars": 30}, "settings"),
    ]
    built = [(c.module.passage_chars, c.module.answer.signature.instructions) for c in found]  # each built with build
    assert [chars for chars, _ in built] == [30, 60, 30]
    assert [text == "Name the capital city." for _, text in built] == [False, True, True]


# --- inputs / outputs (and description): the program server's typed API ------------------------------------------


@pytest.fixture
def stored(project, monkeypatch):
    """atlas@1 in the project's artifact store, compiled with the short guide (`--set guide=short`)."""
    m = _compile(project, monkeypatch, save=True, config={"guide": "short"})
    assert m.version == 1 and (project.root / "artifacts" / "atlas" / "1" / "program.json").is_file()
    return m


def test_the_serving_schema_has_the_declared_inputs_and_outputs(project, stored, monkeypatch):
    from fastapi.testclient import TestClient

    from dspyc.serve import pool as pool_module
    from dspyc.serve.app import create_app

    monkeypatch.setattr(pool_module, "build_serving_lm", lambda manifest, s: table_lm())
    pool = pool_module.ProgramPool(project.s, resolver=lambda name, tag, s: 1)  # the store's loader, no registry alias
    pool.start(poll=False)
    assert pool.status("atlas").error is None
    with TestClient(create_app(project.s, pool, start_pool=False, dev=True)) as client:
        api = client.get("/openapi.json").json()
        schemas = api["components"]["schemas"]
        assert list(schemas["AtlasInputs"]["properties"]) == ["question"]  # not `passage`, which forward also takes
        assert schemas["AtlasInputs"]["required"] == ["question"]
        assert list(schemas["AtlasOutputs"]["properties"]) == ["answer", "evidence"]  # beyond the predictor's answer
        assert api["paths"]["/v1/programs/atlas/predict"]["post"]["description"] == project.spec.description
        r = client.post("/v1/programs/atlas/predict", json={"question": "What is the capital of Peru?"})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == {"answer": "Lima", "evidence": PASSAGE["Peru"][:60]}
        r = client.post("/v1/programs/atlas/predict", json={"question": "What is the capital of Peru?", "passage": "x"})
        assert r.status_code == 422  # an input the API does not declare


# --- tool_agent: `dspyc ask` ------------------------------------------------------------------------------------


def test_ask_runs_the_programs_tool_agent(project, monkeypatch, capsys):
    from dspyc import lm as lm_module
    from dspyc.tools import ask

    lm = table_lm()
    monkeypatch.setattr(lm_module, "configure", lambda s, **o: _configure(lm))
    pred = ask.ask("What is the capital of Peru?", max_steps=2, s=project.s)
    assert pred.answer == "Lima"
    assert [(r["tool"], r["arguments"], r["output"]["text"]) for r in pred.tool_results] == [
        ("lookup", {"country": "Peru"}, PASSAGE["Peru"])
    ]
    out = capsys.readouterr().out
    assert "tool lookup(country='Peru')" in out and "[source: programs/atlas.py]" in out
    agent = ask.build_agent(project.s, max_steps=2)
    assert type(agent).__name__ == "AtlasAgent" and agent.max_steps == 2 and not agent.core.answer.demos
    assert ask.build_agent(project.s).max_steps == project.s.agent_max_steps


def test_ask_with_a_version_gives_the_tool_agent_the_compiled_program(project, stored, monkeypatch):
    from dspyc import loading
    from dspyc.tools import ask

    monkeypatch.setattr(loading, "configure", lambda s, **o: None)  # no LM is called here
    agent = ask.build_agent(project.s, version="1")
    assert type(agent).__name__ == "AtlasAgent" and type(agent.core).__name__ == "Atlas"
    assert agent.core.answer.signature.instructions == "Name the capital city."  # atlas@1's config, not the default
    assert ask.build_agent(project.s).core.answer.signature.instructions.startswith("Answer with the capital city")


# --- gold_trace, relabel: the rows `compile atlas finetune` trains on -------------------------------------------


def _finetune_rows(project, lm):
    from dspyc.finetune import CompileContext, Finetune

    spec, data = project.spec, project.data
    ft = Finetune(
        spec.metric,
        CompileContext(program="atlas", spec=spec, dataset=data, settings=project.s),
        num_threads=2,
        gold_extra=2,
    )
    with dspy.context(lm=lm, adapter=ConstrainedJSONAdapter()):
        return ft.training_rows(spec.build(data, spec.config), data.splits["train"])


def _row(row) -> tuple[str, str, str]:
    """(example id, the passage the row's prompt holds: "full" or "cut" at 60 characters, its answer)."""
    full = PASSAGE[COUNTRY[row.example_id]]
    user = row.prompt[-1]["content"]
    held = "full" if full in user else "cut" if full[:60].rstrip() in user else "none"
    return row.example_id, held, json.loads(row.completion[0]["content"])["answer"]


def test_gold_traces_of_train_and_of_examples_in_no_split_join_the_finetune_rows(project):
    data = project.data
    rows, _ = _finetune_rows(project, table_lm())
    gold = {(i, answer) for i, held, answer in map(_row, rows) if held == "full"}  # the label's whole passage
    extra = _in_no_split(data)[:2]  # finetune's gold_extra=2: labels of questions the program never ran on
    assert gold == {(ex.id, ex.answer) for ex in data.splits["train"]} | {(i, ANSWER[i]) for i in extra}
    assert all(r.source == "gold" for r in rows if r.example_id in extra)


def test_relabel_writes_gold_answers_over_the_programs_own_runs(project):
    data = project.data
    wrong = data.splits["train"][0]  # the program answers it wrong: no passing trace, but still its own inputs
    rows, by_source = _finetune_rows(project, table_lm({wrong.id: "Lyon"}))
    own = sorted((i, answer) for i, held, answer in map(_row, rows) if held == "cut")  # the program's 60 characters
    assert own == sorted((ex.id, ex.answer) for ex in data.splits["train"])
    assert (wrong.id, "cut", wrong.answer) in set(map(_row, rows)) and "Lyon" not in {a for *_, a in map(_row, rows)}
    assert by_source == {"gold rows": 4 + 4 + 2}  # relabelled runs replace the passing traces; gold train + extras


# --- keep_trace, sft_recipe, student_config: `dspyc distill atlas` -------------------------------------------


def _distill_setup(project, monkeypatch, lm):
    from dspyc.distill import pipeline

    monkeypatch.setattr(pipeline, "resolve_lm", lambda name, s=None, pull=True: f"/models/{name}")  # no download
    monkeypatch.setattr(pipeline, "build_lm", lambda s, **kw: lm)  # the teacher samples from the table
    return pipeline.prepare(
        "atlas",
        None,
        None,
        None,
        teacher=None,
        teacher_url=None,
        data=None,
        seed=0,
        sizes=None,
        eval_split="test",
        num_threads=2,
        eval_threads=2,
        s=project.s,
    )


def test_distill_trains_with_the_programs_sft_recipe_and_builds_the_student_from_student_config(project, monkeypatch):
    setup = _distill_setup(project, monkeypatch, table_lm())
    assert setup.recipes.sft.name == "sft_atlas" and setup.recipes.sft.gold_extra == 2  # optimizers/sft_atlas.yaml
    assert setup.train_ex == project.data.splits["train"][:3]  # its max_examples
    assert setup.student_config == {"guide": "short", "passage_chars": 60}
    assert setup.student.answer.signature.instructions == "Name the capital city."
    assert setup.teacher.answer.signature.instructions.startswith("Answer with the capital city the passage names")


def test_distill_keeps_a_passing_trace_only_where_keep_trace_holds(project, monkeypatch):
    from dspyc.distill import pipeline

    data = project.data
    verbose = data.splits["train"][1]  # passes the lenient metric, but is no bare answer
    setup = _distill_setup(project, monkeypatch, table_lm({verbose.id: f"It is {verbose.answer}."}))
    sft = pipeline.collect_sft_data(setup)
    assert (sft.passed, sft.kept) == (3, 2)
    teacher = sorted(r.example_id for r in sft.rows if r.source == "teacher")
    assert teacher == sorted(ex.id for ex in setup.train_ex if ex.id != verbose.id)
    assert f"It is {verbose.answer}." not in {json.loads(r.completion[0]["content"])["answer"] for r in sft.rows}
    gold = sorted(r.example_id for r in sft.rows if r.source == "gold")  # sft_atlas: train's labels + 2 in no split
    assert gold == sorted([*_ids(setup.train_ex), *_in_no_split(data)[:2]])
    assert sft.path.is_file() and sft.path.parent == project.root / "artifacts" / "atlas" / "datasets"
