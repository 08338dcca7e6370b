"""The program pool: the version each program serves at its alias, swapped atomically when the alias moves.

A request takes a reference to a `Loaded` program once and keeps it to the end, so a swap never touches
a request in flight: the old version stays alive until its last request returns. A poller thread
re-resolves the alias every `serve_poll_s`; a new version is built off the request path and swapped in
under a lock. Pinned versions (`rag@3`) load on demand into a small LRU.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspyc.console import console as make_console

from dspyc.errors import ArtifactError, DspycError
from dspyc.serve.io import ProgramIO, program_io
from dspyc.settings import Settings, get_settings

console = make_console(stderr=True)
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_PINNED = 4


class UnknownProgram(DspycError):
    pass


class NotLoaded(DspycError):
    pass


@dataclass(frozen=True)
class Loaded:
    """One loaded version; immutable, shared by every request it serves."""

    name: str
    version: int
    module: dspy.Module
    lm: Any  # dspy.LM (or anything DSPy accepts as one)
    adapter: Any
    io: ProgramIO
    description: str = ""
    loaded_at: float = field(default_factory=time.time)


# (name, version, settings) -> Loaded. The default builds from the artifact store; tests inject their own.
Loader = Callable[[str, int, Settings], Loaded]
Resolver = Callable[[str, str, Settings], int]  # (name, alias or number, settings) -> version
SwapCallback = Callable[[str, int | None, int], None]  # (name, old version or None on first load, new version)


def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """`rag`, `rag@3`, `rag@champion` -> (name, tag); anything else is refused before touching the store."""
    name, _, tag = ref.partition("@")
    if not NAME_RE.match(name) or (tag and not TAG_RE.match(tag)):
        raise UnknownProgram(f"not a program reference: {ref[:80]!r} (expected NAME, NAME@VERSION or NAME@ALIAS)")
    return name, tag or None


def build_serving_lm(manifest: Any, s: Settings) -> Any:
    """The program's LM, on the engine of its model (`serving_model`), without DSPy's cache: every request is a
    real call whose tokens are billed. (A student's predictors get their LoRA adapter from `attach`.)"""
    from dspyc.lm import build_lm
    from dspyc.loading import serving_model

    return build_lm(s, model=serving_model(manifest, s), cache=False, timeout=s.serve_timeout_s, num_retries=1)


def load_from_store(name: str, version: int, s: Settings) -> Loaded:
    from dspyc import loading, registry
    from dspyc.adapter import ConstrainedJSONAdapter

    spec = registry.get(name)
    module, manifest, _ = loading.build_version(f"{name}@{version}", s=s)
    io = program_io(name, module, spec.inputs, spec.outputs, s.serve_max_input_chars)
    from dspyc.distill.student import adapter_ref, attach

    if adapter_ref(manifest) is not None:  # a student or a weights compile: its predictors call its adapter
        attach(module, manifest, s, cache=False, timeout=s.serve_timeout_s, num_retries=1)
    return Loaded(
        name=name,
        version=manifest.version,
        module=module,
        lm=build_serving_lm(manifest, s),
        adapter=ConstrainedJSONAdapter(),
        io=io,
        description=spec.description,
    )


def resolve_from_store(name: str, tag: str, s: Settings) -> int:
    from dspyc import loading

    return loading.resolve_version(name, tag, s)


def catalog_from_store(s: Settings) -> list[str]:
    from dspyc import registry

    return registry.available()


@dataclass
class _Entry:
    current: Loaded | None = None
    error: str | None = None
    swaps: int = 0


class ProgramPool:
    def __init__(
        self,
        s: Settings | None = None,
        *,
        loader: Loader = load_from_store,
        resolver: Resolver = resolve_from_store,
        catalog: Callable[[Settings], list[str]] = catalog_from_store,
        on_swap: SwapCallback | None = None,
    ):
        self.s = s or get_settings()
        self.alias = self.s.serve_alias
        self._loader, self._resolver, self._catalog = loader, resolver, catalog
        self._swap_callbacks: tuple[SwapCallback, ...] = (on_swap,) if on_swap else ()
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._pinned: OrderedDict[tuple[str, int], Loaded] = OrderedDict()
        self._pin_locks: dict[tuple[str, int], threading.Lock] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, poll: bool = True) -> None:
        """Load every program's version at the alias (failures are kept, not raised), then poll."""
        for name in self._catalog(self.s):
            self._entries.setdefault(name, _Entry())
        self.refresh()
        if poll and self.s.serve_poll_s > 0:
            self._thread = threading.Thread(target=self._poll, name="dspyc-alias-poller", daemon=True)
            self._thread.start()

    def on_swap(self, callback: SwapCallback) -> None:
        """Also call `callback` after each swap (and each first load), after those registered before it.

        Several parties watch swaps (the caller that built the pool, the app's metrics), so callbacks add up
        rather than replace each other. The poller thread may be reading them: the tuple is replaced, never mutated.
        """
        self._swap_callbacks = (*self._swap_callbacks, callback)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self.s.serve_poll_s):
            self.refresh()

    def refresh(self) -> list[tuple[str, int]]:
        """Re-resolve every alias; load and swap in what moved. Returns the swaps made."""
        swapped = []
        for name in list(self._entries):
            entry = self._entries[name]
            try:
                version = self._resolver(name, self.alias, self.s)
                if entry.current is not None and entry.current.version == version:
                    entry.error = None
                    continue
                new = self._pinned.get((name, version)) or self._loader(name, version, self.s)
            except Exception as exc:  # keep serving what we have; report it on /readyz and /v1/programs
                entry.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                continue
            with self._lock:
                old = entry.current
                entry.current, entry.error = new, None
                entry.swaps += old is not None
            swapped.append((name, version))
            if old is not None:
                console.print(f"[green]hot swap[/green] {name}@{self.alias}: {old.version} -> {version}")
            for callback in self._swap_callbacks:
                callback(name, old.version if old else None, version)
        return swapped

    # --- lookups -----------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def current(self, name: str) -> Loaded | None:
        entry = self._entries.get(name)
        return entry.current if entry else None

    def status(self, name: str) -> _Entry:
        if name not in self._entries:
            raise UnknownProgram(f"unknown program {name!r}; served: {', '.join(self._entries) or 'none'}")
        return self._entries[name]

    @property
    def ready(self) -> bool:
        return bool(self._entries) and all(e.current is not None for e in self._entries.values())

    def loaded_versions(self, name: str) -> list[int]:
        with self._lock:
            cur = self._entries[name].current if name in self._entries else None
            have = {v for (n, v) in self._pinned if n == name} | ({cur.version} if cur else set())
        return sorted(have)

    def get(self, ref: str) -> Loaded:
        """The program for `name`, `name@VERSION` or `name@ALIAS`. Blocks while a pinned version loads."""
        name, tag = parse_model_ref(ref)
        entry = self.status(name)
        if tag is None or tag == self.alias:
            with self._lock:
                cur = entry.current
            if cur is None:
                raise NotLoaded(f"{name}@{self.alias} is not loaded: {entry.error or 'loading'}")
            return cur
        try:
            version = int(tag) if tag.isdigit() else self._resolver(name, tag, self.s)
        except ArtifactError as exc:
            raise UnknownProgram(str(exc)) from None
        with self._lock:
            cur = entry.current
            if cur is not None and cur.version == version:
                return cur
            if (name, version) in self._pinned:
                self._pinned.move_to_end((name, version))
                return self._pinned[(name, version)]
            pin_lock = self._pin_locks.setdefault((name, version), threading.Lock())
        with pin_lock:  # one load per version, however many requests ask for it at once
            if (name, version) in self._pinned:
                return self._pinned[(name, version)]
            try:
                loaded = self._loader(name, version, self.s)
            except ArtifactError as exc:
                raise UnknownProgram(str(exc)) from None
            finally:
                with self._lock:
                    self._pin_locks.pop((name, version), None)
            with self._lock:
                self._pinned[(name, version)] = loaded
                while len(self._pinned) > MAX_PINNED:
                    self._pinned.popitem(last=False)
            return loaded
