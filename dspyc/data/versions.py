"""Dataset versions: the files a folder ships with, plus append-only additions, each step a content hash.

`dspyc data add wiki FILE` writes `datasets/wiki/additions/0001-questions.jsonl` (validated first, written
atomically); the dataset's version is then the hash of the base files and every addition in order, and
`wiki@<earlier hash>` still reads the data as it was. Nothing is ever rewritten in place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dspyc.errors import DataError

ADDITIONS = "additions"


@dataclass(frozen=True)
class DataVersion:
    version: str
    additions: tuple[Path, ...]  # addition files included, in order (empty: the base files only)


def _update(h: "hashlib._Hash", path: Path) -> None:
    h.update(path.name.encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def addition_files(folder: Path) -> list[Path]:
    d = folder / ADDITIONS
    return sorted(p for p in d.glob("[0-9][0-9][0-9][0-9]-*.jsonl")) if d.is_dir() else []


def history(folder: Path, base_files: list[Path]) -> list[DataVersion]:
    """Every version of the folder, oldest first; the last is current. Additions that share a number
    (e.g. `0002-questions.jsonl` and `0002-corpus.jsonl`) land together as one version."""
    h = hashlib.sha256()
    for p in base_files:
        _update(h, p)
    out = [DataVersion(h.hexdigest()[:16], ())]
    included: list[Path] = []
    by_number: dict[str, list[Path]] = {}
    for p in addition_files(folder):
        by_number.setdefault(p.name[:4], []).append(p)
    for _, files in sorted(by_number.items()):
        for p in files:
            _update(h, p)
            included.append(p)
        out.append(DataVersion(h.hexdigest()[:16], tuple(included)))
    return out


def select(folder: Path, base_files: list[Path], version: str | None) -> DataVersion:
    """The requested version (a hash or unique hash prefix), or the current one."""
    versions = history(folder, base_files)
    if version is None:
        return versions[-1]
    found = [v for v in versions if v.version.startswith(version)]
    if len(found) != 1:
        known = ", ".join(v.version for v in versions)
        raise DataError(f"{folder.name}@{version}: {'ambiguous' if found else 'no such'} version; versions: {known}")
    return found[0]


def add(folder: Path, contents: dict[str, str]) -> list[Path]:
    """Write one new version's addition files (kind -> JSONL text), all or nothing."""
    d = folder / ADDITIONS
    d.mkdir(parents=True, exist_ok=True)
    number = f"{len({p.name[:4] for p in addition_files(folder)}) + 1:04d}"
    staged = []
    try:
        for kind, text in contents.items():
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".jsonl")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            staged.append((Path(tmp), d / f"{number}-{kind}.jsonl"))
        # Renames are atomic one by one; the version is only complete when all are in, so write
        # the questions (which define the version's rows) last.
        staged.sort(key=lambda pair: pair[1].name.endswith("questions.jsonl"))
        for tmp, dest in staged:
            if dest.exists():
                raise DataError(f"{dest} already exists (another `data add` at the same time?)")
            os.rename(tmp, dest)
        return [dest for _, dest in staged]
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
