"""dspyc.abstention and qa.without_answers: which questions become unanswerable, and what is scored."""

import json

import dspy
import pytest

from dspyc import abstention
from dspyc.data.qa import load_qa_dataset, without_answers
from dspyc.errors import DspycError
from dspyc.registry import ProgramSpec


def _dataset(tmp_path):
    qs = [  # q0 and q1 share a gold passage
        {"id": f"q{i}", "question": f"question {i}?", "answer": f"a{i}", "supporting_titles": [f"T{i}"]}
        for i in range(8)
    ]
    qs[0]["supporting_titles"].append("Shared")
    qs[1]["supporting_titles"].append("Shared")
    corpus = [{"title": f"T{i}", "text": f"a{i} is here"} for i in range(8)] + [{"title": "Shared", "text": "both"}]
    d = tmp_path / "d"
    d.mkdir()
    (d / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (d / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    data = load_qa_dataset(d)
    data.split(0, 2, 2, 4)
    return data


def test_without_answers_drops_the_gold_passages_and_names_every_question_that_lost_one(tmp_path):
    data = _dataset(tmp_path)
    q0 = next(ex for ex in data.splits["all"] if ex.id == "q0")
    reduced, lost = without_answers(data, [q0])
    assert {r.title for r in reduced.corpus} == {f"T{i}" for i in range(1, 8)}
    assert "q0" in lost and "q1" in lost  # q1 shared the "Shared" passage with q0
    assert lost <= {ex.id for ex in data.splits["all"]} and len(lost) == 2
    assert reduced.version != data.version  # indexes and caches tell the two corpora apart
    assert len(data.corpus) == 9 and reduced.splits == data.splits  # the original is untouched, the splits kept


def test_halves_are_seeded_disjoint_and_cover_the_split():
    exs = [dspy.Example(id=str(i)) for i in range(11)]
    gone, rest = abstention.halves(exs, seed=0)
    assert len(gone) == 5 and len(rest) == 6
    assert {e.id for e in gone} | {e.id for e in rest} == {e.id for e in exs}
    assert [e.id for e in abstention.halves(exs, seed=0)[0]] == [e.id for e in gone]
    assert [e.id for e in abstention.halves(exs, seed=1)[0]] != [e.id for e in gone]


def test_a_question_that_lost_a_shared_passage_is_in_neither_half(tmp_path):
    data = _dataset(tmp_path)
    spec = ProgramSpec("p", build=None, load_data=None, metric=None, report=None, dataset="d")
    with pytest.raises(DspycError, match="without_answers"):
        abstention.unanswerable_data(spec, data, "test", 0)
    spec.without_answers = without_answers
    reduced, gone, kept = abstention.unanswerable_data(spec, data, "test", 0)
    assert len(gone) == 2 and not {ex.id for ex in gone} & {ex.id for ex in kept}
    removed = {t for ex in gone for t in ex.gold_titles}
    assert all(not removed & set(ex.gold_titles) for ex in kept)
    assert not removed & {r.title for r in reduced.corpus}


def _row(id, abstained, score):
    return {"id": id, "outputs": {"abstained": abstained}, "score": score}


def test_score_counts_abstention_per_half_and_compares_the_answerable_half_without_the_rule():
    on = [_row("u1", True, 0.0), _row("u2", False, 0.0), _row("a1", False, 1.0), _row("a2", True, 0.0)]
    off = [_row("u1", False, 0.0), _row("u2", False, 0.5), _row("a1", False, 1.0), _row("a2", False, 1.0)]
    a = abstention.score(on, off, {"u1", "u2"}, n_resamples=200)
    assert (a.unanswerable, a.answerable) == (2, 2)
    assert a.abstention == 0.5 and a.false_abstention == 0.5
    assert a.score == 0.5 and a.score_without_rule == 1.0
    assert a.delta["mean"] == -0.5 and a.delta["n"] == 2
    assert a.declined_scoring == 0.5  # a2: declined, though the rule off answered it right
    off[3] = _row("a2", False, 0.0)  # ... and where it was wrong anyway, declining it cost nothing
    assert abstention.score(on, off, {"u1", "u2"}, n_resamples=200).declined_scoring == 0.0
