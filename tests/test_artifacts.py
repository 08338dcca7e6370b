import json

import pytest

from dspyc import artifacts, loading
from dspyc.errors import ArtifactError


def manifest(**kw):
    base = dict(
        program="toy",
        version=0,
        import_path="programs.toy",
        source_hash="x",
        recipe={"name": "r"},
        dataset=artifacts.DatasetRef(name="d", path="/d", version="h"),
        lm=artifacts.LMRef(backend="engine", model="m", served_name="m"),
        seed=0,
    )
    return artifacts.Manifest(**(base | kw))


def test_versions_are_sequential_and_hashed(settings):
    d1 = artifacts.save("toy", {"program.json": '{"a": 1}'}, manifest(), settings)
    d2 = artifacts.save("toy", {"program.json": '{"a": 2}'}, manifest(), settings)
    assert (d1.name, d2.name) == ("1", "2")
    assert artifacts.versions("toy", settings) == [1, 2]
    m = artifacts.read_manifest("toy", 2, settings)
    assert m.version == 2 and m.files["program.json"] == artifacts.sha256_file(d2 / "program.json")


def test_modified_file_is_refused(settings):
    d = artifacts.save("toy", {"program.json": "{}"}, manifest(), settings)
    (d / "program.json").write_text('{"tampered": true}')
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        artifacts.read_manifest("toy", 1, settings)


def test_missing_version_is_a_clear_error(settings):
    artifacts.save("toy", {"program.json": "{}"}, manifest(), settings)
    with pytest.raises(ArtifactError, match=r"toy@7 not found; versions: 1"):
        artifacts.read_manifest("toy", 7, settings)
    with pytest.raises(ArtifactError, match="no compiled versions of 'nothing'"):
        loading.resolve_version("nothing", None, settings)


def test_killed_save_leaves_no_version(settings, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts.os, "rename", boom)
    with pytest.raises(KeyboardInterrupt):
        artifacts.save("toy", {"program.json": "{}"}, manifest(), settings)
    monkeypatch.undo()
    assert artifacts.versions("toy", settings) == []
    assert not list((settings.artifacts_dir / "toy").glob(".tmp-*"))
    assert artifacts.save("toy", {"program.json": "{}"}, manifest(), settings).name == "1"


def _save_many(root: str, n: int, queue) -> None:
    from dspyc.settings import Settings

    s = Settings(artifacts_root=root)
    failures = 0
    for _ in range(n):
        try:
            artifacts.save("toy", {"a.bin": b"a" * 2_000_000, "b.bin": b"b" * 2_000_000}, manifest(), s)
        except OSError:
            failures += 1
    queue.put(failures)


def test_concurrent_saves_of_one_program_all_land(settings):
    """Each save used to delete every `.tmp-*` folder on entry, the work folders of concurrent saves included (3
    processes x 15 saves: 8 versions, 37 FileNotFoundError). Every save lands now, each version whole."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_save_many, args=(str(settings.artifacts_dir), 8, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    failures = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    assert failures == [0, 0, 0]
    assert artifacts.versions("toy", settings) == list(range(1, 25))
    for v in (1, 12, 24):
        artifacts.read_manifest("toy", v, settings)  # every file present and matching its hash
    assert not list((settings.artifacts_dir / "toy").glob(".tmp-*"))


def test_only_a_dead_saves_work_folder_is_cleared(settings):
    root = settings.artifacts_dir / "toy"
    root.mkdir(parents=True)
    dead, alive, fresh = root / ".tmp-dead", root / ".tmp-alive", root / ".tmp-fresh"
    for d in (dead, alive, fresh):
        d.mkdir()
    (dead / artifacts.OWNER_LOCK).touch()  # its owner died: nobody holds the lock
    owner = artifacts._own(alive)  # a save in progress (here, in this process: flock is per open file)
    try:
        import os

        import subprocess
        import sys

        # another process clears: it removes the dead folder, not the live one, nor one too new to judge
        code = f"from pathlib import Path; from dspyc import artifacts; print(artifacts.clear_stale_work(Path({str(root)!r})))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert ".tmp-dead" in out and not dead.exists() and alive.exists() and fresh.exists()
    finally:
        os.close(owner)


def test_parse_ref():
    assert artifacts.parse_ref("rag@champion") == ("rag", "champion")
    assert artifacts.parse_ref("rag") == ("rag", None)


def test_manifest_roundtrip_is_json(settings):
    d = artifacts.save("toy", {"program.json": "{}"}, manifest(metrics={"compiled": {"dev": {"f1": 0.5}}}), settings)
    data = json.loads((d / "manifest.json").read_text())
    assert data["metrics"]["compiled"]["dev"]["f1"] == 0.5 and data["created"]


def test_unreachable_tracking_keeps_the_artifact_and_sync_logs_it_later(settings, monkeypatch):
    from dspyc import tracking

    d = artifacts.save("toy", {"program.json": "{}"}, manifest(), settings)
    down = settings.model_copy(update={"mlflow_uri": "http://127.0.0.1:9"})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert tracking.log_compile(artifacts.read_manifest("toy", 1, settings), d, down) is None
    assert (settings.artifacts_dir / ".pending-tracking" / "toy@1.json").exists()
    assert tracking.sync(settings) == ["toy@1"]  # the embedded store is reachable
    assert not (settings.artifacts_dir / ".pending-tracking" / "toy@1.json").exists()


def test_a_students_headline_score_is_its_own_not_its_teachers():
    from dspyc import plots

    m = manifest(
        kind="student", metrics={"teacher": {"test": {"metric": 0.35}}, "student": {"test": {"metric": 0.167}}}
    )
    assert plots.score(m, "test") == 0.167 and plots.score(m, "dev") is None  # a student is scored on test only
