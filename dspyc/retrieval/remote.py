"""Embeddings from a server: any OpenAI-compatible `/v1/embeddings` endpoint (vLLM serving an embedding model, HF TEI)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from dspyc.errors import DspycError, first_line

RETRY_AFTER_S = 0.5  # a refused or dropped connection is tried once more after this pause (a server restarting)


def api_base(url: str) -> str:
    """The `/v1` base of a server URL given with or without `/v1` (or with `/embeddings` pasted on)."""
    base = url.strip().rstrip("/").removesuffix("/embeddings").rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class RemoteEmbedder:
    """The `Embedder` protocol over HTTP: POST `{base}/embeddings` with `{"model", "input": [texts]}`.

    `url` is the server's base URL with or without `/v1`: `http://host:8000` and `http://host:8000/v1` both post to
    `http://host:8000/v1/embeddings`. `model` None: the first model the server lists at `/v1/models` (for TEI, which
    lists none, the `model_id` of its `/info`). Texts go `batch_size` to a request; a refused or dropped connection
    is retried once; every failure is a one-line `DspycError` naming the URL."""

    thread_safe = True  # no tokenizer in this process and httpx.Client is thread-safe: `dense.encode` needs no lock

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout: float = 60.0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.base_url = api_base(url)
        self.batch_size = batch_size
        self._model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self.base_url!r}, model={self._model!r})"

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self._listed_model()
        return self._model

    def encode(self, sentences: Sequence[str], **_: Any) -> np.ndarray:
        """float32 rows in input order. SentenceTransformer's keyword arguments (batch_size, normalize_embeddings,
        ...) are ignored: requests carry this embedder's `batch_size` and `dense.encode` normalises."""
        texts = list(sentences)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        parts = [self._embed(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        url = f"{self.base_url}/embeddings"
        reply = self._json(url, self._send("POST", url, json={"model": self.model, "input": texts}))
        try:
            rows = sorted(reply["data"], key=lambda row: row["index"])
            vecs = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
            order = [row["index"] for row in rows]
        except (KeyError, TypeError, ValueError) as e:
            raise DspycError(f"embedding server {url} sent a malformed reply: {first_line(e)}") from None
        if order != list(range(len(texts))) or vecs.ndim != 2:
            raise DspycError(
                f"embedding server {url} sent a malformed reply: {len(order)} embeddings for {len(texts)} inputs"
            )
        return vecs

    def _listed_model(self) -> str:
        url = f"{self.base_url}/models"
        response = self._send("GET", url)
        if response.status_code == 404:  # TEI has no /v1/models; its /info names the model it serves
            url = f"{self.base_url.removesuffix('/v1')}/info"
            response = self._send("GET", url)
        reply = self._json(url, response)
        try:
            return str(reply["model_id"] if url.endswith("/info") else reply["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise DspycError(f"embedding server {url} names no model; set DSPYC_EMBED_MODEL") from None

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        error: httpx.TransportError | None = None
        for attempt in range(2):
            try:
                return self._client.request(method, url, **kwargs)
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:  # refused or dropped: maybe restarting
                error = e
                if attempt == 0:
                    time.sleep(RETRY_AFTER_S)
            except httpx.TransportError as e:  # a timeout or a bad URL: trying again would not help
                error = e
                break
        raise DspycError(f"embedding server {url} is unreachable ({type(error).__name__}: {first_line(error)})")

    @staticmethod
    def _json(url: str, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise DspycError(
                f"embedding server {url} answered HTTP {response.status_code}: {_error_text(response)[:200]}"
            )
        try:
            return response.json()
        except ValueError:
            raise DspycError(f"embedding server {url} sent a malformed reply: not JSON") from None


def _error_text(response: httpx.Response) -> str:
    """The message of an error reply: OpenAI and vLLM send {"error": {"message"}}, TEI {"error": "..."}."""
    try:
        body = response.json()
    except ValueError:
        return first_line(response.text)
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message", error) if isinstance(error, dict) else error
    return first_line(message if isinstance(message, str) else json.dumps(message))
