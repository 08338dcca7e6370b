"""The one tracking layer: MLflow runs for every compile, and the model registry as the index of artifacts.

The artifact store holds the files; a registered model version points at the same files (logged as the
run's artifacts) and carries the dspyc version number as a tag. Aliases such as `champion` live only in
the registry. If the tracking store is unreachable, the compile still succeeds: the run is queued in
`artifacts/.pending-tracking/` and `dspyc sync` logs it later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from dspyc.artifacts import Manifest, program_dir, read_manifest, write_json_atomic
from dspyc.errors import ArtifactError
from dspyc.settings import Settings, get_settings

console = Console(stderr=True)
VERSION_TAG = "dspyc.version"


def tracking_uri(s: Settings | None = None) -> str:
    s = s or get_settings()
    if s.mlflow_uri:
        return s.mlflow_uri
    s.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{s.artifacts_dir / 'mlflow.db'}"


def _mlflow(s: Settings):
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(s))
    mlflow.set_registry_uri(tracking_uri(s))
    return mlflow


def experiment(program: str, s: Settings) -> str:
    """The program's experiment; with the embedded store its artifacts stay under artifacts/, not the cwd."""
    import mlflow

    name = f"dspyc/{program}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = (s.artifacts_dir / "mlruns").as_uri() if not s.mlflow_uri else None
        exp_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, f"{key}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _pending_dir(s: Settings) -> Path:
    return s.artifacts_dir / ".pending-tracking"


def log_compile(manifest: Manifest, version_dir: Path, s: Settings | None = None) -> str | None:
    """Log a compile as an MLflow run and register its artifact; returns the run id (None if skipped)."""
    s = s or get_settings()
    try:
        run_id = _log(manifest, version_dir, s)
    except Exception as exc:  # tracking must never lose a compiled artifact
        pending = _pending_dir(s)
        pending.mkdir(parents=True, exist_ok=True)
        write_json_atomic(pending / f"{manifest.program}@{manifest.version}.json",
                          {"program": manifest.program, "version": manifest.version})
        console.print(f"[yellow]tracking skipped[/yellow] ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                      f"the artifact is saved; run `dspyc sync` to log it later")
        return None
    console.print(f"[dim]tracked: MLflow run {run_id} · registered {manifest.program} ({tracking_uri(s)})[/dim]")
    return run_id


def _log(manifest: Manifest, version_dir: Path, s: Settings) -> str:
    mlflow = _mlflow(s)
    experiment(manifest.program, s)
    params = {"program": manifest.program, "recipe": manifest.recipe.get("name"), "optimizer": manifest.recipe.get("optimizer"),
              "seed": manifest.seed, "lm": manifest.lm.served_name, "lm_backend": manifest.lm.backend,
              "dataset": manifest.dataset.name, "dataset_hash": manifest.dataset.version,
              "git_commit": manifest.git_commit or "", "source_hash": manifest.source_hash, "dspyc_version": manifest.version}
    params |= {f"recipe.{k}": v for k, v in manifest.recipe.get("params", {}).items()}
    with mlflow.start_run(run_name=f"compile {manifest.program}@{manifest.version}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(flatten(manifest.metrics) | flatten(manifest.usage, "usage.") | {"wall_time_s": manifest.wall_time_s})
        mlflow.set_tags({"dspyc.kind": "compile", VERSION_TAG: str(manifest.version)})
        mlflow.log_artifacts(str(version_dir), artifact_path="artifact")
        register(manifest, f"{run.info.artifact_uri}/artifact", run.info.run_id, s)
        return run.info.run_id


def register(manifest: Manifest, source: str, run_id: str | None, s: Settings) -> int:
    """A registry version whose source is the artifact files (not a pickled module); returns its number."""
    client = _mlflow(s).MlflowClient()
    try:
        client.get_registered_model(manifest.program)
    except Exception:
        client.create_registered_model(manifest.program, description=f"dspyc program {manifest.program}")
    tags = {VERSION_TAG: str(manifest.version), "recipe": manifest.recipe.get("name", ""),
            "dataset_hash": manifest.dataset.version, "kind": manifest.kind}
    mv = client.create_model_version(manifest.program, source=source, run_id=run_id, tags=tags,
                                     description=f"{manifest.program}@{manifest.version} ({manifest.recipe.get('name')})")
    return int(mv.version)


def sync(s: Settings | None = None) -> list[str]:
    """Log compiles whose tracking was skipped (store unreachable at the time)."""
    s = s or get_settings()
    done = []
    for f in sorted(_pending_dir(s).glob("*.json")) if _pending_dir(s).is_dir() else []:
        ref = json.loads(f.read_text())
        manifest = read_manifest(ref["program"], ref["version"], s)
        _log(manifest, program_dir(ref["program"], s) / str(ref["version"]), s)
        f.unlink()
        done.append(f"{ref['program']}@{ref['version']}")
    return done


def resolve_alias(program: str, alias: str, s: Settings | None = None) -> int:
    """The dspyc version a registry alias (e.g. `champion`) points at."""
    s = s or get_settings()
    mlflow = _mlflow(s)
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(program, alias)
    except Exception:
        raise ArtifactError(f"{program}@{alias}: no such alias in the registry ({tracking_uri(s)})") from None
    if VERSION_TAG not in mv.tags:
        raise ArtifactError(f"registry version at {mv.source} has no {VERSION_TAG} tag")
    return int(mv.tags[VERSION_TAG])
