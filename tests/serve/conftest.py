"""Fixtures for the program server: an in-process stub upstream (OpenAI-compatible, instant) and a pool whose
programs are plain DSPy modules over it, with an alias the test moves."""

from __future__ import annotations

import socket
import threading
import time

import dspy
import pytest
import uvicorn

from dspyc.adapter import ConstrainedJSONAdapter
from dspyc.serve.io import program_io
from dspyc.serve.pool import Loaded, ProgramPool
from dspyc.serve.stub import StubApp
from dspyc.settings import Settings


class QA(dspy.Signature):
    """Answer the question in a few words."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    confidence: float = dspy.OutputField()


class QAv2(dspy.Signature):
    """Answer the question in a few words, carefully."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    confidence: float = dspy.OutputField()


class Pair(dspy.Signature):
    """Compare two things."""

    left: str = dspy.InputField()
    right: str = dspy.InputField()
    verdict: bool = dspy.OutputField()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    def __init__(self, app, port: int):
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve_live():
    """Run an ASGI app on a free loopback port for the test: `with serve_live(app) as srv: srv.url`."""
    return lambda app: ThreadServer(app, free_port())


@pytest.fixture(scope="session")
def stub():
    app = StubApp()
    with ThreadServer(app, free_port()) as srv:
        srv.app = app
        yield srv


class FakeStore:
    """Versions of two programs over the stub; `alias` is what the registry alias points at."""

    def __init__(self, stub_url: str, slow_s: float = 0.0):
        self.stub_url = stub_url
        self.alias = {"qa": 1, "pair": 1}
        self.loads: list[tuple[str, int]] = []
        self.slow_s = slow_s
        self.sigs = {("qa", 1): QA, ("qa", 2): QAv2, ("pair", 1): Pair}

    def catalog(self, s: Settings) -> list[str]:
        return ["qa", "pair"]

    def resolver(self, name: str, tag: str, s: Settings) -> int:
        from dspyc.errors import ArtifactError

        if tag.isdigit():
            return int(tag)
        if tag != s.serve_alias:
            raise ArtifactError(f"{name}@{tag}: no such alias")
        return self.alias[name]

    def loader(self, name: str, version: int, s: Settings) -> Loaded:
        from dspyc.errors import ArtifactError

        if (name, version) not in self.sigs:
            raise ArtifactError(f"{name}@{version} not found")
        self.loads.append((name, version))
        module = SlowPredict(self.sigs[(name, version)], self.slow_s)
        lm = dspy.LM("openai/stub-upstream", api_base=f"{self.stub_url}/v1", api_key="x", cache=False, num_retries=0)
        return Loaded(
            name=name,
            version=version,
            module=module,
            lm=lm,
            adapter=ConstrainedJSONAdapter(),
            io=program_io(name, module, max_chars=s.serve_max_input_chars),
            description=f"test program {name}",
        )


class SlowPredict(dspy.Module):
    def __init__(self, signature, slow_s: float = 0.0):
        super().__init__()
        self.predict = dspy.Predict(signature)
        self.slow_s = slow_s

    def forward(self, **kwargs):
        if self.slow_s:
            time.sleep(self.slow_s)
        return self.predict(**kwargs)


@pytest.fixture
def serve_settings(tmp_path):
    return Settings(
        artifacts_root=tmp_path / "artifacts",
        serve_api_keys="k1,k2",
        serve_poll_s=0,
        serve_log_path=tmp_path / "requests.jsonl",
    )


@pytest.fixture
def store(stub):
    return FakeStore(stub.url)


def make_client(s: Settings, store: FakeStore, dev: bool = False):
    from fastapi.testclient import TestClient

    from dspyc.serve.app import create_app

    pool = ProgramPool(s, loader=store.loader, resolver=store.resolver, catalog=store.catalog)
    pool.start(poll=s.serve_poll_s > 0)
    app = create_app(s, pool, dev=dev)
    return TestClient(app), pool


@pytest.fixture
def client(serve_settings, store):
    c, pool = make_client(serve_settings, store)
    with c:
        c.headers["Authorization"] = "Bearer k1"
        yield c


@pytest.fixture
def make():
    """make(settings, store, dev=False) -> (TestClient, pool)."""
    return make_client


@pytest.fixture
def fake_store():
    return FakeStore
