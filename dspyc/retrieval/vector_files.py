"""Passage vectors on disk, keyed by the text embedded, so no text is embedded twice by the same embedder.

For a collection `<name>-<corpus hash>-<fingerprint>` the folder holds `<collection>.npy` (the vectors, one row per
passage position; what older dspyc wrote), `<collection>.keys.npy` (the text key of each row) and, while it is being
built, `<collection>.parts/*.npz` (one file per embedded step: a killed run keeps them). Any file of the same
fingerprint (the same embedding function) can supply a vector by its key: a corpus that grew embeds only its new text."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """128-bit hex digests of the texts (ASCII, so numpy's fixed-width bytes never strip a trailing NUL)."""
    return np.array([hashlib.sha256(t.encode()).hexdigest()[:32] for t in texts], dtype="S32")


def _save(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # writers never share one
    with tmp.open("wb") as f:
        write(f)
    os.replace(tmp, path)  # readers see a whole file or none


class VectorFiles:
    def __init__(self, folder: Path, collection: str):
        self.folder = Path(folder)
        self.collection = collection
        self.fingerprint = collection.rsplit("-", 1)[-1]
        self.snapshot = self.folder / f"{collection}.npy"
        self.keys = self.folder / f"{collection}.keys.npy"
        self.parts = self.folder / f"{collection}.parts"

    def finished(self, n: int) -> np.ndarray | None:
        """This collection's vectors when a finished build left all `n` of them (memory-mapped)."""
        if not self.snapshot.exists():
            return None
        vecs = np.load(self.snapshot, mmap_mode="r")
        return vecs if vecs.shape[0] == n else None

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(vectors, found): for each key, its vector from any file of this fingerprint; vectors is None if none is."""
        wanted, inverse = np.unique(keys, return_inverse=True)
        vecs: np.ndarray | None = None
        found = np.zeros(len(wanted), dtype=bool)
        for donor_keys, donor_vecs in self._donors():
            rows = np.flatnonzero(np.isin(donor_keys, wanted))
            if rows.size == 0:
                continue
            if vecs is None:
                vecs = np.zeros((len(wanted), donor_vecs.shape[1]), dtype=np.float32)
            at = np.searchsorted(wanted, donor_keys[rows])
            vecs[at], found[at] = donor_vecs[rows], True
        return (None if vecs is None else vecs[inverse]), found[inverse]

    def _donors(self):
        """(keys, vectors) of every finished collection and every saved step with this fingerprint."""
        for keys_path in sorted(self.folder.glob(f"*-{self.fingerprint}.keys.npy")):
            vecs_path = keys_path.with_name(keys_path.name.removesuffix(".keys.npy") + ".npy")
            if vecs_path.exists():
                keys, vecs = np.load(keys_path), np.load(vecs_path, mmap_mode="r")
                if len(keys) == vecs.shape[0]:
                    yield keys, vecs
        for part in sorted(self.folder.glob(f"*-{self.fingerprint}.parts/*.npz")):
            with np.load(part) as data:
                yield data["keys"], data["vecs"]

    def save_step(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """One embedded step, kept until the collection's vectors are saved whole."""
        self.parts.mkdir(parents=True, exist_ok=True)
        _save(self.parts / f"{keys[0].decode()}-{len(keys)}.npz", lambda f: np.savez(f, keys=keys, vecs=vecs))

    def save_finished(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """Every vector of the collection, by passage position; its steps are then redundant."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _save(self.snapshot, lambda f: np.save(f, vecs))
        _save(self.keys, lambda f: np.save(f, keys))
        shutil.rmtree(self.parts, ignore_errors=True)
