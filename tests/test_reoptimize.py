"""Re-optimization: the significance gate (unit), and the whole champion/challenger loop through the CLI on
a fixture project whose score is set by its data alone (real data versions, compile, registry, MLflow)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dspyc.errors import DspycError
from dspyc.reoptimize import crontab_line, paired_bootstrap, program_lock

FIXTURE = Path(__file__).parent / "fixtures" / "knn_project"


def test_bootstrap_finds_a_clear_win_and_not_a_tie():
    delta, ci, p = paired_bootstrap([1.0] * 25 + [0.0] * 5, [0.0] * 25 + [0.0] * 5)
    assert delta == pytest.approx(25 / 30) and p < 0.001 and ci[0] > 0.5
    delta, ci, p = paired_bootstrap([1, 0, 1, 0] * 5, [0, 1, 1, 0] * 5)
    assert delta == 0 and p > 0.4 and ci[0] < 0 < ci[1]


def test_bootstrap_rejects_unpaired_scores():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_one_reoptimization_per_program_at_a_time(settings):
    with program_lock("rag", settings):
        with pytest.raises(DspycError, match="another re-optimization of rag is running"):
            with program_lock("rag", settings):
                pass
    with program_lock("rag", settings):  # released
        pass


def test_crontab_line(settings):
    line = crontab_line(["rag"], "0 3 * * *", settings)
    assert line.startswith("0 3 * * * cd ") and "dspyc reoptimize rag" in line and "reoptimize.log" in line


# --- the loop, end to end, as a user runs it --------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root)
    env = os.environ | {
        "DSPYC_PROJECT_DIR": str(root),
        "DSPYC_ARTIFACTS_DIR": str(root / "artifacts"),
        "DSPYC_LM_BACKEND": "litellm",
        "DSPYC_LM_MODEL": "openai/unused",  # the fixture makes no LM calls
        "DSPYC_MLFLOW_TRACES": "false",
        "DSPYC_NUM_THREADS": "2",
        "OPENAI_API_KEY": "unused",
    }
    env.pop("DSPYC_LM_URL", None)
    return root, env


def dspyc(env, *args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "dspyc.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dspyc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def decisions(root):
    return [json.loads(line) for line in (root / "artifacts" / "capitals" / "decisions.jsonl").read_text().splitlines()]


def client(env):
    import mlflow

    uri = f"sqlite:///{env['DSPYC_ARTIFACTS_DIR']}/mlflow.db"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion(env) -> int:
    return int(client(env).get_model_version_by_alias("capitals", "champion").tags["dspyc.version"])


@pytest.mark.integration
def test_noise_is_not_promoted_better_data_is_and_rollback_returns(project):
    root, env = project
    dspyc(env, "compile", "capitals")
    assert champion(env) == 1
    assert "unchanged" in dspyc(env, "reoptimize", "capitals")  # nothing new: no challenger

    dspyc(env, "data", "add", "capitals", str(root / "noise.jsonl"))
    out = dspyc(env, "reoptimize", "capitals")
    assert "kept" in out and champion(env) == 1
    assert decisions(root)[-1]["action"] == "kept" and decisions(root)[-1]["p_value"] > 0.05
    assert "already decided" in dspyc(env, "reoptimize", "capitals")  # the next tick doesn't recompile

    dspyc(env, "data", "add", "capitals", str(root / "better.jsonl"))
    out = dspyc(env, "reoptimize", "capitals")
    last = decisions(root)[-1]
    assert last["action"] == "promoted" and last["p_value"] < 0.01 and last["delta"] > 0.5, out
    assert champion(env) == last["challenger"] == 3

    mlflow = client(env)
    runs = mlflow.search_runs(
        [mlflow.get_experiment_by_name("dspyc/capitals").experiment_id],
        filter_string="tags.`dspyc.kind` = 'reoptimize'",
    )
    assert sorted(r.data.tags["dspyc.decision"] for r in runs) == ["kept", "promoted"]  # both visible in MLflow

    assert "3 → 1" in dspyc(env, "rollback", "capitals")
    assert champion(env) == 1
    table = dspyc(env, "versions", "capitals")
    assert "champion" in table and "labeled" in table


@pytest.mark.integration
def test_a_killed_reoptimization_leaves_the_champion_and_the_next_run_completes(project):
    root, env = project
    dspyc(env, "compile", "capitals")
    dspyc(env, "data", "add", "capitals", str(root / "better.jsonl"))
    slow = env | {"CAPITALS_DELAY_S": "0.5", "DSPYC_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspyc.cli", "reoptimize", "capitals"],
        env=slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = ""
    deadline = time.time() + 300
    while "compiling a challenger" not in seen and time.time() < deadline:
        seen += proc.stdout.readline()
    time.sleep(3)  # well inside the challenger's (slowed) evaluations
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "compiling a challenger" in seen
    assert champion(env) == 1 and not (root / "artifacts" / "capitals" / "decisions.jsonl").exists()

    dspyc(env, "reoptimize", "capitals")  # the lock died with its holder; this run completes
    assert decisions(root)[-1]["action"] == "promoted" and champion(env) == decisions(root)[-1]["challenger"]
