import gzip
import json

import dspy
import pytest

from dspyc import registry
from dspyc.data.tone import build_inputs, build_reference, load_tone_dataset


@pytest.fixture(scope="module")
def tone():
    registry.get("tone")  # puts the project on the path and imports the program
    import programs.tone as T

    return T


@pytest.fixture(scope="module")
def ev(tone):
    tone.load_data("tone", 0)
    return tone.evaluator("tone")


GOOD = (
    "We are pleased to share nine different vegetable recipes for our customers. Kind regards, the Communications Team."
)
SRC = "eat your veggies: 9 deliciously different recipes"


def test_a_compliant_rewrite_passes_every_rule(ev):
    s = ev.score(SRC, GOOD)
    assert all(s.rules.values()), s.rules
    assert s.adherence >= ev.guide.pass_threshold


@pytest.mark.parametrize(
    "rewrite, broken",
    [
        ("We don't share vegetable recipes. Kind regards, the Communications Team.", "no_contractions"),
        ("We share awesome vegetable recipes. Kind regards, the Communications Team.", "no_banned_words"),
        ("We share vegetable recipes! Kind regards, the Communications Team.", "no_exclamation"),
        ("I share nine different vegetable recipes today. Kind regards, the Communications Team.", "company_voice"),
        ("We share nine different vegetable recipes for our customers today.", "sign_off"),
        (
            "we share nine different vegetable recipes for our customers. Kind regards, the Communications Team.",
            "capitalized",
        ),
        (
            "We are pleased to share an update on our quarterly results. Kind regards, the Communications Team.",
            "keeps_subject",
        ),
        (
            " ".join(["We share recipes for vegetables with all of our customers in every region."] * 6)
            + " Kind regards, the Communications Team.",
            "length",
        ),
        (
            "We share nine different vegetable recipes with every one of our valued customers across all of the regions we serve today. "
            "Kind regards, the Communications Team.",
            "sentence_length",
        ),
    ],
)
def test_each_rule_catches_its_violation(ev, rewrite, broken):
    rules = ev.check(SRC, rewrite)
    assert not rules[broken], rules
    assert ev.score(SRC, rewrite).adherence < ev.score(SRC, GOOD).adherence


def test_empty_rewrite_scores_zero(ev):
    assert ev.score(SRC, "").adherence == 0.0


def test_similarity_prefers_corporate_writing(ev):
    corporate = "We will review your account and ensure the fee is waived for eligible customers."
    assert ev.similarity(corporate) > ev.similarity(SRC) > 0.0 == ev.similarity("")


def test_metric_is_a_score_or_a_pass_when_tracing(tone, ev):
    ex = dspy.Example(text=SRC).with_inputs("text")
    assert tone.metric(ex, dspy.Prediction(rewrite=GOOD)) == ev.score(SRC, GOOD).adherence
    assert tone.metric(ex, dspy.Prediction(rewrite=GOOD), trace=[]) is True
    assert tone.metric(ex, dspy.Prediction(rewrite="lol"), trace=[]) is False
    assert tone.metric(ex, dspy.Prediction()) == 0.0  # a failed call scores as nothing written


def test_teacher_gets_the_guide_and_its_demos_student_gets_neither(tone):
    data = tone.load_data("tone", 0)
    teacher = tone.build(data, tone.CONFIG)
    student = tone.build(data, tone.CONFIG | tone.PROGRAM.student_config)
    assert "Kind regards, the Communications Team." in teacher.rewrite.signature.instructions
    assert len(teacher.rewrite.demos) == len(tone.StyleGuide.load(data.style_guide_path).examples) >= 3
    assert student.rewrite.demos == [] and "house corporate tone" in student.rewrite.signature.instructions
    assert "Kind regards" not in student.rewrite.signature.instructions


def test_dataset_is_real_text_split_deterministically(tone):
    data = load_tone_dataset("tone")
    assert len(data.inputs) == 600 and len(data.reference) == 2000
    a = [e.id for e in data.split(0, 10, 5, 5)["test"]]
    assert a == [e.id for e in data.split(0, 10, 5, 5)["test"]] != [e.id for e in data.split(1, 10, 5, 5)["test"]]
    assert not {e.id for e in data.splits["train"]} & {e.id for e in data.splits["test"]}
    demo_inputs = {d["text"] for d in tone.StyleGuide.load(data.style_guide_path).examples}
    assert not demo_inputs & {r.text for r in data.inputs}  # the guide's worked examples never leak into the data


def test_prepare_steps_filter_and_are_deterministic():
    rows = [
        {"input": [{"role": "system", "content": "s"}, {"role": "user", "content": t}], "ideal": i}
        for t, i in [
            ("too short", "0"),
            ("a headline that is long enough to keep here", "1"),
            ("A headline that is long enough to keep here", "0"),
            ("another real looking headline with enough words", "0"),
        ]
    ]
    raw = "\r\n".join(json.dumps(r) for r in rows).encode()
    out = build_inputs(raw, n=10)
    assert [r["text"] for r in out] == [
        "a headline that is long enough to keep here",
        "another real looking headline with enough words",
    ]
    assert out[0]["sarcastic"] is True and out == build_inputs(raw, n=10)
    docs = [
        {
            "id": "d1",
            "title": "T",
            "content": "## Heading here\n- The customer must verify their identity before any change.\n"
            "Use tool_4821 to open the account for the customer today.\nshort line.\n",
        }
    ]
    ref = build_reference(gzip.compress(json.dumps(docs).encode()))
    assert [r["text"] for r in ref] == ["The customer must verify their identity before any change."]
