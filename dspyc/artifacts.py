"""The artifact store: `artifacts/<program>/<version>/{program.json, manifest.json}`, written atomically.

A version folder appears only complete (a finished temporary folder is renamed into place), so a
compile killed midway leaves nothing behind but a `.tmp-*` folder that a later save clears (only once its owner is
dead: saves of one program may run side by side).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import dspy
from pydantic import BaseModel

from dspyc.errors import ArtifactError
from dspyc.settings import Settings, get_settings

PROGRAM_FILE, MANIFEST_FILE = "program.json", "manifest.json"


class DatasetRef(BaseModel):
    name: str
    path: str
    version: str  # content hash


class LMRef(BaseModel):
    backend: str
    model: str  # the model setting (known key, folder or hub id)
    served_name: str


class AdapterRef(BaseModel):
    """A LoRA adapter a version is served through: its files under `path` in the version folder, loaded at runtime
    into the engine of `base_model` under `lora_name` (never merged into the store)."""

    path: str = "adapter"
    lora_name: str
    base_model: str  # the model key the adapter was trained on
    decoding: dict[str, float] = {}  # decoding settings chosen for it (e.g. repetition_penalty); {}: greedy


class EncoderRef(BaseModel):
    """A trained retriever encoder a version searches with: its model folder under `path` in the version folder,
    fine-tuned from `base_model`; loading sets the program's `encoder_key` config to it."""

    path: str = "encoder"
    base_model: str


class Manifest(BaseModel):
    program: str
    version: int
    import_path: str
    source_hash: str
    recipe: dict[str, Any]
    dataset: DatasetRef
    lm: LMRef
    seed: int
    config: dict[str, Any] = {}
    metrics: dict[str, Any] = {}  # e.g. {"baseline": {"dev": {...}, "test": {...}}, "compiled": {...}}
    usage: dict[str, Any] = {}  # tokens in/out, LM calls, estimated cost
    wall_time_s: float = 0.0
    library_versions: dict[str, str] = {}
    git_commit: str | None = None
    created: str = ""
    files: dict[str, str] = {}  # file name -> sha256
    kind: Literal["program", "student"] = "program"  # a student: a distilled LoRA adapter on a smaller base
    trials: list[float] = []  # the optimizer's score per trial, in order, where it exposes trials
    trained_on: list[str] = []  # ids of train, dev and anything else learned from: never in a later held-out comparison
    # "compiled", or "uncompiled" when the compiled program did not beat the uncompiled one on dev (below it, or
    # not beyond noise): program.json then holds the uncompiled program's state (both score sets stay under metrics)
    kept: Literal["compiled", "uncompiled"] = "compiled"
    kept_reason: str = ""
    split_ids: dict[str, str] = {}  # split -> hash of the example ids evaluated on it: same hash, same examples
    adapter: AdapterRef | None = None  # a weights compile's (or a student's) LoRA adapter; None: the base LM as is
    encoder: EncoderRef | None = None  # a retriever compile's trained encoder; None: the program's own embedder

    def score(self, split: str = "dev", metric: str = "metric") -> float | None:
        """The kept program's score on a split (None when not measured)."""
        which = "baseline" if self.kept == "uncompiled" else "compiled"
        value = self.metrics.get(which, {}).get(split, {}).get(metric)
        return float(value) if isinstance(value, (int, float)) else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("dspyc", "dspy", "transformers", "torch", "sentence-transformers", "qdrant-client", "bm25s", "mlflow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def program_dir(program: str, s: Settings | None = None) -> Path:
    return (s or get_settings()).artifacts_dir / program


def versions(program: str, s: Settings | None = None) -> list[int]:
    d = program_dir(program, s)
    return (
        sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / MANIFEST_FILE).exists())
        if d.is_dir()
        else []
    )


def save(program: str, files: dict[str, Path | bytes | str], manifest: Manifest, s: Settings | None = None) -> Path:
    """Write `files` and the manifest as the next version; returns the version folder."""
    root = program_dir(program, s)
    root.mkdir(parents=True, exist_ok=True)
    clear_stale_work(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    owner = _own(tmp)  # held until the folder is renamed into place or removed: a live save is never "stale"
    try:
        for name, content in files.items():
            dest = tmp / name
            if isinstance(content, Path):
                (shutil.copytree if content.is_dir() else shutil.copy2)(content, dest)
            else:
                dest.write_bytes(content.encode() if isinstance(content, str) else content)
        (tmp / OWNER_LOCK).unlink()  # not part of the version (the open descriptor keeps the lock meanwhile)
        manifest.files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest.created = manifest.created or now_iso()
        while True:
            manifest.version = (versions(program, s) or [0])[-1] + 1
            (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
            try:
                os.rename(tmp, root / str(manifest.version))  # atomic; fails if another run took this number
                return root / str(manifest.version)
            except OSError:
                if not (root / str(manifest.version)).exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(owner)


OWNER_LOCK = ".owner.lock"
STALE_UNLOCKED_S = 3600.0  # a work folder without its lock file (between unlink and rename) is left alone this long


def _own(folder: Path) -> int:
    """Lock `folder` as a live save's work folder: an exclusive flock the OS releases when the process dies."""
    import fcntl

    fd = os.open(folder / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def clear_stale_work(root: Path) -> list[Path]:
    """Remove `.tmp-*` work folders left by killed saves, never a concurrent save's (its lock is held; a
    compile and a distillation of one program save side by side). Returns what was removed."""
    import fcntl
    import time

    removed = []
    for work in root.glob(".tmp-*"):
        try:
            fd = os.open(work / OWNER_LOCK, os.O_RDWR)
        except FileNotFoundError:  # just created, or about to be renamed: stale only when old
            try:
                old = time.time() - work.stat().st_mtime > STALE_UNLOCKED_S
            except FileNotFoundError:
                continue
            if old:
                shutil.rmtree(work, ignore_errors=True)
                removed.append(work)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its save is running
            os.close(fd)
            continue
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)
        removed.append(work)
    return removed


def read_manifest(program: str, version: int, s: Settings | None = None, verify: bool = True) -> Manifest:
    d = program_dir(program, s) / str(version)
    if not (d / MANIFEST_FILE).exists():
        have = versions(program, s)
        raise ArtifactError(
            f"{program}@{version} not found; versions: {', '.join(map(str, have)) or 'none (compile first)'}"
        )
    try:
        manifest = Manifest.model_validate_json((d / MANIFEST_FILE).read_text())
    except ValueError as exc:
        raise ArtifactError(f"{d / MANIFEST_FILE}: not a valid manifest ({str(exc).splitlines()[0]})") from None
    if verify:
        for name, digest in manifest.files.items():
            f = d / name
            if not f.exists():
                raise ArtifactError(f"{program}@{version}: {name} is missing")
            if sha256_file(f) != digest:
                raise ArtifactError(
                    f"{program}@{version}: {name} does not match its manifest hash (modified or corrupt)"
                )
    return manifest


def parse_ref(ref: str) -> tuple[str, str | None]:
    name, _, tag = ref.partition("@")
    return name, tag or None


@contextmanager
def state_file(module: dspy.Module) -> Iterator[Path]:
    """The module's DSPy state (JSON, never a pickle) in a temporary `program.json`, for `save`."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / PROGRAM_FILE
        module.save(str(path))
        yield path


def write_text_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))
