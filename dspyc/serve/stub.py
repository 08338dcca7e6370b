"""A minimal OpenAI-compatible upstream that answers instantly: the load generator's backend.

NOT an LM. It exists to measure the program server's own overhead at rates the CPU vLLM engine cannot
reach (~8 tok/s here): it returns the smallest JSON the request's `response_format` schema allows, with
made-up token counts, after an optional fixed delay. It records request bodies so a benchmark can send
the very same prompts to it directly. `--proxy URL` forwards to a real server instead (and still records).

    python -m dspyc.serve.stub --port 8600 [--latency-ms 0] [--proxy http://127.0.0.1:8400/v1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

STUB_MODEL = "stub-upstream"


def instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """The smallest value that validates against a (DSPy-generated) JSON schema."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return instance(schema[key][0], defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: instance(v, defs) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "ok" + "k" * max(0, schema.get("minLength", 0) - 2)
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return None


def reply_for(body: dict[str, Any]) -> dict[str, Any]:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        content = json.dumps(instance(fmt["json_schema"]["schema"]), separators=(",", ":"))
    elif fmt.get("type") == "json_object":
        content = "{}"
    else:
        content = "ok"
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    usage = {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": max(1, len(content) // 4)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": "stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", STUB_MODEL),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    }


class StubApp:
    """A raw ASGI app (no framework: the stub must cost as little as possible)."""

    def __init__(self, latency_ms: float = 0.0, proxy: str | None = None, api_key: str = "dspyc-local"):
        self.latency = latency_ms / 1000
        self.proxy, self.api_key = proxy, api_key
        self.recorded: list[dict[str, Any]] = []
        self.recording = True
        self._client = None

    async def _send(self, send, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"].removeprefix("/v1"), scope["method"]
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if path in ("/health", "/healthz"):
            return await self._send(send, 200, {"status": "ok"})
        if path == "/models" and self.proxy:
            import httpx

            r = httpx.get(f"{self.proxy}/models", headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30)
            return await self._send(send, r.status_code, r.json())
        if path == "/models":
            return await self._send(send, 200, {"object": "list", "data": [{"id": STUB_MODEL, "object": "model"}]})
        if path == "/_recorded" and method == "GET":
            return await self._send(send, 200, self.recorded)
        if path == "/_recorded" and method == "DELETE":
            self.recorded.clear()
            return await self._send(send, 200, {})
        if path == "/_recording" and method == "POST":
            self.recording = json.loads(raw or b"true")
            return await self._send(send, 200, {"recording": self.recording})
        if path != "/chat/completions" or method != "POST":
            return await self._send(send, 404, {"error": {"message": f"no route {method} {path}"}})
        body = json.loads(raw)
        if self.recording:
            self.recorded.append(body)
        if self.proxy:
            import httpx

            self._client = self._client or httpx.AsyncClient(timeout=600)
            r = await self._client.post(
                f"{self.proxy}/chat/completions", json=body, headers={"Authorization": f"Bearer {self.api_key}"}
            )
            return await self._send(send, r.status_code, r.json())
        if self.latency:
            await asyncio.sleep(self.latency)
        return await self._send(send, 200, reply_for(body))


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8600)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--proxy", default=None)
    a = p.parse_args()
    uvicorn.run(
        StubApp(a.latency_ms, a.proxy), host=a.host, port=a.port, log_level="warning", access_log=False, backlog=2048
    )


if __name__ == "__main__":
    main()
