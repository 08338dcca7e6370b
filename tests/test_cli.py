import subprocess
import sys

import pytest


def dspyc(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "dspyc.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("compile", "nope"), "unknown program 'nope'"),
        (("compile", "rag", "nope"), "unknown recipe 'nope'"),
        (("compile", "rag", "--data", "/no/such/folder"), "dataset '/no/such/folder' not found"),
        (("bench", "nothing"), "unknown benchmark"),
        (("bench", "engine", "--label", "../x"), "--label '../x'"),
        (("eval-retrieval", "--program", "rag", "--split", "all"), "use dev or test"),
        (("eval-retrieval",), "Missing option '--program'"),
        (("eval", "rag", "--uncompiled", "--with-baseline"), "exclude each other"),
        (("eval", "rag", "--unanswerable", "--with-baseline"), "exclude each other"),
        (("eval", "agent", "--uncompiled", "--unanswerable"), "agent cannot be made unanswerable"),
        (("compile", "rag", "--set", "test=many"), "split sizes must be whole numbers"),
        (
            ("compile", "rag", "--set", "abstain_ech=false"),
            "rag has no setting 'abstain_ech'; did you mean 'abstain_echo'?",
        ),
        (("adapter-check", "--model", "nope"), "unknown model 'nope'"),
        (("adapter-check", "--adapter", "Chat"), "unknown adapter 'Chat'"),
        (("distill", "tone", "--eval-threads", "0"), "--eval-threads"),
        (("bench", "lora"), "needs a version with an adapter"),
        (("bench", "compile"), "needs a program"),
        (("data", "prepare", "bfcl"), "no prepare step for dataset 'bfcl' (these have one: tone, wiki)"),
        (("bench", "train", "--precision", "fp16"), "--precision 'fp16'"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, message):
    r = dspyc(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_eval_of_missing_version(tmp_path):
    import os

    r = dspyc("eval", "rag@99", env={**os.environ, "DSPYC_ARTIFACTS_DIR": str(tmp_path)})
    assert r.returncode == 2 and "rag@99 not found" in r.stderr and "Traceback" not in r.stderr
    r = dspyc("distill-table", "tone@3", env={**os.environ, "DSPYC_ARTIFACTS_DIR": str(tmp_path)})
    assert r.returncode == 2 and "tone@3 not found" in r.stderr and "Traceback" not in r.stderr


def test_settings_and_schedule_mistakes_are_one_line(tmp_path):
    import os

    r = dspyc("versions", "rag", env={**os.environ, "DSPYC_LM_BACKEND": "vllm"})
    assert r.returncode == 2 and "setting DSPYC_LM_BACKEND='vllm'" in r.stderr and "Traceback" not in r.stderr
    r = dspyc("schedule", "--emit", "crontab", env={**os.environ, "DSPYC_ARTIFACTS_DIR": str(tmp_path)})
    assert r.returncode == 2 and "no program has a champion yet" in r.stderr and "Traceback" not in r.stderr


def test_help_teaches():
    r = dspyc("compile", "--help")
    assert r.returncode == 0 and "--data" in r.stdout and "recipe" in r.stdout.lower()


def test_distill_passes_its_eval_threads(monkeypatch):
    from typer.testing import CliRunner

    from dspyc import cli
    from dspyc.distill import pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "distill", lambda *a, **kw: seen.update(kw))
    r = CliRunner().invoke(cli.app, ["distill", "agent", "--teacher", "agent@6", "--eval-threads", "8"])
    assert r.exit_code == 0, r.output
    assert seen["eval_threads"] == 8 and seen["teacher"] == "agent@6"
    CliRunner().invoke(cli.app, ["distill", "agent"])
    assert seen["eval_threads"] == 2  # the default: every row's p50 latency at the same light load


def test_set_overrides_parse_yaml_values():
    from dspyc.cli import parse_overrides

    assert parse_overrides(["hops=1", "sources=[wiki, /data/x]", "retriever=bm25"]) == {
        "hops": 1,
        "sources": ["wiki", "/data/x"],
        "retriever": "bm25",
    }


def test_set_without_equals_is_a_one_line_error():
    import pytest

    from dspyc.cli import parse_overrides
    from dspyc.errors import DspycError

    with pytest.raises(DspycError, match="expected KEY=VALUE"):
        parse_overrides(["hops"])
