"""The official `openai` client, unchanged, against the live server (uvicorn on loopback, stub upstream)."""

from __future__ import annotations

import openai
import pytest

from dspyc.serve.app import create_app
from dspyc.serve.pool import ProgramPool


@pytest.fixture
def live(serve_settings, store, serve_live):
    pool = ProgramPool(serve_settings, loader=store.loader, resolver=store.resolver, catalog=store.catalog)
    pool.start(poll=False)
    with serve_live(create_app(serve_settings, pool)) as srv:
        yield srv


def test_openai_client_works_unchanged(live):
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="k1")
    assert {"qa", "pair"} <= {m.id for m in client.models.list()}
    reply = client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "Capital of France?"}])
    assert reply.choices[0].message.content == "ok" and reply.model == "qa@1"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    pinned = client.chat.completions.create(model="qa@2", messages=[{"role": "user", "content": "q"}])
    assert pinned.model == "qa@2"
    chunks = list(client.chat.completions.create(model="qa", stream=True, messages=[{"role": "user", "content": "q"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok"


def test_openai_client_sees_errors(live):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong").models.list()
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="k1", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
