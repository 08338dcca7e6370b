"""The one LM factory: settings in, a configured `dspy.LM` out."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import contextmanager

import dspy
import httpx

from dspyc import engine
from dspyc.adapter import ConstrainedJSONAdapter
from dspyc.errors import DspycError
from dspyc.models import resolve_lm, served_name
from dspyc.settings import Settings, get_settings

BACKENDS = ("engine", "url", "transformers", "litellm")


def cache_misses(lookup):
    """`lookup(provider, model, namespaces=)` that remembers which models it found nothing for."""
    misses: set[tuple] = set()

    @functools.wraps(lookup)
    def cached(provider, model, *, namespaces=None):
        key = (provider, model, None if namespaces is None else tuple(namespaces))
        if key in misses:
            return {}
        info = lookup(provider, model, namespaces=namespaces)
        if not info:
            misses.add(key)
        return info

    cached.dspyc_cached = True
    return cached


def _cache_metadata_misses() -> None:
    """DSPy prices every call by looking its model up in a metadata table. A self-hosted model is in none, and
    each miss scans the whole table, twice a call: 3/4 of a served request's CPU (profiled: 11.8 -> 3.1 ms)."""
    from dspy.clients import capabilities, costs
    from dspy.clients.model_metadata import model_info

    cached = cache_misses(model_info)
    for module in (costs, capabilities):
        if getattr(module, "model_info", None) is model_info:  # only DSPy's own lookup, once
            module.model_info = cached


_cache_metadata_misses()


_LISTENER = threading.local()


@contextmanager
def usage_listener(fn: Callable[[dict], None]):
    """In this thread, hand every LM response's token usage to `fn`, a response from DSPy's cache included (DSPy
    keeps a cached response's usage but bills only fresh calls): what a cost compile measures per run."""
    before = getattr(_LISTENER, "fn", None)
    _LISTENER.fn = fn
    try:
        yield
    finally:
        _LISTENER.fn = before


class LM(dspy.LM):
    """dspy.LM that reports each response's usage to the thread's `usage_listener` as DSPy records it."""

    def update_history(self, entry: dict) -> None:
        super().update_history(entry)
        if (fn := getattr(_LISTENER, "fn", None)) is not None:
            fn(recorded_usage(entry))


def recorded_usage(entry: dict) -> dict:
    """A history entry's token usage. DSPy empties `usage` for a cache hit, but the cached response keeps its own
    (lm15's `Response.usage`), which this reads instead."""
    usage, response = dict(entry.get("usage") or {}), entry.get("response")
    if usage or getattr(response, "usage", None) is None:
        return usage
    from dspy.clients.call_result import usage_dict

    try:
        return usage_dict(response)
    except AttributeError:  # a response whose usage is not lm15's (a provider's own object): nothing recorded
        return {}


def _served_models(base_url: str, api_key: str) -> list[str]:
    try:
        r = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise DspycError(f"LM server at {base_url} is unreachable: {type(exc).__name__}: {exc}") from None
    return [m["id"] for m in r.json().get("data", [])]


def _pick_served(base: str, wanted: str, api_key: str) -> str:
    """The wanted model if the server has it, else whatever it serves."""
    served = _served_models(base, api_key)
    if not served:
        raise DspycError(f"LM server at {base} serves no models")
    return wanted if wanted in served else served[0]


def build_lm(
    settings: Settings | None = None,
    *,
    model: str | None = None,
    adapter: str | None = None,
    url: str | None = None,
    **overrides,
) -> dspy.LM:
    """Build the LM the settings describe.

    `model` is a model key, folder or hub id (None: the program LM, `lm_model`) whose engine serves the calls;
    `adapter` is a LoRA adapter that engine serves (load it first with `engine.load_lora(..., model=model)`),
    so the call goes to `openai/<adapter>`. `url` is any OpenAI-compatible server (e.g. a teacher elsewhere).
    `overrides` are LM defaults (temperature, max_tokens, cache, ...).
    """
    s = settings or get_settings()
    key = model or s.lm_model
    kwargs = dict(temperature=s.temperature, max_tokens=s.max_tokens, num_retries=2) | overrides
    if url:
        base = url.rstrip("/")
        name = adapter or _pick_served(base, served_name(key, s), s.lm_api_key)
        return LM(f"openai/{name}", api_base=base, api_key=s.lm_api_key, **kwargs)
    if s.lm_backend not in BACKENDS:
        raise DspycError(f"unknown lm_backend {s.lm_backend!r}: choose one of {', '.join(BACKENDS)}")
    if s.lm_backend in ("engine", "url"):
        base = engine.ensure(s, key, lora=adapter is not None)
        if s.lm_backend == "url" and key == s.lm_model:
            name = adapter or _pick_served(base, served_name(key, s), s.lm_api_key)
        else:
            name = adapter or served_name(key, s)
        # openai/ talks the plain chat-completions wire to any compatible server (vLLM included).
        return LM(f"openai/{name}", api_base=base, api_key=s.lm_api_key, **kwargs)
    if s.lm_backend == "transformers":
        from dspyc.inprocess import TransformersEngine

        if adapter is not None:
            raise DspycError(f"LoRA adapter {adapter!r} needs the engine (vLLM) backend, not lm_backend=transformers")
        name = served_name(key, s)
        kwargs.pop("num_retries")
        return LM(f"transformers/{name}", engine=TransformersEngine(resolve_lm(key, s), name), **kwargs)
    return LM(adapter or key, **kwargs)


def configure(settings: Settings | None = None, **overrides) -> dspy.LM:
    """Build the LM and make it, with the constrained adapter, DSPy's default."""
    lm = build_lm(settings, **overrides)
    dspy.configure(lm=lm, adapter=ConstrainedJSONAdapter())
    return lm
