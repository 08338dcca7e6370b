"""The tracking layer against real MLflow: the embedded SQLite store (unit) and a real `mlflow server` (integration)."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from dspyc import artifacts, loading, report, tracking
from dspyc.errors import ArtifactError
from test_artifacts import manifest


def compiled(settings, dev: float, test: float, trials=(), tokens=(100, 20, 4), baseline=0.5, auto_champion=True, **kw):
    """A saved and tracked toy version, as compile leaves it (`baseline`: uncompiled scores as a share of these;
    `kw`: more manifest fields, e.g. split_ids; without them, like old manifests, dev examples are not recorded)."""
    metrics = {
        which: {"dev": {"metric": dev * k}, "test": {"metric": test * k}}
        for which, k in (("baseline", baseline), ("compiled", 1))
    }
    usage = {"input_tokens": tokens[0], "output_tokens": tokens[1], "lm_calls": tokens[2]}
    d = artifacts.save(
        "toy", {"program.json": "{}"}, manifest(metrics=metrics, usage=usage, trials=list(trials), **kw), settings
    )
    m = artifacts.read_manifest("toy", int(d.name), settings)
    assert tracking.log_compile(m, d, settings, auto_champion=auto_champion)
    return m


SAME_DEV = {"split_ids": {"dev": "dev-ids", "test": "test-ids"}}  # versions measured on the same dev examples


def test_first_version_becomes_champion_then_promote_and_rollback(settings):
    compiled(settings, 0.2, 0.3)
    assert tracking.resolve_alias("toy", "champion", settings) == 1
    compiled(settings, 0.4, 0.5)
    assert tracking.resolve_alias("toy", "champion", settings) == 1  # dev examples not recorded: not compared, no move
    assert tracking.promote("toy", 2, settings) == 1
    assert loading.resolve_version("toy", "champion", settings) == 2
    assert tracking.rollback("toy", settings) == (2, 1)
    assert tracking.resolve_alias("toy", "champion", settings) == 1
    with pytest.raises(ArtifactError, match="no earlier champion"):
        tracking.rollback("toy", settings)


def test_a_later_compile_becomes_champion_only_when_not_worse_on_the_same_dev_examples(settings, capsys):
    compiled(settings, 0.4, 0.5, **SAME_DEV)
    compiled(settings, 0.3, 0.9, **SAME_DEV)  # better on test, worse on dev: not champion
    assert tracking.resolve_alias("toy", "champion", settings) == 1
    assert "toy@1 stays champion: toy@2 scores 0.300 on dev, below toy@1's 0.400" in capsys.readouterr().err
    compiled(settings, 0.5, 0.5, **SAME_DEV)
    assert tracking.resolve_alias("toy", "champion", settings) == 3
    other_data = artifacts.DatasetRef(name="d", path="/d", version="h2")
    compiled(settings, 0.9, 0.9, dataset=other_data, **SAME_DEV)  # higher, but on other data: not like for like
    assert tracking.resolve_alias("toy", "champion", settings) == 3
    assert "toy@3 stays champion: toy@4 is not compared with it (different data" in capsys.readouterr().err
    other_lm = artifacts.LMRef(backend="engine", model="big", served_name="big")
    compiled(settings, 0.9, 0.9, lm=other_lm, **SAME_DEV)
    assert tracking.resolve_alias("toy", "champion", settings) == 3
    compiled(settings, 0.9, 0.9, auto_champion=False, **SAME_DEV)  # re-optimization's challengers: its own test decides
    assert tracking.resolve_alias("toy", "champion", settings) == 3


def test_a_first_version_worse_than_its_uncompiled_program_is_not_champion(settings, capsys):
    compiled(settings, 0.2, 0.3, baseline=2.0)  # uncompiled 0.4 on dev, compiled 0.2 (and kept)
    assert "no champion yet: toy@1 scores 0.200 on dev, below its uncompiled program (0.400)" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match="no such alias"):
        tracking.resolve_alias("toy", "champion", settings)
    compiled(settings, 0.2, 0.3, baseline=2.0, kept="uncompiled")  # what compile saves now: the uncompiled, 0.4
    assert tracking.resolve_alias("toy", "champion", settings) == 2


def test_promoting_a_version_with_a_lower_dev_score_warns(settings, capsys):
    compiled(settings, 0.4, 0.5, **SAME_DEV)
    compiled(settings, 0.2, 0.9, **SAME_DEV)
    capsys.readouterr()
    assert tracking.promote("toy", 2, settings, reason="manual") == 1  # a person may; it is not silent
    assert "warning: toy@2 scores 0.200 on dev, below toy@1 (0.400)" in capsys.readouterr().err
    assert tracking.resolve_alias("toy", "champion", settings) == 2
    tracking.promote("toy", 1, settings)
    assert "warning" not in capsys.readouterr().err


def test_a_store_that_blinks_loses_no_champion_history(settings, monkeypatch):
    """A transient store error used to read as an empty history, and promote then wrote [version] over the real one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from dspyc.errors import TrackingError

    compiled(settings, 0.2, 0.3)
    compiled(settings, 0.4, 0.5)
    tracking.promote("toy", 2, settings)
    assert tracking.champion_history("toy", settings) == [1, 2]
    real = MlflowClient.get_registered_model

    def locked(self, name):
        raise MlflowException("(sqlite3.OperationalError) database is locked", error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(MlflowClient, "get_registered_model", locked)
    with pytest.raises(TrackingError, match="database is locked"):
        tracking.promote("toy", 1, settings)
    with pytest.raises(TrackingError, match="database is locked"):
        tracking.aliases("toy", settings)
    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", lambda self, name, alias: locked(self, name))
    with pytest.raises(TrackingError, match="database is locked"):  # not "no such alias"
        tracking.resolve_alias("toy", "champion", settings)
    monkeypatch.setattr(MlflowClient, "get_registered_model", real)
    assert tracking.champion_history("toy", settings) == [1, 2]
    assert tracking.champion_history("never-registered", settings) == []  # not found is still an empty history


def test_promote_refuses_a_missing_version(settings):
    compiled(settings, 0.2, 0.3)
    with pytest.raises(ArtifactError, match="toy@9 not found"):
        tracking.promote("toy", 9, settings)


def test_runs_carry_params_metrics_trials_and_artifacts(settings):
    import mlflow

    m = compiled(settings, 0.2, 0.3, trials=[10.0, 30.0, 20.0])
    client = mlflow.MlflowClient(tracking.tracking_uri(settings))
    run = mlflow.search_runs(experiment_names=["dspyc/toy"], output_format="list")[0]
    assert run.data.params["dataset_hash"] == "h" and run.data.metrics["compiled.test.metric"] == 0.3
    assert [x.value for x in client.get_metric_history(run.info.run_id, "trial.score")] == [10.0, 30.0, 20.0]
    paths = {f.path for f in client.list_artifacts(run.info.run_id)} | {
        f.path for f in client.list_artifacts(run.info.run_id, "plots")
    }
    assert {"artifact", "plots/trials_v1.png", "plots/quality_vs_cost.png"} <= paths
    assert m.version == 1


def test_versions_table_and_report(settings, capsys):
    compiled(
        settings, 0.2, 0.3, trials=[1.0, 2.0], lm=artifacts.LMRef(backend="engine", model="m", served_name="served-m")
    )
    compiled(settings, 0.4, 0.6, tokens=(300, 40, 4))
    rows = report.version_rows("toy", settings)
    assert [(r["version"], r["aliases"], r["test"]) for r in rows] == [(1, ["champion"], 0.3), (2, [], 0.6)]
    assert rows[1]["tokens_per_call"] == 85
    report.print_versions("toy", settings)
    table = capsys.readouterr().out
    assert "champion" in table and " lm " in table and "served-m" in table  # the LM each version was compiled for
    md = report.write_report("toy", s=settings)
    text = md.read_text()
    assert "| 2 |  | r | d@h | 0.400 (0.200) | 0.600 (0.300) | 85 |" in text
    assert (md.parent / "quality_vs_cost.png").stat().st_size > 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback, with its own SQLite store and artifact root."""
    import httpx

    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'store.db'}",
            "--artifacts-destination",
            str(root / "art"),
            "--workers",
            "1",
        ],
        stdout=open(root / "log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # its own process group: the server forks workers
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"mlflow server did not start: {(root / 'log').read_text()[-2000:]}")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.integration
def test_against_a_real_mlflow_server(settings, mlflow_server, monkeypatch):
    remote = settings.model_copy(update={"mlflow_uri": mlflow_server})
    compiled(remote, 0.2, 0.3, trials=[5.0])
    compiled(remote, 0.5, 0.6)
    assert tracking.promote("toy", 2, remote) == 1
    assert loading.resolve_version("toy", "champion", remote) == 2
    assert [r["aliases"] for r in report.version_rows("toy", remote)] == [[], ["champion"]]
    assert tracking.rollback("toy", remote) == (2, 1)


@pytest.mark.integration
def test_server_down_then_sync_to_the_server(settings, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    d = artifacts.save("toy", {"program.json": "{}"}, manifest(), settings)
    down = settings.model_copy(update={"mlflow_uri": "http://127.0.0.1:9"})
    assert tracking.log_compile(artifacts.read_manifest("toy", 1, down), d, down) is None
    up = settings.model_copy(update={"mlflow_uri": mlflow_server})
    assert tracking.sync(up) == ["toy@1"]
    assert tracking.resolve_alias("toy", "champion", up) == 1
