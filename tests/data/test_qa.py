import json

import pytest

from dspyc.data.qa import load_qa_dataset
from dspyc.errors import DataError


def write(dir, questions, corpus):
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (dir / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    return dir


Q = [{"id": f"q{i}", "question": f"question {i}?", "answer": "a", "supporting_titles": ["T"]} for i in range(30)]
C = [{"title": "T", "text": "some text"}]


def test_bad_row_names_file_line_and_field(tmp_path):
    rows = [*Q[:2], {"id": "q9", "answer": "x", "supporting_titles": ["T"]}]
    d = write(tmp_path / "d", rows, C)
    with pytest.raises(DataError, match=r"questions.jsonl:3: field 'question': Field required"):
        load_qa_dataset(d)


def test_invalid_json_and_missing_gold(tmp_path):
    d = write(tmp_path / "d", Q[:1], C)
    (d / "corpus.jsonl").write_text('{"title": "T", "text": "x"}\n{oops\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: .*not valid JSON"):
        load_qa_dataset(d)
    d2 = write(tmp_path / "d2", [{"id": "1", "question": "q", "answer": "a"}], C)
    with pytest.raises(DataError, match="gold titles"):
        load_qa_dataset(d2)


def test_not_a_dataset_folder(tmp_path):
    d = write(tmp_path / "d", Q, C)
    (d / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match="corpus.jsonl is missing"):
        load_qa_dataset(d)
    with pytest.raises(DataError, match="not found"):
        load_qa_dataset(tmp_path / "nowhere")


def test_splits_are_deterministic_and_disjoint(tmp_path):
    ds = load_qa_dataset(write(tmp_path / "d", Q, C))
    a = ds.split(seed=1, train=5, dev=5, test=10)
    ids = {k: [e.id for e in v] for k, v in a.items()}
    assert len(ids["train"]) == 5 and len(ids["dev"]) == 5 and len(ids["test"]) == 10
    assert not set(ids["train"]) & set(ids["dev"]) and not set(ids["dev"]) & set(ids["test"])
    again = {k: [e.id for e in v] for k, v in ds.split(seed=1, train=5, dev=5, test=10).items()}
    assert again == ids
    other = {k: [e.id for e in v] for k, v in ds.split(seed=2, train=5, dev=5, test=10).items()}
    assert other["train"] != ids["train"]


def test_outside_is_everything_but_the_named_splits(tmp_path):
    ds = load_qa_dataset(write(tmp_path / "d", Q, C))
    ds.split(seed=1, train=5, dev=5, test=10)
    pool = {e.id for e in ds.outside("dev", "test")}
    held = {e.id for name in ("dev", "test") for e in ds.splits[name]}
    assert len(pool) == 15 and not pool & held and pool | held == {q["id"] for q in Q}
    assert {e.id for e in ds.splits["train"]} <= pool


def test_version_is_content_hash(tmp_path):
    v1 = load_qa_dataset(write(tmp_path / "d", Q, C)).version
    v2 = load_qa_dataset(write(tmp_path / "e", Q, C)).version
    v3 = load_qa_dataset(write(tmp_path / "f", Q[:-1], C)).version
    assert v1 == v2 != v3


def test_hotpot_folder_loads(hotpot_dir):
    ds = load_qa_dataset(hotpot_dir)
    assert len(ds.questions) == 200 and len(ds.corpus) == 1989
    assert all(len(q.gold_titles) == 2 for q in ds.questions)


def test_split_gives_train_what_dev_and_test_leave():
    """200 questions, train=110 with dev 30 and test 60 (issue 26's rag target) is all of them; a small set still
    keeps dev and test their share rather than handing train more than a third."""
    import dspy

    from dspyc.data import seeded_split

    rows = list(range(200))
    parts = seeded_split(rows, lambda r: dspy.Example(id=r), 0, 110, 30, 60, 3)
    assert [len(parts[k]) for k in ("train", "dev", "test")] == [110, 30, 60]
    assert not {e.id for e in parts["train"]} & {e.id for e in parts["dev"] + parts["test"]}
    small = seeded_split(list(range(30)), lambda r: dspy.Example(id=r), 0, 110, 30, 60, 3)
    assert [len(small[k]) for k in ("train", "dev", "test")] == [10, 10, 10]
