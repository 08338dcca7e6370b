"""The README's "Write a program" example, run as written: a program file in a fresh project, compiled, stored and
loaded back with no core change (an LM that answers from a table stands in for the engine)."""

import re
import shutil
import sys
from pathlib import Path

import dspy

from dspyc import compiler, loading, registry
from dspyc import settings as settings_module
from dspyc.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CAPITALS = ROOT / "tests" / "fixtures" / "knn_project" / "datasets" / "capitals"


def readme_program() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Write a program") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_program_compiles_and_loads(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "programs").mkdir(parents=True)
    (project / "programs" / "__init__.py").write_text("")
    (project / "programs" / "capital.py").write_text(readme_program())
    (project / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    shutil.copytree(CAPITALS, project / "datasets" / "capitals")
    shutil.copytree(ROOT / "optimizers", project / "optimizers")
    monkeypatch.setattr(sys, "path", [str(project), *sys.path])
    monkeypatch.delitem(sys.modules, "programs", raising=False)
    s = Settings(
        project_dir=project,
        artifacts_root=project / "artifacts",
        mlflow_traces=False,
        num_threads=2,
        lm_backend="litellm",
        lm_model="openai/unused",
        reoptimize_resamples=500,
    )
    monkeypatch.setattr(settings_module, "get_settings", lambda: s)  # every module reads the project from here
    for module in ("dspyc.registry", "dspyc.optimizers", "dspyc.data.qa"):
        monkeypatch.setattr(f"{module}.get_settings", lambda: s, raising=False)
    capitals = {
        q["question"]: q["answer"] for q in map(__import__("json").loads, (CAPITALS / "questions.jsonl").open())
    }

    class Table(dspy.utils.DummyLM):  # answers every question right, from the dataset itself
        def forward(self, prompt=None, messages=None, **kw):
            question = next(q for q in capitals if q in messages[-1]["content"])
            self.answers = iter([{"answer": capitals[question]}])
            return super().forward(prompt=prompt, messages=messages, **kw)

    lm = Table([{"answer": ""}], adapter=dspy.JSONAdapter())
    monkeypatch.setattr(
        compiler, "configure", lambda settings, **kw: dspy.configure(lm=lm, adapter=dspy.JSONAdapter()) or lm
    )
    assert "capital" in registry.available()
    m = compiler.compile_program("capital", "bootstrap", s=s)
    assert m.metrics["baseline"]["test"]["accuracy"] == 1.0 and m.program == "capital"
    program = loading.load_program(f"capital@{m.version}", configure_lm=False, s=s)
    assert isinstance(program, dspy.Predict) and "capital city" in program.signature.instructions
    assert m.kept == "uncompiled"  # already perfect: no gain beyond noise, so the program as built is kept


def test_a_program_that_is_one_bare_predictor_loads_without_a_false_warning(tmp_path):
    """Its saved state is the predictor's own dict, not keyed by name: loading warned that the version was "saved
    before the program had self" and that it would run uncompiled, which was false."""
    import warnings

    saved = dspy.Predict("question -> answer")
    saved.demos = [dspy.Example(question="Capital of Peru?", answer="Lima")]
    saved.save(str(tmp_path / "program.json"))
    fresh = dspy.Predict("question -> answer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loading.load_state(fresh, tmp_path / "program.json", "capital@1")
    assert [d["answer"] for d in fresh.demos] == ["Lima"]
