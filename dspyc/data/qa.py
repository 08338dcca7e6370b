"""Question-answering datasets in the HotPotQA JSONL format: `questions.jsonl` + `corpus.jsonl`.

Rows are validated with pydantic as they are read, so a bad row stops the run with one line naming the
file, the line and the field. The dataset's version is a content hash of both files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import dspy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dspyc.data import outside as examples_outside
from dspyc.data import SPLIT_KEYS, seeded_split
from dspyc.data import versions as data_versions
from dspyc.errors import DataError
from dspyc.settings import get_settings


class Question(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str
    type: str = "single"
    supporting_titles: list[str] = []
    supporting_facts: list[tuple[str, int]] = []

    @model_validator(mode="after")
    def _has_gold_titles(self) -> "Question":
        if not self.gold_titles:
            raise ValueError("needs supporting_titles or supporting_facts (the gold titles)")
        return self

    @property
    def gold_titles(self) -> list[str]:
        return list(dict.fromkeys([*self.supporting_titles, *(t for t, _ in self.supporting_facts)]))


class CorpusRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1)
    text: str = Field(min_length=1)


def read_jsonl(path: Path, model: type[BaseModel]) -> list[BaseModel]:
    """Read and validate a JSONL file; the first bad row raises DataError naming file, line and field."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(model.model_validate_json(line))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "row"
                msg = "not valid JSON" if err["type"] == "json_invalid" else err["msg"]
                raise DataError(f"{path}:{lineno}: field '{where}': {msg}") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


@dataclass
class QADataset:
    name: str
    path: Path
    questions: list[Question]
    corpus: list[CorpusRow]
    version: str
    splits: dict[str, list[dspy.Example]] = field(default_factory=dict)
    split_sizes: tuple[int, int, int] | None = None  # the (train, dev, test) asked for by the last split()

    def split(self, seed: int, train: int, dev: int, test: int) -> dict[str, list[dspy.Example]]:
        """Deterministic train/dev/test from a seed; sizes are capped by what the data holds."""
        self.splits = seeded_split(sorted(self.questions, key=lambda q: q.id), to_example, seed, train, dev, test, 3)
        self.split_sizes = (train, dev, test)
        return self.splits

    def outside(self, *splits: str) -> list[dspy.Example]:
        """Every example in none of `splits`, e.g. the reranker's training pool: all but dev and test.
        (The program's train split is kept small because each of its examples costs LM calls.)"""
        return examples_outside(self.splits, *splits)

    @property
    def documents(self) -> list[dict[str, str]]:
        return [p.model_dump() for p in self.corpus]


def without_answers(data: QADataset, examples: Sequence[dspy.Example]) -> tuple[QADataset, set[str]]:
    """The same questions and splits over a corpus without the gold passages of `examples`, so their answers are
    no longer in it; and the ids of every split question that lost a gold passage (those, and any that shared one)."""
    gone = {t for ex in examples for t in ex.gold_titles}
    corpus = [r for r in data.corpus if r.title not in gone]
    tag = hashlib.sha256("\n".join(sorted(gone)).encode()).hexdigest()[:8]
    reduced = replace(data, corpus=corpus, version=f"{data.version}-without-{tag}", splits=dict(data.splits))
    lost = {ex.id for name in SPLIT_KEYS for ex in data.splits.get(name, []) if gone & set(ex.gold_titles)}
    return reduced, lost


def to_example(q: Question) -> dspy.Example:
    return dspy.Example(
        id=q.id, question=q.question, answer=q.answer, gold_titles=q.gold_titles, type=q.type
    ).with_inputs("question")


def resolve_dataset_dir(name_or_path: str | Path) -> Path:
    """A dataset name under the project's `datasets/`, or a folder path."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p.resolve()
    named = get_settings().project_dir / "datasets" / str(name_or_path)
    if named.is_dir():
        return named
    raise DataError(f"dataset {str(name_or_path)!r} not found: not a folder, and not in {named.parent}")


def load_qa_dataset(name_or_path: str | Path) -> QADataset:
    """A QA folder (or dataset name), optionally at an earlier version: `wiki`, `wiki@3f2a…`, `/data/hotpot`."""
    ref, _, at = (
        str(name_or_path).partition("@") if not Path(str(name_or_path)).is_dir() else (str(name_or_path), "", "")
    )
    path = resolve_dataset_dir(ref)
    qfile, cfile = path / "questions.jsonl", path / "corpus.jsonl"
    for f in (qfile, cfile):
        if not f.is_file():
            raise DataError(
                f"{path} is not a QA dataset folder: {f.name} is missing (expected questions.jsonl and corpus.jsonl)"
            )
    chosen = data_versions.select(path, [qfile, cfile], at or None)
    questions = read_jsonl(qfile, Question)
    corpus = read_jsonl(cfile, CorpusRow)
    for extra in chosen.additions:
        (questions if extra.name.endswith("-questions.jsonl") else corpus).extend(
            read_jsonl(extra, Question if extra.name.endswith("-questions.jsonl") else CorpusRow)
        )
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{qfile}: duplicate id {dup!r}")
    return QADataset(name=path.name, path=path, questions=questions, corpus=corpus, version=chosen.version)


def add_questions(name_or_path: str | Path, questions_file: Path, corpus_file: Path | None = None) -> QADataset:
    """Validate new rows against the current version (ids unique, gold titles in the corpus) and append them
    as a new version. A bad row stops everything with one line; nothing is merged."""
    current = load_qa_dataset(name_or_path)
    new_questions = read_jsonl(Path(questions_file), Question)
    new_corpus = read_jsonl(Path(corpus_file), CorpusRow) if corpus_file else []
    seen = {q.id for q in current.questions}
    titles = {p.title for p in current.corpus} | {p.title for p in new_corpus}
    for lineno, q in enumerate(new_questions, 1):
        if q.id in seen:
            raise DataError(
                f"{questions_file}:{lineno}: field 'id': {q.id!r} is already in {current.name}@{current.version}"
            )
        seen.add(q.id)
        missing = [t for t in q.gold_titles if t not in titles]
        if missing:
            raise DataError(
                f"{questions_file}:{lineno}: field 'supporting_titles': {missing[0]!r} is not in the corpus "
                f"(add its passages with --corpus)"
            )
    contents = {"questions": Path(questions_file).read_text(encoding="utf-8")}
    if corpus_file:
        contents["corpus"] = Path(corpus_file).read_text(encoding="utf-8")
    data_versions.add(current.path, contents)
    return load_qa_dataset(current.path)
