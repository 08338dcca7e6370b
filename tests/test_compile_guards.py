"""Compile without an LM: the kept program when compiling hurt, compiled − uncompiled with its paired interval,
split sizes from `--set`, `dspyc eval --uncompiled / --with-baseline`, and tables that print whole in logs.

The program is a toy whose quality is set by whether it has demos (no LM calls), so every number is known;
compile, artifacts and the MLflow registry (embedded SQLite) are the real path."""

import io
import json
from pathlib import Path

import dspy
import pytest
from rich.table import Table

from dspyc import artifacts, compiler, loading, registry, tracking
from dspyc.console import LOG_WIDTH, console
from dspyc.data import apply_split_config
from dspyc.data.qa import load_qa_dataset
from dspyc.errors import DataError
from dspyc.stats import paired_bootstrap, paired_delta

CAPITALS = Path(__file__).parent / "fixtures" / "knn_project" / "datasets" / "capitals"
LABELED = str(Path(__file__).parent / "fixtures" / "knn_project" / "optimizers" / "labeled.yaml")


class Toy(dspy.Module):
    """Right on every other question uncompiled; with demos (compiled): right on all ("helps") or none ("hurts")."""

    def __init__(self, gold: dict[str, str], mode: str):
        super().__init__()
        self.answer = dspy.Predict("question -> answer")
        self.gold, self.mode = gold, mode

    def forward(self, question: str) -> dspy.Prediction:
        i = sorted(self.gold).index(question)
        if self.answer.demos and self.mode == "engine dies":  # the compiled program's calls fail, as on a dead engine
            raise ConnectionError("failed to connect to 127.0.0.1:8400")
        if self.answer.demos or self.mode == "always":  # "always": a setting ConfigSearch can find
            # "slightly": one question more than uncompiled, a gain inside the noise
            right = self.mode in ("helps", "always") or (self.mode == "slightly" and (i % 2 == 0 or i == 1))
        else:
            right = i % 2 == 0
        return dspy.Prediction(answer=self.gold[question] if right else "unknown")


def _load(dataset: str, seed: int):
    data = load_qa_dataset(dataset)
    data.split(seed, 6, 8, 8)
    return data


def _metric(example, pred, trace=None):
    return float(pred.get("answer", "") == example.answer)


def _build(data, config):
    return Toy({q.question: q.answer for q in data.questions}, config["mode"])


SPEC = registry.ProgramSpec(
    name="toyqa",
    build=_build,
    load_data=_load,
    metric=_metric,
    dataset=str(CAPITALS),
    report=lambda results: {
        "accuracy_of_the_toy_program": sum(_metric(e, p) for e, p in results) / max(len(results), 1)
    },
    config={"mode": "helps", "train": 6, "dev": 8, "test": 8},
)


@pytest.fixture
def toy(settings, monkeypatch):
    real = registry.get
    monkeypatch.setattr(registry, "get", lambda name: SPEC if name == "toyqa" else real(name))
    return settings.model_copy(
        update={
            "lm_backend": "litellm",
            "lm_model": "openai/unused",
            "mlflow_traces": False,
            "num_threads": 2,
            "reoptimize_resamples": 2000,
        }
    )


def _rows(s, version: int, name: str = compiler.EVALUATION_FILE) -> list[dict]:
    f = artifacts.program_dir("toyqa", s) / str(version) / name
    return [json.loads(line) for line in f.read_text().splitlines()]


def test_compiling_that_helps_keeps_the_compiled_program_and_shows_the_interval(toy, capsys):
    m = compiler.compile_program("toyqa", LABELED, s=toy)
    base = m.metrics["baseline"]["dev"]["metric"]
    assert m.kept == "compiled" and m.metrics["compiled"]["dev"]["metric"] == 1.0 and 0 < base < 1
    d = m.metrics["delta"]["dev"]
    assert d["n"] == 8 and d["mean"] == pytest.approx(1 - base) and 0 < d["low"] <= d["mean"] <= d["high"] <= 1
    assert set(m.metrics["delta"]) == {"dev", "test"}
    assert (
        m.metrics["delta"] == compiler.compile_program("toyqa", LABELED, s=toy, save=False).metrics["delta"]
    )  # seeded
    out = capsys.readouterr().out
    assert compiler.DELTA_COLUMN in out and f"{d['mean']:+.3f} [" in out and "accuracy_of_the_toy_program" in out
    assert compiler.KEPT_UNCOMPILED not in out
    assert {r["program"] for r in _rows(toy, m.version)} == {"compiled"}
    assert {r["program"] for r in _rows(toy, m.version, "evaluation_uncompiled.jsonl")} == {"uncompiled"}
    assert json.loads((artifacts.program_dir("toyqa", toy) / "1" / "program.json").read_text())["answer"]["demos"]
    assert tracking.resolve_alias("toyqa", "champion", toy) == 1


def test_compiling_that_hurts_keeps_the_uncompiled_program_and_says_so(toy, capsys):
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"mode": "hurts"})
    assert m.kept == "uncompiled"
    base = m.metrics["baseline"]["dev"]["metric"]
    assert m.metrics["compiled"]["dev"]["metric"] == 0.0 and base > 0  # both recorded
    assert m.score("dev") == base and m.metrics["delta"]["dev"]["mean"] == pytest.approx(-base)
    assert compiler.KEPT_UNCOMPILED in capsys.readouterr().out
    state = json.loads((artifacts.program_dir("toyqa", toy) / "1" / "program.json").read_text())
    assert state["answer"]["demos"] == []  # the uncompiled program's state
    rows = _rows(toy, m.version)
    assert {r["program"] for r in rows} == {"uncompiled"} and {r["split"] for r in rows} == {"dev", "test"}
    assert {r["program"] for r in _rows(toy, m.version, "evaluation_compiled.jsonl")} == {"compiled"}
    loaded = loading.load_program("toyqa@1", configure_lm=False, s=toy)
    assert not loaded.answer.demos
    # it is not worse than the program it started from, so as the first version it is champion
    assert tracking.resolve_alias("toyqa", "champion", toy) == 1


def test_a_gain_inside_the_noise_keeps_the_uncompiled_program_and_says_why(toy, capsys):
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"mode": "slightly"})
    d = m.metrics["delta"]["dev"]
    assert m.metrics["compiled"]["dev"]["metric"] > m.metrics["baseline"]["dev"]["metric"] and d["p"] >= 0.05
    assert m.kept == "uncompiled" and "beyond noise" in m.kept_reason and f"p = {d['p']:.2f}" in m.kept_reason
    assert "beyond noise" in capsys.readouterr().out
    assert (
        compiler.compile_program(
            "toyqa",
            LABELED,
            s=toy.model_copy(update={"compile_keep_alpha": 1.0}),
            config={"mode": "slightly"},
            save=False,
        ).kept
        == "compiled"
    )


def test_a_compile_whose_lm_failed_saves_nothing_and_says_so(toy):
    from dspyc.errors import DspycError

    with pytest.raises(DspycError, match=r"compiled · dev: 8 of 8 program runs failed.*nothing saved"):
        compiler.compile_program("toyqa", LABELED, s=toy, config={"mode": "engine dies"})
    assert artifacts.versions("toyqa", toy) == []


def test_a_worse_compile_does_not_replace_a_better_champion(toy):
    compiler.compile_program("toyqa", LABELED, s=toy)  # dev 1.0: champion
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"mode": "hurts"})  # keeps uncompiled: dev < 1
    assert m.version == 2 and m.kept == "uncompiled" and m.score("dev") < 1
    assert tracking.resolve_alias("toyqa", "champion", toy) == 1
    m3 = compiler.compile_program("toyqa", LABELED, s=toy)  # as good as the champion on the same dev examples
    assert tracking.resolve_alias("toyqa", "champion", toy) == m3.version == 3


def test_settings_chosen_by_config_search_are_recorded_and_rebuilt_on_load(toy, tmp_path):
    recipe = tmp_path / "search.yaml"
    recipe.write_text("optimizer: ConfigSearch\nparams:\n  space:\n    mode: [hurts, always]\n")
    m = compiler.compile_program("toyqa", str(recipe), s=toy)
    assert m.kept == "compiled" and m.config["mode"] == "always" and m.metrics["compiled"]["dev"]["metric"] == 1.0
    assert len(m.trials) == 3 and m.trials[-1] == 1.0 > m.trials[0]  # the program as built (helps) first
    assert loading.load_program(f"toyqa@{m.version}", configure_lm=False, s=toy).mode == "always"


def test_set_train_dev_test_change_the_splits(toy):
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"test": 3, "dev": 5}, save=False)
    assert (m.config["test"], m.config["dev"], m.config["train"]) == (3, 5, 6)
    assert m.metrics["delta"]["test"]["n"] == 3 and m.metrics["delta"]["dev"]["n"] == 5
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"test": 3}, sizes=(4, 2, 2), save=False)
    assert m.metrics["delta"]["test"]["n"] == 2 and m.config["test"] == 2  # `sizes` wins, and is what is recorded


def test_a_version_reloads_with_the_split_sizes_it_was_compiled_with(toy):
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"test": 3})
    _, manifest, dataset = loading.build_version(f"toyqa@{m.version}", s=toy)
    assert len(dataset.splits["test"]) == 3 and manifest.split_ids["test"] == compiler.ids_hash(dataset.splits["test"])


def test_apply_split_config():
    data = load_qa_dataset(CAPITALS)
    data.split(0, 6, 8, 8)
    assert not apply_split_config(data, {"hops": 1}, 0) and not apply_split_config(data, {"test": 8}, 0)
    assert apply_split_config(data, {"test": 4}, 0) and len(data.splits["test"]) == 4 and len(data.splits["dev"]) == 8
    assert data.split_sizes == (6, 8, 4)
    with pytest.raises(DataError, match="whole numbers"):
        apply_split_config(data, {"test": "many"}, 0)
    with pytest.raises(DataError, match=">= 0"):
        apply_split_config(data, {}, 0, sizes=(1, -1, 1))


def test_eval_uncompiled_and_with_baseline(toy, capsys):
    scores = compiler.evaluate_version(
        "toyqa", data=str(CAPITALS), split="test", s=toy, uncompiled=True
    )  # nothing compiled
    assert 0 < scores["metric"] < 1
    assert "toyqa (uncompiled)" in capsys.readouterr().out
    m = compiler.compile_program("toyqa", LABELED, s=toy, config={"test": 6})
    both = compiler.evaluate_version(f"toyqa@{m.version}", s=toy, split="test", with_baseline=True)
    assert both["metric"] == 1.0 and both["delta"]["n"] == 6
    assert both["delta"]["mean"] == pytest.approx(1.0 - both["baseline"]["metric"])
    out = capsys.readouterr().out
    assert f"toyqa@{m.version} − uncompiled [95% CI]" in out
    uncompiled = compiler.evaluate_version(f"toyqa@{m.version}", s=toy, split="test", uncompiled=True)
    assert uncompiled["metric"] == both["baseline"]["metric"]


def test_paired_delta_pairs_by_id_and_is_seeded():
    new = [{"id": str(i), "score": float(i % 2)} for i in range(20)]
    old = [{"id": str(i), "score": 0.0} for i in reversed(range(20))]  # another order: paired by id
    d = paired_delta(new, old, 2000, seed=1)
    assert d["mean"] == 0.5 and d["n"] == 20 and d == paired_delta(new, old, 2000, seed=1)
    assert (d["low"], d["high"]) == paired_bootstrap([float(i % 2) for i in range(20)], [0.0] * 20, 2000, seed=1)[1]
    assert paired_delta([], old) is None


def test_tables_print_whole_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    buf = io.StringIO()  # not a TTY: rich alone would use 80 columns
    c = console(file=buf)
    assert c.width == LOG_WIDTH
    header = "retrieval_recall_of_the_gold_titles_at_k"
    table = Table("split", "program", header, "accuracy_per_category_multi", compiler.DELTA_COLUMN)
    table.add_row("dev", "compiled", "0.500", "0.250", "+0.100 [-0.050, +0.250]")
    c.print(table)
    text = buf.getvalue()
    assert header in text and compiler.DELTA_COLUMN in text and "+0.100 [-0.050, +0.250]" in text


def test_set_split_sizes_work_per_category_for_bfcl():
    from dspyc.data.bfcl import BFCLDataset

    examples = {
        cat: [dspy.Example(id=f"{cat}-{i:02d}", question="q").with_inputs("question") for i in range(30)]
        for cat in ("simple", "multiple")
    }
    data = BFCLDataset(name="bfcl:simple,multiple", path="bfcl-eval", examples=examples, version="v")
    data.split(0, 6, 4, 8)  # what programs/agent.py's load_data does with its config's train/dev/test
    assert apply_split_config(data, {"test": 3, "train": 2}, 0)
    assert {k: len(data.splits[k]) for k in ("train", "dev", "test")} == {"train": 4, "dev": 8, "test": 6}


def test_each_program_is_scored_on_dev_and_test_in_one_stage(toy):
    """The uncompiled program before the compile (on the engine as it was), the compiled one after it."""
    m = compiler.compile_program("toyqa", LABELED, s=toy, save=False)
    stages = m.usage["stage_wall_time_s"]
    assert list(stages) == ["baseline dev and test", "compile", "compiled dev and test"]  # MLflow metric names
    assert {w: set(m.metrics[w]) for w in ("baseline", "compiled")} == {
        "baseline": {"dev", "test"},
        "compiled": {"dev", "test"},
    }
    assert m.metrics["compiled"]["test"]["metric"] == 1.0 and 0 < m.metrics["baseline"]["test"]["metric"] < 1
    m = compiler.compile_program("toyqa", LABELED, s=toy, save=False, skip_test=True)
    assert list(m.usage["stage_wall_time_s"]) == ["baseline dev", "compile", "compiled dev"]
    assert "test" not in m.metrics["baseline"] and "test" not in m.metrics["compiled"]


def test_a_version_loaded_after_its_source_changed_says_so(toy, monkeypatch, recwarn):
    m = compiler.compile_program("toyqa", LABELED, s=toy)
    loading.load_program(f"toyqa@{m.version}", configure_lm=False, s=toy)
    assert not [w for w in recwarn if "other source" in str(w.message)]
    monkeypatch.setattr(registry, "source_hash", lambda name: "edited")
    with pytest.warns(UserWarning, match=f"toyqa@{m.version} was compiled against other source"):
        loading.load_program(f"toyqa@{m.version}", configure_lm=False, s=toy)
