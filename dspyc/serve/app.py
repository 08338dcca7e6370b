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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import dspy
from dspy.utils.usage_tracker import UsageTracker
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dspyc.errors import DspycError
from dspyc.serve.io import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatUsage,
    ModelCard,
    ModelList,
    ProgramInfo,
    ProgramList,
    Usage,
    predict_response_model,
)
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
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
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
            raise ApiError(
                503,
                f"server saturated: {self.running} requests running and {self.queue} waiting; retry later",
                OVERLOADED,
                {"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self.sem.acquire(), timeout)
        except TimeoutError:
            raise ApiError(
                503, "no run slot became free before the request timeout", OVERLOADED, {"Retry-After": "1"}
            ) from None
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
    return outputs, Usage(
        lm_calls=calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        estimated_cost_usd=round(cost, 8),
    )


class Run(NamedTuple):
    """One answered request: the version that ran it, what it returned, what it cost."""

    loaded: Loaded
    outputs: dict[str, Any]
    usage: Usage
    latency_ms: float
    request_id: str

    @property
    def ref(self) -> str:
        """`name@version` of the program that answered, for the version header and the chat `model`."""
        return f"{self.loaded.name}@{self.loaded.version}"


class Server:
    """State shared by the endpoints: pool, limiter, executor, log, metrics."""

    def __init__(self, s: Settings, pool: ProgramPool, log: RequestLog | None, metrics: Metrics):
        self.s, self.pool, self.log, self.metrics = s, pool, log, metrics
        self.keys = api_keys(s)
        self.executor = cf.ThreadPoolExecutor(s.serve_max_concurrency, thread_name_prefix="dspyc-run")
        self.limiter: Limiter | None = None  # made inside the event loop

    def start(self) -> None:
        """Make the limiter from inside the event loop that serves requests, as its semaphore is used there."""
        self.limiter = Limiter(self.s.serve_max_concurrency, self.s.serve_max_queue)

    def close(self) -> None:
        """Stop polling, drop queued runs (running ones finish on their own), and flush the log to disk."""
        self.pool.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.log:
            self.log.close()

    def key_id(self, key: str | None) -> str | None:
        return hashlib.sha256(key.encode()).hexdigest()[:8] if key else None

    async def execute(self, ref: str, raw_inputs: dict[str, Any], endpoint: str, key: str | None) -> Run:
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
                self.start()
            await self.limiter.acquire(self.s.serve_timeout_s)
            acquired = True
            loop = asyncio.get_running_loop()

            def work() -> tuple[Loaded, dict[str, Any], Usage]:
                lp = self.pool.get(ref)
                try:
                    inputs = lp.io.input_model.model_validate(raw_inputs).model_dump()
                except ValidationError as exc:
                    raise ApiError(
                        422,
                        f"inputs do not match {lp.name}@{lp.version}: {exc.errors()[0]['msg']} "
                        f"at {'.'.join(map(str, exc.errors()[0]['loc']))}",
                    ) from None
                return (lp, *run_program(lp, inputs, self.s))

            fut = loop.run_in_executor(self.executor, work)
            fut.add_done_callback(lambda _f: self.limiter.release())  # the slot frees when the thread does
            acquired = False
            self.metrics.in_flight.set(self.limiter.in_flight)
            try:
                loaded, outputs, usage = await asyncio.wait_for(
                    asyncio.shield(fut), max(0.001, deadline - time.perf_counter())
                )
            except TimeoutError:
                fut.add_done_callback(lambda f: f.exception())  # retrieve, so nothing logs "never retrieved"
                raise ApiError(504, f"request exceeded the {self.s.serve_timeout_s:g}s timeout", "timeout") from None
            return Run(loaded, outputs, usage, (time.perf_counter() - t0) * 1000, request_id)
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
                self.log.write(
                    {
                        "ts": time.time(),
                        "request_id": request_id,
                        "endpoint": endpoint,
                        "ref": ref,
                        "program": name,
                        "version": version,
                        "status": status,
                        "latency_ms": round(latency, 2),
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "lm_calls": usage.lm_calls,
                        "cost_usd": usage.estimated_cost_usd,
                        "key_id": self.key_id(key),
                        "inputs": raw_inputs,
                        "outputs": outputs,
                        "error": error,
                    }
                )


def _served(pool: ProgramPool) -> dict[str, Loaded]:
    """The programs the pool has loaded at its alias; one that failed to load is left out."""
    return {name: cur for name in pool.names if (cur := pool.current(name)) is not None}


# --- requests: state, auth, errors ----------------------------------------------------------------------
#
# The handlers are shared by every app made here; each finds its own app's `Server` through the request.

_bearer = HTTPBearer(auto_error=False, description="an API key from DSPYC_SERVE_API_KEYS")


def server_of(request: Request) -> Server:
    """The `Server` of the app answering this request."""
    return request.app.state.server


async def authenticate(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str | None:
    """The caller's API key, as a bearer token or an X-Api-Key header; compared in constant time."""
    keys = server_of(request).keys
    if not keys:
        return None  # --dev on loopback, refused elsewhere at startup
    key = creds.credentials if creds else request.headers.get("x-api-key")
    if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise ApiError(401, "missing or invalid API key", "authentication_error", {"WWW-Authenticate": "Bearer"})
    return key


def _error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    # The OpenAI error shape, which the openai SDK turns into its exceptions with this message.
    return {"error": {"message": message, "type": kind, "code": status}}


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(_error_body(exc.status, exc.message, exc.kind), exc.status, headers=exc.headers)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (404 route, 405 method) in the same OpenAI shape as ours."""
    return JSONResponse(
        _error_body(exc.status_code, str(exc.detail), "invalid_request_error"),
        exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 whose message names the first bad field, for SDKs that show only `error.message`; the full list
    stays in `detail`, where FastAPI clients look for it."""
    errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode(errors="replace")})
    first = errors[0] if errors else {}
    msg = f"{first.get('msg', 'invalid request')} at {'.'.join(map(str, first.get('loc', [])))}"
    return JSONResponse(_error_body(422, msg, "invalid_request_error") | {"detail": errors}, 422)


# --- routes ---------------------------------------------------------------------------------------------
#
# Route handlers carry no docstrings: FastAPI would publish them as the OpenAPI operation descriptions.
# `_add_routes` registers them with their paths and OpenAPI metadata.


async def healthz(server: Server = Depends(server_of)) -> dict[str, str]:
    return {"status": "ok", "auth": "api-key" if server.keys else "none (loopback dev mode)"}


async def readyz(server: Server = Depends(server_of)) -> JSONResponse:
    pool = server.pool
    programs = {
        n: {"version": (c.version if (c := pool.current(n)) else None), "error": pool.status(n).error}
        for n in pool.names
    }
    ok = pool.ready
    return JSONResponse({"ready": ok, "alias": pool.alias, "programs": programs}, 200 if ok else 503)


async def prometheus(server: Server = Depends(server_of)) -> Response:
    return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _program_info(server: Server, name: str) -> ProgramInfo:
    """What `/v1/programs` says of one program; its stored versions are best effort (the store may be away)."""
    from dspyc import artifacts

    pool = server.pool
    entry = pool.status(name)
    cur = entry.current
    try:
        have = artifacts.versions(name, server.s)
    except OSError:
        have = []
    return ProgramInfo(
        name=name,
        description=cur.description if cur else "",
        alias=pool.alias,
        version=cur.version if cur else None,
        versions=have,
        aliases={pool.alias: cur.version} if cur else {},
        loaded=pool.loaded_versions(name),
        swaps=entry.swaps,
        error=entry.error,
        input_schema=cur.io.input_model.model_json_schema() if cur else {},
        output_schema=cur.io.output_model.model_json_schema() if cur else {},
    )


async def list_programs(server: Server = Depends(server_of)) -> ProgramList:
    return ProgramList(data=[_program_info(server, n) for n in server.pool.names])


async def get_program(name: str = Path(pattern=NAME_RE.pattern), server: Server = Depends(server_of)) -> ProgramInfo:
    try:
        return _program_info(server, name)
    except UnknownProgram as exc:
        raise ApiError(404, str(exc), "not_found") from None


async def _predict(
    server: Server, name: str, version: str | None, inputs: dict[str, Any], response: Response, key: str | None
) -> Run:
    """Run `name` (at `version`, else its alias) and say in a header which version answered."""
    run = await server.execute(f"{name}@{version}" if version else name, inputs, "predict", key)
    response.headers[VERSION_HEADER] = run.ref
    return run


def add_predict_route(app: FastAPI, name: str, loaded: Loaded) -> None:
    """A predict route typed by the program's own inputs and outputs, so OpenAPI and clients see its schema."""
    response_model = predict_response_model(name, loaded.io)

    async def predict(
        body: BaseModel,
        response: Response,
        version: str | None = Query(
            None, pattern=TAG_RE.pattern, description="a version number or alias (default: the served alias)"
        ),
        key: str | None = Depends(authenticate),
        server: Server = Depends(server_of),
    ) -> BaseModel:
        run = await _predict(server, name, version, body.model_dump(), response, key)
        return response_model(
            program=run.loaded.name,
            version=run.loaded.version,
            request_id=run.request_id,
            latency_ms=round(run.latency_ms, 2),
            usage=run.usage,
            outputs=run.outputs,
        )

    predict.__annotations__["body"] = loaded.io.input_model  # a real class, not the string `from __future__` leaves
    app.add_api_route(
        f"/v1/programs/{name}/predict",
        predict,
        methods=["POST"],
        response_model=response_model,
        tags=["programs"],
        summary=f"Run {name}",
        name=f"predict_{name}",
        description=loaded.description or f"Run {name} at its served version.",
        responses={
            404: {"description": "unknown version"},
            413: {"description": "body too large"},
            503: {"description": "saturated or not loaded"},
            504: {"description": "timeout"},
        },
    )


async def predict_any(
    body: dict[str, Any],
    response: Response,
    name: str = Path(pattern=NAME_RE.pattern),
    version: str | None = Query(None, pattern=TAG_RE.pattern),
    key: str | None = Depends(authenticate),
    server: Server = Depends(server_of),
) -> dict[str, Any]:
    run = await _predict(server, name, version, body, response, key)
    return {
        "program": run.loaded.name,
        "version": run.loaded.version,
        "request_id": run.request_id,
        "latency_ms": round(run.latency_ms, 2),
        "usage": run.usage.model_dump(),
        "outputs": jsonable_encoder(run.outputs),
    }


async def models(server: Server = Depends(server_of)) -> ModelList:
    from dspyc import artifacts

    cards = []
    for n in server.pool.names:
        cur = server.pool.current(n)
        cards.append(ModelCard(id=n, created=int(cur.loaded_at) if cur else 0))
        cards += [ModelCard(id=f"{n}@{v}") for v in artifacts.versions(n, server.s)]
    return ModelList(data=cards)


async def chat(
    req: ChatCompletionRequest,
    response: Response,
    key: str | None = Depends(authenticate),
    server: Server = Depends(server_of),
) -> ChatCompletion | StreamingResponse:
    content = _last_user_text(req)
    name = req.model.partition("@")[0]
    if name not in server.pool.names:
        raise ApiError(404, f"unknown model {req.model[:80]!r}; GET /v1/models lists them", "not_found")
    cur = server.pool.current(name)  # a pinned version takes the same inputs as the served one, or says it does not
    inputs = _chat_inputs(content, cur.io.input_names if cur else None)
    run = await server.execute(req.model, inputs, "chat", key)
    completion = _chat_completion(req, run)
    headers = {VERSION_HEADER: run.ref}
    if req.stream:
        return StreamingResponse(_sse(completion), media_type="text/event-stream", headers=headers)
    response.headers.update(headers)
    return completion


# --- the app --------------------------------------------------------------------------------------------


def create_app(
    s: Settings | None = None,
    pool: ProgramPool | None = None,
    *,
    start_pool: bool = True,
    log: RequestLog | None = None,
    dev: bool = False,
) -> FastAPI:
    """The ASGI app. `pool` defaults to the artifact store's programs at `serve_alias`; typed routes are made
    for the programs loaded when the app is created (start the pool first for an exact schema)."""
    s = s or get_settings()
    metrics = Metrics()
    pool = pool or ProgramPool(s)
    pool.on_swap(metrics.record_swap)
    if start_pool and not pool.names:
        pool.start()
    for name, cur in _served(pool).items():  # a pool the caller started loaded these before the callback was added
        metrics.record_swap(name, None, cur.version)
    if log is None and s.serve_log != "none":
        log = RequestLog(log_path(s), s.serve_log)
    server = Server(s, pool, log, metrics)
    if not server.keys and not dev:
        raise DspycError("no API keys: set DSPYC_SERVE_API_KEYS, or pass --dev for keyless loopback-only development")
    return _build_app(server)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    server: Server = app.state.server
    server.start()
    yield
    server.close()


def _build_app(server: Server) -> FastAPI:
    app = FastAPI(
        title="dspyc program server",
        version="1",
        lifespan=_lifespan,
        description="Compiled DSPy programs served at their registry alias; OpenAI-compatible chat.",
    )
    app.state.server = server
    app.add_middleware(BodyLimit, limit=server.s.serve_max_body_bytes)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _add_routes(app, server.pool)
    return app


def _add_routes(app: FastAPI, pool: ProgramPool) -> None:
    """Every route, in matching order: the typed predict routes go before the generic one whose path covers
    them. They go on the app itself rather than through module-level routers, so each app owns its own flat
    list of route objects."""
    keyed = [Depends(authenticate)]
    app.add_api_route("/healthz", healthz, tags=["health"], summary="Liveness: the process answers")
    app.add_api_route(
        "/readyz",
        readyz,
        tags=["health"],
        summary="Readiness: every program is loaded at its alias",
        responses={503: {"description": "not every program is loaded"}},
    )
    app.add_api_route(
        "/metrics",
        prometheus,
        tags=["health"],
        summary="Prometheus metrics",
        response_class=Response,
        dependencies=keyed,
    )
    app.add_api_route("/v1/programs", list_programs, tags=["programs"], response_model=ProgramList, dependencies=keyed)
    app.add_api_route(
        "/v1/programs/{name}",
        get_program,
        tags=["programs"],
        response_model=ProgramInfo,
        dependencies=keyed,
        responses={404: {"description": "unknown program"}},
    )
    for name, loaded in _served(pool).items():
        add_predict_route(app, name, loaded)
    app.add_api_route(
        "/v1/programs/{name}/predict",
        predict_any,
        methods=["POST"],
        tags=["programs"],
        summary="Run a program not loaded at startup",
        response_model=None,
        responses={404: {"description": "unknown program"}, 503: {"description": "not loaded"}},
    )
    app.add_api_route("/v1/models", models, tags=["openai"], response_model=ModelList, dependencies=keyed)
    app.add_api_route(
        "/v1/chat/completions",
        chat,
        methods=["POST"],
        tags=["openai"],
        response_model=ChatCompletion,
        responses={404: {"description": "unknown program"}, 422: {"description": "no usable user message"}},
    )


# --- chat -----------------------------------------------------------------------------------------------


def _last_user_text(req: ChatCompletionRequest) -> str:
    """The program runs on the last user message; of one sent as content parts, its text parts joined."""
    users = [m for m in req.messages if m.role == "user"]
    if not users:
        raise ApiError(422, "no user message: the program runs on the last user message")
    content = users[-1].content
    if isinstance(content, list):
        content = "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def _chat_completion(req: ChatCompletionRequest, run: Run) -> ChatCompletion:
    """The reply as text (the primary output, or every output as JSON when a JSON format is asked for), with the
    program's full outputs, cost and latency kept under `dspyc` for clients that know to look."""
    usage, outputs = run.usage, run.outputs
    as_json = (req.response_format or {}).get("type") in ("json_object", "json_schema")
    text = json.dumps(jsonable_encoder(outputs)) if as_json else _as_text(outputs.get(run.loaded.io.primary_output))
    return ChatCompletion(
        id=f"chatcmpl-{run.request_id}",
        created=int(time.time()),
        model=run.ref,
        choices=[ChatChoice(message=ChatChoiceMessage(content=text))],
        usage=ChatUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        ),
        dspyc={
            "program": run.loaded.name,
            "version": run.loaded.version,
            "outputs": jsonable_encoder(outputs),
            "latency_ms": round(run.latency_ms, 2),
            "estimated_cost_usd": usage.estimated_cost_usd,
            "lm_calls": usage.lm_calls,
        },
    )


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
    raise ApiError(
        422, f"this program takes inputs {', '.join(input_names)}: send the last user message as a JSON object"
    )


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(jsonable_encoder(value))


async def _sse(completion: ChatCompletion):
    """Streaming, for clients that ask for it: the whole reply as one chunk (a program's outputs are structured
    and complete only at the end), then [DONE]."""
    base = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    text = completion.choices[0].message.content
    yield f"data: {json.dumps(base | {'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': text}, 'finish_reason': None}]})}\n\n"
    yield f"data: {json.dumps(base | {'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}], 'usage': completion.usage.model_dump()})}\n\n"
    yield "data: [DONE]\n\n"
