"""The one tracking layer: MLflow runs for every compile, and the model registry as the index of artifacts.

The artifact store holds the files; a registered model version points at the same files (logged as the
run's artifacts) and carries the dspyc version number as a tag. Aliases such as `champion` live only in
the registry. If the tracking store is unreachable, the compile still succeeds: the run is queued in
`artifacts/.pending-tracking/` and `dspyc sync` logs it later.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dspyc.artifacts import Manifest, now_iso, program_dir, read_manifest, write_json_atomic
from dspyc.console import console as make_console
from dspyc.errors import ArtifactError, TrackingError
from dspyc.settings import Settings, get_settings

console = make_console(stderr=True)
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


def log_compile(
    manifest: Manifest,
    version_dir: Path,
    s: Settings | None = None,
    auto_champion: bool = True,
    tags: dict[str, str] | None = None,
) -> str | None:
    """Log a compile as an MLflow run and register its artifact; returns the run id (None if skipped).
    `auto_champion`: the version may become `champion` by the rule of `champion_decision`."""
    s = s or get_settings()
    try:
        run_id = _log(manifest, version_dir, s, auto_champion, tags)
    except Exception as exc:  # tracking must never lose a compiled artifact
        pending = _pending_dir(s)
        pending.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            pending / f"{manifest.program}@{manifest.version}.json",
            {"program": manifest.program, "version": manifest.version, "auto_champion": auto_champion},
        )
        console.print(
            f"[yellow]tracking skipped[/yellow] ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            f"the artifact is saved; run `dspyc sync` to log it later"
        )
        return None
    console.print(f"[dim]tracked: MLflow run {run_id} · registered {manifest.program} ({tracking_uri(s)})[/dim]")
    return run_id


def _log(
    manifest: Manifest, version_dir: Path, s: Settings, auto_champion: bool = True, tags: dict[str, str] | None = None
) -> str:
    from dspyc import plots

    params = {
        "program": manifest.program,
        "recipe": manifest.recipe.get("name"),
        "optimizer": manifest.recipe.get("optimizer"),
        "seed": manifest.seed,
        "lm": manifest.lm.served_name,
        "lm_backend": manifest.lm.backend,
        "dataset": manifest.dataset.name,
        "dataset_hash": manifest.dataset.version,
        "git_commit": manifest.git_commit or "",
        "source_hash": manifest.source_hash,
        "dspyc_version": manifest.version,
    }
    params |= {f"recipe.{k}": v for k, v in manifest.recipe.get("params", {}).items()}
    metrics = flatten(manifest.metrics) | flatten(manifest.usage, "usage.") | {"wall_time_s": manifest.wall_time_s}
    with tempfile.TemporaryDirectory() as tmp:
        figures = plots.version_plots(manifest.program, Path(tmp), s, upto=manifest.version)
        kind = "distill" if manifest.kind == "student" else "compile"  # a LoRA student comes from `dspyc distill`
        run_id = log_run(
            manifest.program,
            kind,
            f"{kind} {manifest.program}@{manifest.version}",
            params,
            metrics,
            s,
            artifact_dirs={"artifact": version_dir},
            files=figures,
            steps=_series(manifest),
            tags={VERSION_TAG: str(manifest.version), **(tags or {})},
        )
    mlflow = _mlflow(s)
    register(manifest, f"{mlflow.get_run(run_id).info.artifact_uri}/artifact", run_id, s, auto_champion)
    return run_id


def log_candidates(manifest: Manifest, parent_run: str | None, s: Settings) -> None:
    """A cost or pareto compile's candidates, one child run each under the compile's run (dev score, delta, cost)."""
    if parent_run is None:  # the compile's run was not logged (`dspyc sync` logs it later)
        return
    try:
        for c in manifest.metrics.get("candidates", []):
            _log_candidate(manifest, c, parent_run, s)
    except _store_errors() as exc:  # the candidates are in the manifest; MLflow only mirrors them
        console.print(
            f"[yellow]tracking skipped[/yellow] for the candidates ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]})"
        )


def _log_candidate(manifest: Manifest, c: dict[str, Any], parent_run: str, s: Settings) -> None:
    metrics = {
        k: float(v)
        for k, v in (("dev", c["dev"]), ("dev_cost", c["dev_cost"]), ("probe_cost", c["probe_cost"]))
        if v is not None
    }
    metrics |= {f"delta.{k}": float(v) for k, v in (c.get("delta") or {}).items()}
    metrics |= {f"cost.{k}": float(v) for k, v in (c.get("cost") or {}).items()}
    log_run(
        manifest.program,
        "candidate",
        f"{manifest.program}@{manifest.version} · {c['name']}",
        {"origin": c["origin"], "config": c["config"], "measure": c["measure"]},
        metrics,
        s,
        tags={
            "mlflow.parentRunId": parent_run,
            "dspyc.frontier": str(c["frontier"]).lower(),
            "dspyc.chosen": str(c["chosen"]).lower(),
        },
    )


def _series(manifest: Manifest) -> dict[str, list[float]]:
    """Per-step series of a compile: the optimizer's trial scores, a chain's dev score per stage, a LoRA's loss."""
    training = manifest.usage.get("training") or {}
    return {
        "trial.score": manifest.trials,
        "stage.dev": [st["dev"] for st in manifest.metrics.get("stages", [])],
        "train.loss": [loss for _, loss in training.get("losses", [])],
    }


def log_run(
    program: str,
    kind: str,
    name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    s: Settings | None = None,
    *,
    files: list[Path] = (),
    artifact_dirs: dict[str, Path] | None = None,
    steps: dict[str, list[float]] | None = None,
    tags: dict[str, str] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """One MLflow run in the program's experiment (compile, eval, reoptimize, distill); returns its id.
    `steps` are per-step series (e.g. a score per optimizer trial), logged with step numbers."""
    s = s or get_settings()
    mlflow = _mlflow(s)
    experiment(program, s)
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN-free
        for key, series in (steps or {}).items():
            for i, value in enumerate(series):
                mlflow.log_metric(key, float(value), step=i)
        mlflow.set_tags({"dspyc.kind": kind, "dspyc.program": program, **(tags or {})})
        for path, d in (artifact_dirs or {}).items():
            mlflow.log_artifacts(str(d), artifact_path=path)
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="plots" if f.suffix == ".png" else None)
        for fname, rows in (tables or {}).items():
            if rows:
                mlflow.log_table(_table_columns(rows), artifact_file=fname)
        return run.info.run_id


def _table_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {
        k: [
            r.get(k) if isinstance(r.get(k), (int, float, str, type(None))) else json.dumps(r.get(k), default=str)
            for r in rows
        ]
        for k in keys
    }


def enable_traces(program: str, s: Settings | None = None) -> bool:
    """DSPy traces into the program's experiment via `mlflow.dspy.autolog` (evaluation and program calls;
    off for optimizer internals, which would log thousands of near-duplicate traces)."""
    s = s or get_settings()
    if not s.mlflow_traces:
        return False
    # MLflow drops traces past 1,000 queued; a finetune's teacher traces (8 threads) outran its SQLite writer.
    os.environ.setdefault("MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE", "20000")
    try:
        mlflow = _mlflow(s)
        experiment(program, s)
        mlflow.dspy.autolog(log_traces=True, log_traces_from_eval=True, log_traces_from_compile=False, silent=True)
        return True
    except Exception as exc:  # tracing is a convenience; never fail a compile over it
        console.print(f"[yellow]MLflow traces off[/yellow] ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return False


def disable_traces() -> None:
    try:
        import mlflow

        mlflow.dspy.autolog(disable=True, silent=True)
    except Exception:
        pass


def register(manifest: Manifest, source: str, run_id: str | None, s: Settings, auto_champion: bool = True) -> int:
    """A registry version whose source is the artifact files (not a pickled module); returns its number. With
    `auto_champion`, a program version then becomes `champion` if `champion_decision` says so."""
    client = _mlflow(s).MlflowClient()
    try:
        client.get_registered_model(manifest.program)
    except _store_errors() as exc:
        if not not_found(exc):
            raise store_error(exc, s) from exc
        client.create_registered_model(manifest.program, description=f"dspyc program {manifest.program}")
    tags = {
        VERSION_TAG: str(manifest.version),
        "recipe": manifest.recipe.get("name", ""),
        "dataset_hash": manifest.dataset.version,
        "kind": manifest.kind,
    }
    mv = client.create_model_version(
        manifest.program,
        source=source,
        run_id=run_id,
        tags=tags,
        description=f"{manifest.program}@{manifest.version} ({manifest.recipe.get('name')})",
    )
    if manifest.kind == "program" and auto_champion:
        current = alias_holder(manifest.program, CHAMPION, s)
        try:
            champ = read_manifest(manifest.program, current, s, verify=False) if current is not None else None
            ok, reason = champion_decision(manifest, champ)
        except ArtifactError as exc:  # the champion's artifact is gone or unreadable: nothing to compare with
            ok, reason = False, f"{manifest.program}@{current} stays {CHAMPION}: its manifest is unreadable ({exc})"
        if ok:
            promote(manifest.program, manifest.version, s, reason=reason, warn=False)
            console.print(f"[dim]{manifest.program}@{manifest.version} is now {CHAMPION}: {reason}[/dim]")
        else:
            console.print(f"[yellow]{reason}[/yellow]", highlight=False)
    return int(mv.version)


def comparable(a: Manifest, b: Manifest) -> str | None:
    """Why the dev scores of two versions are not like for like (None when they are: same dataset version,
    same dev examples, same LM)."""
    if a.dataset.version != b.dataset.version:
        return f"different data ({a.dataset.name}@{a.dataset.version} vs {b.dataset.name}@{b.dataset.version})"
    if not a.split_ids.get("dev") or not b.split_ids.get("dev"):
        return "the dev examples of one of them are not recorded"
    if a.split_ids["dev"] != b.split_ids["dev"]:
        return "different dev examples"
    if a.lm.served_name != b.lm.served_name:
        return f"compiled for different LMs ({a.lm.served_name} vs {b.lm.served_name})"
    return None


def champion_decision(new: Manifest, champion: Manifest | None) -> tuple[bool, str]:
    """Whether a newly registered version becomes `champion`, and why (one line). With no champion yet: unless it
    scores below its own uncompiled program on dev. Otherwise: only with a dev score at least the champion's,
    measured on the same data, dev examples and LM (else the champion stays; re-optimization and `dspyc promote`
    remain the ways to move it)."""
    ref, dev = f"{new.program}@{new.version}", new.score("dev")
    if champion is None:
        base = new.metrics.get("baseline", {}).get("dev", {}).get("metric")
        if dev is not None and isinstance(base, (int, float)) and dev < base:
            return False, f"no {CHAMPION} yet: {ref} scores {dev:.3f} on dev, below its uncompiled program ({base:.3f})"
        return True, "first version"
    cref, cdev = f"{champion.program}@{champion.version}", champion.score("dev")
    why = comparable(new, champion)
    if why is None and (dev is None or cdev is None):
        why = "a dev score is missing"
    if why:
        return False, f"{cref} stays {CHAMPION}: {ref} is not compared with it ({why})"
    if new.recipe.get("objective", "quality") != "quality":
        return cost_champion(new, champion, dev, cdev)
    if dev >= cdev:
        return True, f"dev {dev:.3f} >= {cref}'s {cdev:.3f} on the same examples"
    return False, f"{cref} stays {CHAMPION}: {ref} scores {dev:.3f} on dev, below {cref}'s {cdev:.3f}"


def cost_champion(new: Manifest, champion: Manifest, dev: float, cdev: float) -> tuple[bool, str]:
    """A cost or pareto version replaces the champion when it is cheaper per run on dev and its dev score is not
    below the champion's by more than its margin."""
    from dspyc.objective import COST_LABELS, run_cost

    margin, measure, s = float(new.recipe.get("margin", 0.0)), new.recipe.get("cost", "tokens"), get_settings()
    ref, cref = f"{new.program}@{new.version}", f"{champion.program}@{champion.version}"
    cost, ccost = (
        run_cost(
            m.metrics.get("cost", {}).get("baseline" if m.kept == "uncompiled" else "compiled", {}).get("dev", {}),
            measure,
            s.price_machine_hour,
        )
        for m in (new, champion)
    )
    if cost is None or ccost is None:
        return False, f"{cref} stays {CHAMPION}: {ref} is not compared with it (a cost per run is missing)"
    if dev >= cdev - margin and cost < ccost:
        return True, (
            f"objective {new.recipe.get('objective')}: dev {dev:.3f} within {margin:g} of {cref}'s {cdev:.3f} "
            f"at {cost:,.1f} < {ccost:,.1f} {COST_LABELS[measure]}"
        )
    return False, (
        f"{cref} stays {CHAMPION}: {ref} (objective {new.recipe.get('objective')}) has dev {dev:.3f} vs "
        f"{cdev:.3f} (margin {margin:g}) at {cost:,.1f} vs {ccost:,.1f} {COST_LABELS[measure]}"
    )


def dev_regression(program: str, version: int, s: Settings | None = None, alias: str | None = None) -> str | None:
    """A warning line when `version` scores below the version `alias` (champion) points at on dev (None otherwise)."""
    s, alias = s or get_settings(), alias or CHAMPION
    current = alias_holder(program, alias, s)
    if current is None or current == version:
        return None
    new, old = read_manifest(program, version, s, verify=False), read_manifest(program, current, s, verify=False)
    dev, cdev = new.score("dev"), old.score("dev")
    if dev is None or cdev is None or dev >= cdev:
        return None
    why = comparable(new, old)
    return f"{program}@{version} scores {dev:.3f} on dev, below {program}@{current} ({cdev:.3f})" + (
        f"; not like for like: {why}" if why else ""
    )


def sync(s: Settings | None = None) -> list[str]:
    """Log compiles whose tracking was skipped (store unreachable at the time)."""
    s = s or get_settings()
    done = []
    for f in sorted(_pending_dir(s).glob("*.json")) if _pending_dir(s).is_dir() else []:
        ref = json.loads(f.read_text())
        manifest = read_manifest(ref["program"], ref["version"], s)
        _log(manifest, program_dir(ref["program"], s) / str(ref["version"]), s, ref.get("auto_champion", True))
        f.unlink()
        done.append(f"{ref['program']}@{ref['version']}")
    return done


def resolve_alias(program: str, alias: str, s: Settings | None = None) -> int:
    """The dspyc version a registry alias (e.g. `champion`) points at."""
    s = s or get_settings()
    mlflow = _mlflow(s)
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(program, alias)
    except _store_errors() as exc:
        if not not_found(exc):
            raise store_error(exc, s) from exc
        raise ArtifactError(f"{program}@{alias}: no such alias in the registry ({tracking_uri(s)})") from None
    if VERSION_TAG not in mv.tags:
        raise ArtifactError(f"registry version at {mv.source} has no {VERSION_TAG} tag")
    return int(mv.tags[VERSION_TAG])


# --- aliases: `champion` is the version in production ------------------------------------------------

CHAMPION = "champion"
HISTORY_TAG = "dspyc.champion_history"  # JSON list of dspyc versions, oldest first: what rollback walks back


def alias_holder(program: str, alias: str, s: Settings | None = None) -> int | None:
    """The dspyc version `alias` is on, or None when no version holds it (unlike `resolve_alias`, no error)."""
    return next((v for v, names in aliases(program, s).items() if alias in names), None)


def aliases(program: str, s: Settings | None = None) -> dict[int, list[str]]:
    """dspyc version -> registry aliases on it ({} when the program was never registered)."""
    s = s or get_settings()
    client = _mlflow(s).MlflowClient()
    try:
        model = client.get_registered_model(program)
    except _store_errors() as exc:
        if not not_found(exc):
            raise store_error(exc, s) from exc
        return {}
    by_registry = {
        str(mv.version): int(mv.tags.get(VERSION_TAG, 0)) for mv in client.search_model_versions(f"name='{program}'")
    }
    out: dict[int, list[str]] = {}
    for alias, reg_version in (model.aliases or {}).items():
        out.setdefault(by_registry.get(str(reg_version), 0), []).append(alias)
    return out


def _registry_version(client, program: str, version: int) -> str:
    for mv in client.search_model_versions(f"name='{program}'"):
        if mv.tags.get(VERSION_TAG) == str(version):
            return mv.version
    raise ArtifactError(f"{program}@{version} is not in the registry (compile it, or `dspyc sync` a skipped run)")


def _store_errors() -> type[Exception]:
    """What the MLflow client raises for any store failure (SQLAlchemy and HTTP errors arrive wrapped in it)."""
    from mlflow.exceptions import MlflowException

    return MlflowException


def not_found(exc: Exception) -> bool:
    """The store answered that the thing asked for does not exist (not that it failed). MLflow says so with
    RESOURCE_DOES_NOT_EXIST, and for a missing alias with INVALID_PARAMETER_VALUE "... alias ... not found"."""
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc))


def store_error(exc: Exception, s: Settings) -> TrackingError:
    return TrackingError(
        f"tracking store {tracking_uri(s)} failed: {type(exc).__name__}: "
        f"{(str(exc).splitlines() or [''])[0][:200]} (nothing was changed; retry)"
    )


def champion_history(program: str, s: Settings | None = None) -> list[int]:
    """Every version `champion` was moved to, oldest first ([] for a program never registered). A store that fails
    raises: an empty answer here would let `promote` write a history of one version over the real one."""
    s = s or get_settings()
    client = _mlflow(s).MlflowClient()
    try:
        return json.loads(client.get_registered_model(program).tags.get(HISTORY_TAG, "[]"))
    except _store_errors() as exc:
        if not not_found(exc):
            raise store_error(exc, s) from exc
        return []


def promote(
    program: str, version: int, s: Settings | None = None, alias: str = CHAMPION, reason: str = "", warn: bool = True
) -> int | None:
    """Point `alias` at `version` (one registry call, so a crash leaves the old or the new champion, never
    neither); returns the version it moved from. Moving it to a version with a lower dev score is allowed (a
    person or re-optimization's held-out test decided) but never silent: a warning line says so."""
    s = s or get_settings()
    read_manifest(program, version, s)  # refuse a missing or corrupt artifact before touching the registry
    regression = dev_regression(program, version, s, alias) if warn else None
    if regression:
        console.print(f"[yellow]warning:[/yellow] {regression}", highlight=False)
    client = _mlflow(s).MlflowClient()
    reg_version = _registry_version(client, program, version)
    previous = alias_holder(program, alias, s)
    history = champion_history(program, s) if alias == CHAMPION else []  # read before anything moves
    client.set_registered_model_alias(program, alias, reg_version)
    if alias == CHAMPION and previous != version:
        history = [*history, version][-50:]
        client.set_registered_model_tag(program, HISTORY_TAG, json.dumps(history))
        client.set_model_version_tag(program, reg_version, "dspyc.promoted", f"{now_iso()} {reason}".strip())
    return previous


def rollback(program: str, s: Settings | None = None) -> tuple[int, int]:
    """Move `champion` back to the version it held before; returns (from, to)."""
    s = s or get_settings()
    history = champion_history(program, s)
    current = resolve_alias(program, CHAMPION, s)
    earlier = [v for v in history if v != current]
    if not earlier:
        raise ArtifactError(f"{program}: no earlier champion to roll back to (history: {history or 'empty'})")
    target = earlier[-1]
    client = _mlflow(s).MlflowClient()
    client.set_registered_model_alias(program, CHAMPION, _registry_version(client, program, target))
    # drop the rolled-back version from the end of the history, so a second rollback goes further back
    while history and history[-1] != target:
        history.pop()
    client.set_registered_model_tag(program, HISTORY_TAG, json.dumps(history))
    return current, target
