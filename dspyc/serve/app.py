"""The program server: typed predict endpoints, an OpenAI-compatible chat endpoint, health, metrics.

Requests are admitted by a bounded limiter (`serve_max_concurrency` running, `serve_max_queue`
waiting, 503 beyond), run in a thread pool of the same size, and cut at `serve_timeout_s` (504). A run
slot is held until its thread really finishes, so the bound is real even when a client was answered
504. Program names and versions are checked against the registry before anything touches the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import hmac
import ipaddress
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import dspy
from dspy.utils.usage_tracker import UsageTracker
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dspyc.errors import DspycError
from dspyc.serve.io import (ChatChoice, ChatChoiceMessage, ChatCompletion, ChatCompletionRequest, ChatUsage, ModelCard,
                            ModelList, ProgramInfo, ProgramList, Usage, predict_response_model)
from dspyc.serve.pool import NAME_RE, TAG_RE, Loaded, NotLoaded, ProgramPool, UnknownProgram
from dspyc.serve.usage import Metrics, RequestLog, log_path
from dspyc.settings import Settings, get_settings

VERSION_HEADER = "X-Dspyc-Version"


OVERLOADED = "server_overloaded"  # the error type of a request refused because every run slot and queue place is taken


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_keys(s: Settings) -> list[str]:
    return [k.strip() for k in s.serve_api_keys.split(",") if k.strip()]


# --- limits --------------------------------------------------------------------------------------------

class BodyLimit:
    """Refuse bodies over `limit` bytes (413), whether or not the client sent a Content-Length."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await _too_large(send, self.limit)
        seen, too_big, answered = 0, False, False

        async def limited():
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # stop reading; whatever the app answers becomes a 413
                    too_big = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message):
            nonlocal answered
            if not too_big:
                return await send(message)
            if not answered:
                answered = True
                await _too_large(send, self.limit)

        await self.app(scope, limited, guarded)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"error": {"message": f"request body over {limit} bytes", "type": "request_too_large"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Limiter:
    """At most `running` runs at once and `queue` waiting; a request beyond both is refused at once."""

    def __init__(self, running: int, queue: int):
        self.running, self.queue = running, queue
        self.sem = asyncio.Semaphore(running)
        self.waiting = 0
        self.in_flight = 0

    async def acquire(self, timeout: float) -> None:
        if self.sem.locked() and self.waiting >= self.queue:
            raise ApiError(503, f"server saturated: {self.running} requests running and {self.queue} waiting; retry later",
                           OVERLOADED, {"Retry-After": "1"})
        self.waiting += 1
        try:
            await asyncio.wait_for(self.sem.acquire(), timeout)
        except TimeoutError:
            raise ApiError(503, "no run slot became free before the request timeout", OVERLOADED,
                           {"Retry-After": "1"}) from None
        finally:
            self.waiting -= 1
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self.sem.release()


# --- running a program ---------------------------------------------------------------------------------

def run_program(loaded: Loaded, inputs: dict[str, Any], s: Settings) -> tuple[dict[str, Any], Usage]:
    """One program call with its own usage tracker (tokens per request, not per process)."""
    tracker = UsageTracker()
    with dspy.context(lm=loaded.lm, adapter=loaded.adapter, usage_tracker=tracker, track_usage=True):
        pred = loaded.module(**inputs)
    prompt = completion = calls = 0
    for entries in tracker.usage_data.values():
        calls += len(entries)
        for e in entries:
            prompt += int(e.get("prompt_tokens") or 0)
            completion += int(e.get("completion_tokens") or 0)
    cost = (prompt * s.price_input_per_mtok + completion * s.price_output_per_mtok) / 1e6
    outputs = {k: pred.get(k) for k in loaded.io.outputs}
    return outputs, Usage(lm_calls=calls, prompt_tokens=prompt, completion_tokens=completion,
                          total_tokens=prompt + completion, estimated_cost_usd=round(cost, 8))


class Server:
    """State shared by the endpoints: pool, limiter, executor, log, metrics."""

    def __init__(self, s: Settings, pool: ProgramPool, log: RequestLog | None, metrics: Metrics):
        self.s, self.pool, self.log, self.metrics = s, pool, log, metrics
        self.keys = api_keys(s)
        self.executor = cf.ThreadPoolExecutor(s.serve_max_concurrency, thread_name_prefix="dspyc-run")
        self.limiter: Limiter | None = None  # made inside the event loop

    def key_id(self, key: str | None) -> str | None:
        return hashlib.sha256(key.encode()).hexdigest()[:8] if key else None

    async def execute(self, ref: str, raw_inputs: dict[str, Any], endpoint: str, key: str | None
                      ) -> tuple[Loaded, dict[str, Any], Usage, float, str]:
        """Admit, resolve, validate, run, record. Raises ApiError with the status to answer."""
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        name = ref.partition("@")[0]
        loaded: Loaded | None = None
        status, error, outputs, usage, kind = 200, None, None, Usage(), None
        acquired = False
        try:
            deadline = t0 + self.s.serve_timeout_s
            if self.limiter is None:  # an ASGI host that skips lifespan events
                self.limiter = Limiter(self.s.serve_max_concurrency, self.s.serve_max_queue)
            await self.limiter.acquire(self.s.serve_timeout_s)
            acquired = True
            loop = asyncio.get_running_loop()

            def work() -> tuple[Loaded, dict[str, Any], Usage]:
                lp = self.pool.get(ref)
                try:
                    inputs = lp.io.input_model.model_validate(raw_inputs).model_dump()
                except ValidationError as exc:
                    raise ApiError(422, f"inputs do not match {lp.name}@{lp.version}: {exc.errors()[0]['msg']} "
                                   f"at {'.'.join(map(str, exc.errors()[0]['loc']))}") from None
                return (lp, *run_program(lp, inputs, self.s))

            fut = loop.run_in_executor(self.executor, work)
            fut.add_done_callback(lambda _f: self.limiter.release())  # the slot frees when the thread does
            acquired = False
            self.metrics.in_flight.set(self.limiter.in_flight)
            try:
                loaded, outputs, usage = await asyncio.wait_for(asyncio.shield(fut), max(0.001, deadline - time.perf_counter()))
            except TimeoutError:
                fut.add_done_callback(lambda f: f.exception())  # retrieve, so nothing logs "never retrieved"
                raise ApiError(504, f"request exceeded the {self.s.serve_timeout_s:g}s timeout", "timeout") from None
            return loaded, outputs, usage, (time.perf_counter() - t0) * 1000, request_id
        except ApiError as exc:
            status, error, kind = exc.status, exc.message, exc.kind
            raise
        except UnknownProgram as exc:
            status, error = 404, str(exc)
            raise ApiError(404, str(exc), "not_found") from None
        except NotLoaded as exc:
            status, error, kind = 503, str(exc), "not_ready"
            raise ApiError(503, str(exc), "not_ready", {"Retry-After": "5"}) from None
        except DspycError as exc:
            status, error = 400, str(exc)
            raise ApiError(400, str(exc)) from None
        except Exception as exc:  # the program or its LM failed
            status, error = 502, f"{type(exc).__name__}: {str(exc)[:500]}"
            raise ApiError(502, f"program failed: {error}", "program_error") from None
        finally:
            if acquired:
                self.limiter.release()
            latency = (time.perf_counter() - t0) * 1000
            version = loaded.version if loaded else None
            self.metrics.in_flight.set(self.limiter.in_flight if self.limiter else 0)
            self.metrics.requests.labels(name, str(version), endpoint, str(status)).inc()
            if status in (503, 429) and loaded is None:
                self.metrics.rejected.labels("saturated" if kind == OVERLOADED else "not_ready").inc()
            if loaded is not None:
                self.metrics.latency.labels(name, endpoint).observe(latency / 1000)
                self.metrics.tokens.labels(name, str(version), "prompt").inc(usage.prompt_tokens)
                self.metrics.tokens.labels(name, str(version), "completion").inc(usage.completion_tokens)
                self.metrics.cost.labels(name, str(version)).inc(usage.estimated_cost_usd)
                self.metrics.lm_calls.labels(name, str(version)).inc(usage.lm_calls)
            if self.log is not None:
                self.log.write({"ts": time.time(), "request_id": request_id, "endpoint": endpoint, "ref": ref,
                                "program": name, "version": version, "status": status,
                                "latency_ms": round(latency, 2), "prompt_tokens": usage.prompt_tokens,
                                "completion_tokens": usage.completion_tokens, "lm_calls": usage.lm_calls,
                                "cost_usd": usage.estimated_cost_usd, "key_id": self.key_id(key),
                                "inputs": raw_inputs, "outputs": outputs, "error": error})


def _error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    # The OpenAI error shape, which the openai SDK turns into its exceptions with this message.
    return {"error": {"message": message, "type": kind, "code": status}}


# --- the app --------------------------------------------------------------------------------------------

def create_app(s: Settings | None = None, pool: ProgramPool | None = None, *, start_pool: bool = True,
               log: RequestLog | None = None, dev: bool = False) -> FastAPI:
    """The ASGI app. `pool` defaults to the artifact store's programs at `serve_alias`; typed routes are made
    for the programs loaded when the app is created (start the pool first for an exact schema)."""
    s = s or get_settings()
    metrics = Metrics()
    pool = pool or ProgramPool(s)
    prev_on_swap = pool._on_swap

    def on_swap(name: str, old: int | None, new: int) -> None:
        metrics.version.labels(name).set(new)
        if old is not None:
            metrics.swaps.labels(name).inc()
        if prev_on_swap:
            prev_on_swap(name, old, new)

    pool._on_swap = on_swap
    if start_pool and not pool.names:
        pool.start()
    for name in pool.names:
        if (cur := pool.current(name)) is not None:
            metrics.version.labels(name).set(cur.version)
    if log is None and s.serve_log != "none":
        log = RequestLog(log_path(s), s.serve_log)
    server = Server(s, pool, log, metrics)
    if not server.keys and not dev:
        raise DspycError("no API keys: set DSPYC_SERVE_API_KEYS, or pass --dev for keyless loopback-only development")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.limiter = Limiter(s.serve_max_concurrency, s.serve_max_queue)
        yield
        pool.stop()
        server.executor.shutdown(wait=False, cancel_futures=True)
        if server.log:
            server.log.close()

    app = FastAPI(title="dspyc program server", version="1", lifespan=lifespan,
                  description="Compiled DSPy programs served at their registry alias; OpenAI-compatible chat.")
    app.state.server = server
    app.add_middleware(BodyLimit, limit=s.serve_max_body_bytes)
    bearer = HTTPBearer(auto_error=False, description="an API key from DSPYC_SERVE_API_KEYS")

    async def auth(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
        if not server.keys:
            return None  # --dev on loopback, refused elsewhere at startup
        key = creds.credentials if creds else request.headers.get("x-api-key")
        if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in server.keys):
            raise ApiError(401, "missing or invalid API key", "authentication_error", {"WWW-Authenticate": "Bearer"})
        return key

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return JSONResponse(_error_body(exc.status, exc.message, exc.kind), exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse(_error_body(exc.status_code, str(exc.detail), "invalid_request_error"), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode(errors="replace")})
        first = errors[0] if errors else {}
        msg = f"{first.get('msg', 'invalid request')} at {'.'.join(map(str, first.get('loc', [])))}"
        return JSONResponse(_error_body(422, msg, "invalid_request_error") | {"detail": errors}, 422)

    # --- health ---------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "auth": "api-key" if server.keys else "none (loopback dev mode)"}

    @app.get("/readyz", tags=["health"], summary="Readiness: every program is loaded at its alias",
             responses={503: {"description": "not every program is loaded"}})
    async def readyz():
        programs = {n: {"version": (c.version if (c := pool.current(n)) else None), "error": pool.status(n).error}
                    for n in pool.names}
        ok = pool.ready
        return JSONResponse({"ready": ok, "alias": pool.alias, "programs": programs}, 200 if ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response,
             dependencies=[Depends(auth)])
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- programs ------------------------------------------------------------------------------

    def info(name: str) -> ProgramInfo:
        from dspyc import artifacts

        entry = pool.status(name)
        cur = entry.current
        try:
            have = artifacts.versions(name, s)
        except OSError:
            have = []
        return ProgramInfo(name=name, description=cur.description if cur else "", alias=pool.alias,
                           version=cur.version if cur else None, versions=have,
                           aliases={pool.alias: cur.version} if cur else {}, loaded=pool.loaded_versions(name),
                           swaps=entry.swaps, error=entry.error,
                           input_schema=cur.io.input_model.model_json_schema() if cur else {},
                           output_schema=cur.io.output_model.model_json_schema() if cur else {})

    @app.get("/v1/programs", tags=["programs"], response_model=ProgramList, dependencies=[Depends(auth)])
    async def list_programs() -> ProgramList:
        return ProgramList(data=[info(n) for n in pool.names])

    @app.get("/v1/programs/{name}", tags=["programs"], response_model=ProgramInfo, dependencies=[Depends(auth)],
             responses={404: {"description": "unknown program"}})
    async def get_program(name: str = Path(pattern=NAME_RE.pattern)) -> ProgramInfo:
        try:
            return info(name)
        except UnknownProgram as exc:
            raise ApiError(404, str(exc), "not_found") from None

    def add_predict_route(name: str, loaded: Loaded) -> None:
        input_model = loaded.io.input_model
        response_model = predict_response_model(name, loaded.io)

        async def predict(body: input_model, response: Response,  # type: ignore[valid-type]
                          version: str | None = Query(None, pattern=TAG_RE.pattern,
                                                      description="a version number or alias (default: the served alias)"),
                          key: str | None = Depends(auth)):
            ref = f"{name}@{version}" if version else name
            lp, outputs, usage, latency, rid = await server.execute(ref, body.model_dump(), "predict", key)
            response.headers[VERSION_HEADER] = f"{lp.name}@{lp.version}"
            return response_model(program=lp.name, version=lp.version, request_id=rid, latency_ms=round(latency, 2),
                                  usage=usage, outputs=outputs)

        predict.__annotations__["body"] = input_model  # a real class, not the string `from __future__` leaves
        app.add_api_route(f"/v1/programs/{name}/predict", predict, methods=["POST"], response_model=response_model,
                          tags=["programs"], summary=f"Run {name}", name=f"predict_{name}",
                          description=loaded.description or f"Run {name} at its served version.",
                          responses={404: {"description": "unknown version"}, 413: {"description": "body too large"},
                                     503: {"description": "saturated or not loaded"}, 504: {"description": "timeout"}})

    for name in pool.names:
        if (cur := pool.current(name)) is not None:
            add_predict_route(name, cur)

    @app.post("/v1/programs/{name}/predict", tags=["programs"], summary="Run a program not loaded at startup",
              responses={404: {"description": "unknown program"}, 503: {"description": "not loaded"}})
    async def predict_any(body: dict[str, Any], response: Response, name: str = Path(pattern=NAME_RE.pattern),
                          version: str | None = Query(None, pattern=TAG_RE.pattern), key: str | None = Depends(auth)):
        ref = f"{name}@{version}" if version else name
        lp, outputs, usage, latency, rid = await server.execute(ref, body, "predict", key)
        response.headers[VERSION_HEADER] = f"{lp.name}@{lp.version}"
        return {"program": lp.name, "version": lp.version, "request_id": rid, "latency_ms": round(latency, 2),
                "usage": usage.model_dump(), "outputs": jsonable_encoder(outputs)}

    # --- OpenAI-compatible ---------------------------------------------------------------------

    @app.get("/v1/models", tags=["openai"], response_model=ModelList, dependencies=[Depends(auth)])
    async def models() -> ModelList:
        from dspyc import artifacts

        cards = []
        for n in pool.names:
            cur = pool.current(n)
            cards.append(ModelCard(id=n, created=int(cur.loaded_at) if cur else 0))
            cards += [ModelCard(id=f"{n}@{v}") for v in artifacts.versions(n, s)]
        return ModelList(data=cards)

    @app.post("/v1/chat/completions", tags=["openai"], response_model=ChatCompletion,
              responses={404: {"description": "unknown program"}, 422: {"description": "no usable user message"}})
    async def chat(req: ChatCompletionRequest, response: Response, key: str | None = Depends(auth)):
        name, _, _tag = req.model.partition("@")
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise ApiError(422, "no user message: the program runs on the last user message")
        content = users[-1].content
        if isinstance(content, list):  # content parts: the text ones, joined
            content = "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
        content = content or ""
        if name not in pool.names:
            raise ApiError(404, f"unknown model {req.model[:80]!r}; GET /v1/models lists them", "not_found")
        cur = pool.current(name)  # a pinned version takes the same inputs as the served one, or says it does not
        inputs = _chat_inputs(content, cur.io.input_names if cur else None)
        lp, outputs, usage, latency, rid = await server.execute(req.model, inputs, "chat", key)
        as_json = (req.response_format or {}).get("type") in ("json_object", "json_schema")
        text = json.dumps(jsonable_encoder(outputs)) if as_json else _as_text(outputs.get(lp.io.primary_output))
        completion = ChatCompletion(
            id=f"chatcmpl-{rid}", created=int(time.time()), model=f"{lp.name}@{lp.version}",
            choices=[ChatChoice(message=ChatChoiceMessage(content=text))],
            usage=ChatUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                            total_tokens=usage.total_tokens),
            dspyc={"program": lp.name, "version": lp.version, "outputs": jsonable_encoder(outputs),
                   "latency_ms": round(latency, 2), "estimated_cost_usd": usage.estimated_cost_usd,
                   "lm_calls": usage.lm_calls})
        headers = {VERSION_HEADER: f"{lp.name}@{lp.version}"}
        if req.stream:
            return StreamingResponse(_sse(completion), media_type="text/event-stream", headers=headers)
        response.headers.update(headers)
        return completion

    return app


def _chat_inputs(content: str, input_names: list[str] | None) -> dict[str, Any]:
    """One input: the message is its value. Several: the message must be a JSON object of them."""
    if input_names is not None and len(input_names) == 1:
        return {input_names[0]: content}
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    if input_names is None:
        raise ApiError(422, "this program takes several inputs: send the last user message as a JSON object of them")
    raise ApiError(422, f"this program takes inputs {', '.join(input_names)}: send the last user message as a JSON object")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(jsonable_encoder(value))


async def _sse(completion: ChatCompletion):
    """Streaming, for clients that ask for it: the whole reply as one chunk (a program's outputs are structured
    and complete only at the end), then [DONE]."""
    base = {"id": completion.id, "object": "chat.completion.chunk", "created": completion.created, "model": completion.model}
    text = completion.choices[0].message.content
    yield f"data: {json.dumps(base | {'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': text}, 'finish_reason': None}]})}\n\n"
    yield f"data: {json.dumps(base | {'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}], 'usage': completion.usage.model_dump()})}\n\n"
    yield "data: [DONE]\n\n"
