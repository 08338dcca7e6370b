"""Dense retrieval: normalised MiniLM embeddings in Qdrant (local files by default, a server with `url`)."""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dspyc.errors import DspycError
from dspyc.retrieval.chunking import corpus_hash, index_text
from dspyc.retrieval.types import Hit, Passage, Retriever
from dspyc.retrieval.vector_files import VectorFiles, text_keys

log = logging.getLogger(__name__)

PROGRESS_BAR_FROM = 1000  # passages; below this a progress bar is noise
INDEX_STEP = 1024  # passages embedded and stored at a time: a killed index build loses at most one step
# Above this many passages an in-memory store is an exact float32 matrix, not Qdrant's local mode: local mode warns
# above 20k points, and its search casts every vector to float64 per query (73 ms at 64k vectors; the matrix: ~6 ms).
EXACT_FROM = 20_000
_PROBE = "dspyc embedding fingerprint probe"


class Embedder(Protocol):
    """The slice of SentenceTransformer we use (a fake with this method is enough in tests; `RemoteEmbedder` is one
    over HTTP). An embedder with `thread_safe = True` is called without the encode lock."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


# Fast tokenizers raise "Already borrowed" when one is used from several threads at once (DSPy evaluates
# in threads); torch already uses every core per call, so serialising encodes costs nothing.
_ENCODE_LOCK = threading.RLock()


def encode(embedder: Embedder, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """float32 rows of unit length (cosine == dot product, whatever the embedder does itself)."""
    with nullcontext() if getattr(embedder, "thread_safe", False) else _ENCODE_LOCK:
        vecs = embedder.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=progress,
            convert_to_numpy=True,
        )
    vecs = np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1.0, norms)


def _steps(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _progress(total: int) -> AbstractContextManager[Any]:
    """A progress bar on stderr for a long embedding run (None below PROGRESS_BAR_FROM passages)."""
    if total < PROGRESS_BAR_FROM:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dspyc.console import console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    )


def embedder_fingerprint(embedder: Embedder) -> str:
    """A short id of the embedding function itself, so two models never share a collection.

    For a torch model: its architecture and a strided sample of every weight tensor (exact, and the same
    on CPU and GPU, unlike embedding outputs). Otherwise: the rounded embedding of a fixed probe text."""
    h = hashlib.sha256()
    named_parameters = getattr(embedder, "named_parameters", None)
    params = list(named_parameters()) if callable(named_parameters) else []
    if params:
        h.update(repr(embedder).encode())  # pooling, normalisation, max length
        for name, p in params:
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(p.detach().reshape(-1)[::997].float().cpu().numpy().tobytes())
    else:
        probe = encode(embedder, [_PROBE])[0]
        h.update(np.round(probe, 3).tobytes() + str(probe.shape).encode())
    return h.hexdigest()[:8]


# Qdrant local mode locks its folder: a second client on the same path, even in this process, is refused.
_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()
# Local mode is plain Python over SQLite, not built for concurrent callers: one caller at a time.
_LOCAL_LOCK = threading.RLock()


def qdrant_client(location: str | None = None, url: str | None = None) -> Any:
    """One shared client per server url or local folder (`":memory:"` gives a private in-memory store)."""
    from qdrant_client import QdrantClient

    if url:
        key = f"url:{url}"
    elif location == ":memory:":
        return QdrantClient(location=":memory:")
    else:
        if location is None:
            from dspyc.settings import get_settings

            location = str(get_settings().cache_dir / "qdrant")
        key = f"path:{Path(location).resolve()}"
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            if url:
                _CLIENTS[key] = QdrantClient(url=url)
            else:
                Path(location).mkdir(parents=True, exist_ok=True)
                try:
                    # Any thread may use the shared client (calls are serialised by _LOCAL_LOCK).
                    _CLIENTS[key] = QdrantClient(path=str(location), force_disable_check_same_thread=True)
                except RuntimeError as e:
                    if "already accessed" not in str(e):
                        raise
                    raise DspycError(
                        f"Qdrant folder {location} is in use by another process; set DSPYC_QDRANT_URL to a Qdrant "
                        "server or use another cache dir"
                    ) from None
        return _CLIENTS[key]


@atexit.register
def _close_clients() -> None:
    # Closing at exit, while imports still work, avoids qdrant-client's noisy failure in __del__ at shutdown.
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            try:
                client.close()
            except Exception:  # exiting anyway; nothing useful to do with it
                pass
        _CLIENTS.clear()


class DenseRetriever(Retriever):
    """Cosine search over passage embeddings stored in a Qdrant collection named by corpus and model.

    The collection is `<collection or "passages">-<corpus_hash>-<embedder fingerprint>`; point ids are passage
    positions. It is filled `index_step` passages at a time with only the passages it lacks, so a complete one costs
    no embedding and a killed build resumes. With `vectors_cache` the vectors are also kept on disk by text
    (`VectorFiles`): an in-memory Qdrant is rebuilt without embedding, and a grown corpus embeds only its new text."""

    def __init__(
        self,
        passages: Sequence[Passage],
        embedder: Embedder | None = None,
        location: str | None = None,
        url: str | None = None,
        collection: str | None = None,
        name: str = "dense",
        batch_size: int = 64,
        vectors_cache: Path | None = None,
        index_step: int = INDEX_STEP,
    ):
        if not passages:
            raise ValueError("DenseRetriever needs at least one passage")
        if embedder is None:
            from dspyc.retrieval.embeddings import load_embedder

            embedder = load_embedder()
        self.name = name
        self.passages = list(passages)
        self.embedder = embedder
        self.batch_size = batch_size
        self.index_step = index_step
        self.vectors_cache = Path(vectors_cache) if vectors_cache else None
        self.corpus_hash = corpus_hash(self.passages)
        self.collection = f"{collection or 'passages'}-{self.corpus_hash}-{embedder_fingerprint(embedder)}"
        self._lock: AbstractContextManager[Any] = nullcontext() if url else _LOCAL_LOCK
        self.matrix: np.ndarray | None = None  # the exact in-memory store (EXACT_FROM), else Qdrant holds the vectors
        self._tensor: Any = None  # the matrix as a torch tensor (shares its memory), made on first search
        if not url and location == ":memory:" and len(self.passages) > EXACT_FROM:
            self.client = None
            self.matrix = self._exact_matrix()
            return
        self.client = qdrant_client(location, url)
        self._ensure_collection()

    @property
    def dimension(self) -> int:
        """The vectors' size (384 for MiniLM)."""
        if self.matrix is not None:
            return self.matrix.shape[1]
        return self.client.get_collection(self.collection).config.params.vectors.size

    def _exact_matrix(self) -> np.ndarray:
        """Every passage's unit vector, row i for passage i (from the vector cache, else embedded step by step)."""
        matrix: np.ndarray | None = None
        for ids, vecs in self._vectors(list(range(len(self.passages)))):
            if matrix is None:
                matrix = np.empty((len(self.passages), vecs.shape[1]), dtype=np.float32)
            matrix[ids] = vecs
        return matrix

    def _ensure_collection(self) -> None:
        """Add the passages the collection lacks, a step at a time (embedding runs outside the lock, so other
        retrievers can still search)."""
        with self._lock:
            present = self._present_ids()
        missing = [i for i in range(len(self.passages)) if i not in present]
        if not missing:
            return
        if present:
            log.info(
                "Qdrant collection %s holds %d of %d passages; adding the rest",
                self.collection,
                len(present),
                len(self.passages),
            )
        for ids, vecs in self._vectors(missing):
            with self._lock:
                self._upsert(ids, vecs)

    def _present_ids(self) -> set[int]:
        c = self.client
        if not c.collection_exists(self.collection):
            return set()
        if c.count(self.collection, exact=True).count == len(self.passages):
            return set(range(len(self.passages)))
        ids: set[int] = set()
        offset = None
        while True:
            points, offset = c.scroll(
                self.collection, limit=10_000, offset=offset, with_payload=False, with_vectors=False
            )
            ids.update(int(p.id) for p in points)
            if offset is None:
                return ids

    def _upsert(self, ids: list[int], vecs: np.ndarray) -> None:
        from qdrant_client import models

        c = self.client
        if not c.collection_exists(self.collection):
            c.create_collection(
                self.collection, vectors_config=models.VectorParams(size=vecs.shape[1], distance=models.Distance.COSINE)
            )
        # The payload is for people browsing the collection; search maps ids back to `self.passages`.
        c.upload_collection(
            self.collection,
            vectors=vecs,
            ids=ids,
            batch_size=256,
            wait=True,
            payload=[{"pid": self.passages[i].id, "title": self.passages[i].title} for i in ids],
        )

    def _vectors(self, ids: list[int]) -> Iterator[tuple[list[int], np.ndarray]]:
        """(ids, vectors) a step at a time for the passages at `ids`: from `vectors_cache` where it has them, else
        embedded (and saved there first, so a killed run keeps its finished steps)."""
        files = VectorFiles(self.vectors_cache, self.collection) if self.vectors_cache else None
        finished = files.finished(len(self.passages)) if files else None
        if finished is not None:  # an in-memory Qdrant is rebuilt in seconds
            yield from ((step, np.asarray(finished[step])) for step in _steps(ids, self.index_step))
            return
        keys = text_keys([index_text(self.passages[i]) for i in ids])
        whole = files is not None and len(ids) == len(self.passages)  # then save the collection's vectors as one file
        done: list[tuple[np.ndarray, np.ndarray]] = []
        for rows, vecs in self._stored_then_embedded(ids, keys, files):
            if whole:
                done.append((rows, vecs))
            yield [ids[r] for r in rows], vecs
        if whole and files is not None:
            out = np.empty((len(ids), done[0][1].shape[1]), dtype=np.float32)
            for rows, vecs in done:
                out[rows] = vecs
            files.save_finished(keys, out)

    def _stored_then_embedded(self, ids: list[int], keys: np.ndarray, files: VectorFiles | None):
        """(rows of `ids`, vectors) a step at a time: those `files` hold, then the others embedded (each step saved)."""
        stored, found = files.lookup(keys) if files else (None, np.zeros(len(ids), dtype=bool))
        if stored is not None:
            log.info("%s: %d of %d passage vectors found on disk", self.collection, int(found.sum()), len(ids))
            for rows in _steps(np.flatnonzero(found), self.index_step):
                yield rows, stored[rows]
        todo = np.flatnonzero(~found)
        with _progress(len(todo)) as bar:
            task = bar.add_task("embedding passages", total=len(todo)) if bar else None
            for rows in _steps(todo, self.index_step):
                vecs = encode(
                    self.embedder, [index_text(self.passages[ids[r]]) for r in rows], batch_size=self.batch_size
                )
                if files:
                    files.save_step(keys[rows], vecs)
                if bar:
                    bar.advance(task, len(rows))
                yield rows, vecs

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries or k <= 0:
            return [[] for _ in queries]
        vecs = encode(self.embedder, list(queries), batch_size=self.batch_size)
        if self.matrix is not None:
            return [self._exact(v, k) for v in vecs]
        from qdrant_client import models

        requests = [models.QueryRequest(query=v.tolist(), limit=k, with_payload=False) for v in vecs]
        with self._lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[Hit(self.passages[int(pt.id)], float(pt.score)) for pt in r.points] for r in responses]

    def _exact(self, query: np.ndarray, k: int) -> list[Hit]:
        """The top `k` by cosine (rows and query are unit vectors), best first. In torch, whose threads the query
        encoder uses too: numpy's BLAS threads spin after a product and slowed the next encode ~2x."""
        import torch

        if self._tensor is None:
            self._tensor = torch.from_numpy(self.matrix)
        scores = self._tensor @ torch.from_numpy(query)
        top = torch.topk(scores, min(k, len(self.passages)))
        return [Hit(self.passages[int(i)], float(v)) for v, i in zip(top.values, top.indices)]
