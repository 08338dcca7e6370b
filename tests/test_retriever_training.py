"""Compile the retriever into weights, without training a model: the triplets, the keep rule on dev recall, the
rebuilt program, and the version that stores the encoder and loads it again."""

import re
from types import SimpleNamespace

import dspy
import pytest

import dspyc.retrieval as retrieval
from dspyc import artifacts, compiler, loading, registry
from dspyc.errors import DspycError
from dspyc.finetune import CompileContext
from dspyc.optimizers import build_optimizer, load_recipe
from dspyc.registry import ProgramSpec, RetrievalSpec
from dspyc.retrieval.encoder import triplets
from dspyc.retrieval.types import Hit, Passage
from dspyc.retriever_training import TrainRetriever


def test_triplets_pair_each_positive_with_a_negative_and_skip_questions_without_one():
    pairs = [
        ("q1", "gold a", 1.0),
        ("q1", "gold b", 1.0),
        ("q1", "wrong x", 0.0),
        ("q2", "gold c", 1.0),  # no negative: nothing to contrast it with
    ]
    assert sorted(triplets(pairs)) == [("q1", "gold a", "wrong x"), ("q1", "gold b", "wrong x")]
    assert triplets(pairs, seed=0) == triplets(pairs, seed=0)


class TitleRetriever:
    """Answers each question with fixed titles: recall is whatever the test says it is."""

    name = "fake"

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    def search(self, query: str, k: int) -> list[Hit]:
        return [Hit(Passage(id=f"{t}#0", title=t, text=t), 1.0) for t in self.answers[query][:k]]


DEV = [dspy.Example(id=f"d{i}", question=f"q{i}", gold=["A"]).with_inputs("question") for i in range(12)]
POOL = [dspy.Example(id=f"t{i}", question=f"p{i}", gold=["B"]).with_inputs("question") for i in range(3)]


class Program(dspy.Module):
    def __init__(self, encoder=None):
        super().__init__()
        self.encoder = encoder
        self.answer = dspy.Predict("question -> answer")


def _spec(retrieval_spec=None) -> ProgramSpec:
    return ProgramSpec(
        name="qa",
        build=lambda d, c: Program(c.get("encoder")),
        load_data=lambda n, s: None,
        metric=lambda ex, pred, trace=None: 0.0,
        report=lambda results: {},
        dataset="x",
        retrieval=retrieval_spec,
    )


RSPEC = RetrievalSpec(documents=lambda data: [], gold=lambda ex: (ex.question, set(ex.gold)))


def _optimizer(monkeypatch, tmp_path, found_after: int, spec=RSPEC) -> TrainRetriever:
    """A TrainRetriever whose trained encoder finds "A" for the first `found_after` of 12 dev questions (the base
    one for 1 of them)."""
    data = SimpleNamespace(splits={"dev": DEV}, outside=lambda *splits: POOL)
    ctx = CompileContext(program="qa", spec=_spec(spec), dataset=data, settings=None, config={"k": 3})
    base = {f"q{i}": ["A"] if i < 1 else ["Z"] for i in range(12)}
    after = {f"q{i}": ["A"] if i < found_after else ["Z"] for i in range(12)}
    monkeypatch.setattr(retrieval, "load_encoder", lambda path: "trained")
    monkeypatch.setattr(
        retrieval,
        "build_retrievers",
        lambda docs, embedder=None: {"bm25": None, "hybrid": TitleRetriever(after if embedder else base)},
    )
    opt, _ = build_optimizer(load_recipe("retriever"), ctx.spec.metric, context=ctx)
    monkeypatch.setattr(opt, "train", lambda questions, bm25: (tmp_path / "enc", 9, 1.5))
    opt.context.settings = SimpleNamespace(embed_model="minilm")
    return opt


def test_an_encoder_that_finds_more_gold_on_dev_is_kept_and_the_program_rebuilt_with_it(monkeypatch, tmp_path):
    opt = _optimizer(monkeypatch, tmp_path, found_after=10)
    student = Program()
    student.answer.demos = [dspy.Example(question="x", answer="y")]
    out = opt.compile(student, trainset=[])
    r = opt.result
    assert r.kept and r.recall_before == pytest.approx(1 / 12) and r.recall_after == pytest.approx(10 / 12)
    assert r.delta["low"] > 0 and r.learned_from == ["t0", "t1", "t2"]
    assert out.encoder == str(tmp_path / "enc")  # built again with the encoder key set
    assert len(out.answer.demos) == 1  # a prompt stage's demos survive


def test_an_encoder_whose_dev_interval_reaches_0_is_not_kept(monkeypatch, tmp_path):
    opt = _optimizer(monkeypatch, tmp_path, found_after=2)
    student = Program()
    assert opt.compile(student, trainset=[]) is student
    assert not opt.result.kept and opt.result.delta["low"] <= 0


def test_a_program_without_a_retriever_is_a_one_line_error(monkeypatch, tmp_path):
    opt = _optimizer(monkeypatch, tmp_path, found_after=2, spec=None)
    with pytest.raises(DspycError, match="no retriever to train"):
        opt.compile(Program(), trainset=[])


def test_a_kept_encoder_is_stored_with_the_version_and_loading_points_the_program_at_it(monkeypatch, tmp_path):
    from dspyc.retriever_training import EncoderResult

    enc = tmp_path / "cache" / "enc"
    enc.mkdir(parents=True)
    (enc / "config.json").write_text("{}")
    result = EncoderResult(
        path=str(enc),
        base_model="minilm",
        triplets=9,
        questions=3,
        train_wall_s=1.5,
        retriever="hybrid",
        k=5,
        recall_before=0.5,
        recall_after=0.75,
        delta={"mean": 0.25, "low": 0.1, "high": 0.4, "p": 0.01, "n": 12},
        kept=True,
        learned_from=["t0"],
    )
    assert compiler.retriever_metrics(result)["dev_recall_after"] == 0.75
    from dspyc import retriever_training, tracking

    logged = tracking.flatten({"retriever": compiler.retriever_metrics(result)}) | tracking.flatten(
        {"retriever_training": retriever_training.usage(result)}
    )
    assert logged["retriever_training.dev_recall_after"] == 0.75
    assert all(re.fullmatch(r"[/\w.\- :]+", k) for k in logged), logged  # MLflow's metric names
    ref = artifacts.EncoderRef(path=compiler.ENCODER_DIR, base_model="minilm")
    manifest = artifacts.Manifest(
        program="qa",
        version=0,
        import_path="programs.qa",
        source_hash="x",
        recipe={},
        dataset=artifacts.DatasetRef(name="d", path=str(tmp_path), version="v"),
        lm=artifacts.LMRef(backend="engine", model="m", served_name="m"),
        seed=0,
        encoder=ref,
    )
    assert artifacts.Manifest.model_validate_json(manifest.model_dump_json()).encoder == ref

    built = {}

    def build(data, config):
        built["config"] = config
        return Program(config.get("encoder"))

    spec = _spec(RSPEC)
    spec.build = build
    monkeypatch.setattr(registry, "get", lambda name: spec)
    monkeypatch.setattr(registry, "source_hash", lambda name: "x")
    monkeypatch.setattr(loading, "resolve_version", lambda name, tag, s: 4)
    monkeypatch.setattr(loading, "read_manifest", lambda name, version, s: manifest)
    monkeypatch.setattr(loading, "apply_split_config", lambda *a: None)
    monkeypatch.setattr(loading, "load_state", lambda *a: None)
    monkeypatch.setattr(loading, "program_dir", lambda name, s: tmp_path / "artifacts" / name)
    spec.load_data = lambda data, seed: SimpleNamespace(version="v")
    loading.build_version("qa@4", s=SimpleNamespace())
    assert built["config"]["encoder"] == str(tmp_path / "artifacts" / "qa" / "4" / "encoder")


def test_the_retriever_recipe_validates_its_params():
    with pytest.raises(DspycError, match="params field 'retriever'"):
        from dspyc.optimizers import Recipe

        build_optimizer(
            Recipe(name="x", optimizer="TrainRetriever", params={"retriever": "bm25"}),
            lambda *a: 0.0,
            context=CompileContext(program="qa", spec=_spec(RSPEC), dataset=None, settings=None),
        )


def test_rag_declares_its_retriever_and_reads_the_encoder_key():
    spec = registry.get("rag")
    assert spec.retrieval is not None and spec.retrieval.encoder_key in spec.config
    ex = dspy.Example(question="Who?", gold_titles=["A", "B"])
    assert spec.retrieval.gold(ex) == ("Who?", {"A", "B"})
