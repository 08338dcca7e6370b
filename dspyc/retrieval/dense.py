"""Dense retrieval: normalised MiniLM embeddings in Qdrant (local files by default, a server with `url`)."""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dspyc.errors import DspycError
from dspyc.retrieval.chunking import corpus_hash, index_text
from dspyc.retrieval.types import Hit, Passage, Retriever

log = logging.getLogger(__name__)

PROGRESS_BAR_FROM = 1000  # passages; below this a progress bar is noise
_PROBE = "dspyc embedding fingerprint probe"


class Embedder(Protocol):
    """The slice of SentenceTransformer we use (a fake with this method is enough in tests)."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


# Fast tokenizers raise "Already borrowed" when one is used from several threads at once (DSPy evaluates
# in threads); torch already uses every core per call, so serialising encodes costs nothing.
_ENCODE_LOCK = threading.RLock()


def encode(embedder: Embedder, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """float32 rows of unit length (cosine == dot product, whatever the embedder does itself)."""
    with _ENCODE_LOCK:
        vecs = embedder.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
        )
    vecs = np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1.0, norms)


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

    The collection is `<collection or "passages">-<corpus_hash>-<embedder fingerprint>`; when it already
    holds one point per passage nothing is re-embedded. Point ids are passage positions."""

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
        self.vectors_cache = Path(vectors_cache) if vectors_cache else None
        self.corpus_hash = corpus_hash(self.passages)
        self.collection = f"{collection or 'passages'}-{self.corpus_hash}-{embedder_fingerprint(embedder)}"
        self.client = qdrant_client(location, url)
        self._lock: AbstractContextManager[Any] = nullcontext() if url else _LOCAL_LOCK
        self._ensure_collection()

    def _ensure_collection(self) -> None:
        from qdrant_client import models

        c = self.client
        with self._lock:
            if c.collection_exists(self.collection):
                if c.count(self.collection, exact=True).count == len(self.passages):
                    return
                log.warning("Qdrant collection %s is incomplete; rebuilding it", self.collection)
                c.delete_collection(self.collection)
        # Embedding takes minutes on CPU: do it outside the lock so other retrievers can still search.
        vecs = self._embed_passages()
        with self._lock:
            if c.collection_exists(self.collection):  # another thread built it meanwhile
                if c.count(self.collection, exact=True).count == len(self.passages):
                    return
                c.delete_collection(self.collection)
            c.create_collection(
                self.collection, vectors_config=models.VectorParams(size=vecs.shape[1], distance=models.Distance.COSINE)
            )
            # The payload is for people browsing the collection; search maps ids back to `self.passages`.
            c.upload_collection(
                self.collection,
                vectors=vecs,
                payload=[{"pid": p.id, "title": p.title} for p in self.passages],
                ids=list(range(len(self.passages))),
                batch_size=256,
                wait=True,
            )

    def _embed_passages(self) -> np.ndarray:
        """Passage vectors, from `vectors_cache` when present (an in-memory Qdrant is then rebuilt in seconds)."""
        cached = self.vectors_cache / f"{self.collection}.npy" if self.vectors_cache else None
        if cached is not None and cached.exists():
            vecs = np.load(cached)
            if vecs.shape[0] == len(self.passages):
                return vecs
        vecs = encode(self.embedder, [index_text(p) for p in self.passages], batch_size=self.batch_size,
                      progress=len(self.passages) >= PROGRESS_BAR_FROM)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npy")
            np.save(tmp, vecs)
            os.replace(tmp, cached)
        return vecs

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries or k <= 0:
            return [[] for _ in queries]
        from qdrant_client import models

        vecs = encode(self.embedder, list(queries), batch_size=self.batch_size)
        requests = [models.QueryRequest(query=v.tolist(), limit=k, with_payload=False) for v in vecs]
        with self._lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[Hit(self.passages[int(pt.id)], float(pt.score)) for pt in r.points] for r in responses]
