"""Program discovery: every `programs/<name>.py` that defines `PROGRAM = ProgramSpec(...)` is a program.

Adding a program touches no core code: one file in `programs/`, its signatures in `signatures/`, and a
dataset folder in `datasets/`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from dspyc.data import ProgramData
from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings


@dataclass(frozen=True)
class RetrievalSpec:
    """What a retrieval program offers `TrainRetriever` (dspyc.retriever_training): a ProgramSpec's `retrieval`."""

    documents: Callable[[ProgramData], Sequence[Mapping[str, str]]]  # the corpus, as `build_retrievers` takes it
    gold: Callable[[dspy.Example], tuple[str, set[str]]]  # (question, gold titles) of an example
    encoder_key: str = "encoder"  # the config key `build` reads the embedding model folder from (None: default)


@dataclass
class ProgramSpec:
    """What dspyc needs to know to compile, evaluate and load a program."""

    name: str
    # build(data, config) -> dspy.Module; `data` is what load_data returned (retrievers come from it).
    build: Callable[[ProgramData, dict[str, Any]], dspy.Module]
    load_data: Callable[
        [str, int], ProgramData
    ]  # (dataset name or folder, seed) -> split data (dspyc.data.ProgramData)
    metric: Callable[..., float]  # DSPy metric: (example, prediction, trace=None) -> float (or bool when tracing)
    report: Callable[[list[tuple[dspy.Example, Any]]], dict[str, float]]  # all metrics of an evaluation
    dataset: str  # the default dataset under datasets/
    default_recipe: str = "bootstrap"
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # The program's top-level inputs/outputs (field name -> type) for the typed serving API; derived when
    # None: inputs from `forward`'s annotated parameters, outputs from the last predictor's signature.
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    # Ids of examples the built program learned from besides train and dev (e.g. a reranker's training pool), so
    # that re-optimization never scores on them: (data, config) -> ids.
    learned_from: Callable[[ProgramData, dict[str, Any]], list[str]] | None = None
    # What weights training (`dspyc compile PROGRAM finetune`, `dspyc distill`) learns from besides passing traces.
    # A call is {"predictor": name, "inputs": {...}, "outputs": {...}}, as the program's trace leaves it.
    # gold_trace(example) -> calls: the program's trace for a labelled example, written from the label alone (the
    # agent: BFCL's possible answers). Used on train and on examples outside every split, never dev or test.
    gold_trace: Callable[[dspy.Example], list[dict[str, Any]]] | None = None
    # relabel(example, calls of the program's own run) -> calls: gold outputs over the inputs the program itself
    # produced (rag: the gold answer over its own retrieved passages, only where they hold it). `finetune` only:
    # where it is set, it replaces the program's passing traces; `dspyc distill` learns from the teacher's traces.
    relabel: Callable[[dspy.Example, list[Any]], list[dict[str, Any]]] | None = None
    # keep_trace(example, calls) -> bool: a passing trace is training data only if this holds (a clean trace).
    keep_trace: Callable[[dspy.Example, list[Any]], bool] | None = None
    # The config a `finetune` compile trains and serves the program under, on top of `config`: a step the untrained
    # LM does badly and an adapter can learn (the agent's split step writing its task count first). The compiled
    # version records it; the uncompiled baseline stays as built.
    finetune_config: dict[str, Any] = field(default_factory=dict)
    # Distillation (`dspyc distill`): the SFT recipe it trains with unless --sft says otherwise, and the config the
    # student is built with on top of `config` (what its prompt drops: a long style guide, demos).
    # prepare_data(out_dir, cache_dir) -> out_dir: rebuild the default dataset's files from their source
    # (`dspyc data prepare DATASET`); None when the dataset ships as it is.
    prepare_data: Callable[[Path, Path], Path] | None = None
    # tool_agent(settings, max_steps, compiled) -> module: the program as a tool-using agent for `dspyc ask`, its
    # compiled version (already loaded, adapter attached) in place of the as-built core when `--version` is given.
    tool_agent: Callable[[Settings, int | None, dspy.Module | None], dspy.Module] | None = None
    # Settings that trade cost for quality, each with the values `--objective cost|pareto` tries (config key ->
    # values; the grid of them, built with `build`), e.g. {"max_passages": [8, 4, 2], "hops": [2, 1]}.
    cost_space: dict[str, list[Any]] = field(default_factory=dict)
    # Answerability (`dspyc eval PROGRAM --unanswerable`, dspyc.abstention): without_answers(data, examples) ->
    # (data, lost ids): the same data whose corpus no longer holds these examples' answers, and the ids of every
    # split example that lost one. The program says it does not know in a bool `abstained` output; `abstain_off` is
    # the config that turns its rule off (the comparison "without the rule").
    without_answers: Callable[[ProgramData, list[dspy.Example]], tuple[ProgramData, set[str]]] | None = None
    abstain_off: dict[str, Any] = field(default_factory=dict)
    # A retriever the compile can train (`dspyc compile PROGRAM retriever`, dspyc.retriever_training): the corpus, each
    # example's gold titles, and the config key whose value is the embedding model folder `build` searches with.
    retrieval: RetrievalSpec | None = None
    sft_recipe: str = "sft_r16_qv"
    student_config: dict[str, Any] = field(default_factory=dict)

    @property
    def import_path(self) -> str:
        return f"programs.{self.name}"


def _ensure_project_on_path() -> None:
    root = str(get_settings().project_dir)
    if root not in sys.path:
        sys.path.insert(0, root)


def available() -> list[str]:
    d = get_settings().project_dir / "programs"
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))


def get(name: str) -> ProgramSpec:
    _ensure_project_on_path()
    if name not in available():
        raise DspycError(f"unknown program {name!r}; available: {', '.join(available()) or 'none'}")
    module = importlib.import_module(f"programs.{name}")
    spec = getattr(module, "PROGRAM", None)
    if not isinstance(spec, ProgramSpec):
        raise DspycError(f"programs/{name}.py defines no PROGRAM = ProgramSpec(...)")
    return spec


def source_hash(name: str) -> str:
    """Hash of the program's file and its signatures file as code (their syntax trees: docstrings, which become
    prompts, count; comments and formatting do not): what the prompts were compiled against."""
    import ast
    import hashlib

    root = get_settings().project_dir
    h = hashlib.sha256()
    for p in (root / "programs" / f"{name}.py", root / "signatures" / f"{name}.py"):
        if p.exists():
            text = p.read_text()
            try:
                h.update(ast.dump(ast.parse(text)).encode())
            except SyntaxError:  # loading the program reports it; the hash still tells versions apart
                h.update(text.encode())
    return h.hexdigest()[:16]
