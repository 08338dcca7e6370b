"""Versions by reference: `rag`, `rag@3`, `rag@champion` -> a built, loaded program on the right engine.

Above the artifact store (which knows files and manifests only), the registry (aliases) and distillation
(students' adapters), so none of those has to import another upward.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import dspy

from dspyc import registry, tracking
from dspyc.artifacts import PROGRAM_FILE, Manifest, parse_ref, program_dir, read_manifest, versions
from dspyc.data import apply_split_config
from dspyc.distill.student import adapter_ref, attach, merged_model, serving_note
from dspyc.console import console as make_console
from dspyc.errors import ArtifactError
from dspyc.lm import configure
from dspyc.settings import Settings, get_settings

console = make_console(stderr=True)


def resolve_version(program: str, tag: str | None, s: Settings | None = None) -> int:
    """A version number from `None`/"latest", a number, or a registry alias such as "champion"."""
    if tag is None or tag == "latest":
        have = versions(program, s)
        if not have:
            raise ArtifactError(f"no compiled versions of {program!r}: run `just compile {program}` first")
        return have[-1]
    if tag.isdigit():
        return int(tag)
    return tracking.resolve_alias(program, tag, s)


def build_version(
    ref: str, data: str | None = None, s: Settings | None = None, adapter: bool = False
) -> tuple[dspy.Module, Manifest, Any]:
    """The compiled module of `ref` (not yet given an LM, or with `adapter` its adapter's where it has one: scored
    as `dspyc.load` serves it), its manifest, and the dataset it was built over: the one it was compiled on, or
    `data` (retrieval then indexes that corpus)."""
    s = s or get_settings()
    name, tag = parse_ref(ref)
    spec = registry.get(name)
    version = resolve_version(name, tag, s)
    manifest = read_manifest(name, version, s)
    if data is None:
        data = manifest.dataset.path if Path(manifest.dataset.path).is_dir() else manifest.dataset.name
        dataset = spec.load_data(data, manifest.seed)
        if dataset.version != manifest.dataset.version:
            warnings.warn(
                f"{name}@{version} was compiled on dataset version {manifest.dataset.version}; "
                f"the data now has {dataset.version}",
                stacklevel=2,
            )
    else:
        dataset = spec.load_data(data, manifest.seed)
    apply_split_config(dataset, manifest.config, manifest.seed)  # the split sizes it was compiled with (--set test=60)
    source = registry.source_hash(name)
    if manifest.source_hash != source:  # the prompts come from the code as it is now
        warnings.warn(
            f"{name}@{version} was compiled against other source (programs/{name}.py or signatures/{name}.py "
            f"changed since: {manifest.source_hash} → {source}); its prompts may differ from "
            "the ones it was scored with",
            stacklevel=2,
        )
    config = manifest.config
    if manifest.encoder and spec.retrieval:  # a trained retriever encoder stored with the version
        config = config | {spec.retrieval.encoder_key: str(program_dir(name, s) / str(version) / manifest.encoder.path)}
    module = spec.build(dataset, config)
    load_state(module, program_dir(name, s) / str(version) / PROGRAM_FILE, f"{name}@{version}")
    module.dspyc_manifest = manifest
    if adapter and adapter_ref(manifest) is not None:
        attach(module, manifest, s)
    return module, manifest, dataset


def load_state(module: dspy.Module, path: Path, label: str) -> None:
    """`module.load(path)`, except that a predictor the program gained after the version was saved keeps its
    as-built state (with a warning) instead of failing the load with a KeyError."""
    state = json.loads(path.read_text())
    params = dict(module.named_parameters())
    if set(params) == {"self"}:  # a program that is one bare predictor: its state is its own, not keyed by name
        module.load_state(state)
        return
    missing = [n for n in params if n not in state]
    if missing:
        warnings.warn(
            f"{label} was saved before the program had {', '.join(missing)}: "
            f"{'it runs' if len(missing) == 1 else 'they run'} as built, uncompiled",
            stacklevel=3,
        )
        state |= {n: params[n].dump_state() for n in missing}
    module.load_state(state)


def load_program(ref: str, configure_lm: bool = True, s: Settings | None = None) -> dspy.Module:
    """`rag`, `rag@3`, `rag@champion` → the compiled module, ready to call (LM configured)."""
    s = s or get_settings()
    module, manifest, _ = build_version(ref, s=s)
    if configure_lm:
        # the engine of the model the version was compiled for (an adapter's base model, the adapter attached)
        configure(s, model=serving_model(manifest, s))
        if adapter_ref(manifest) is not None:
            attach(module, manifest, s)
            console.print(f"[dim]{serving_note(manifest, s)}[/dim]")
    return module


def serving_model(manifest: Manifest | None, s: Settings) -> str | None:
    """The model whose engine serves a version: an adapter's base model (the adapter is loaded there), the model a
    version was compiled on with the local engine (`lm.model`), else None (the program LM, `DSPYC_LM_MODEL`)."""
    if manifest is None or s.lm_backend not in ("engine", "url"):
        return None
    if (ref := adapter_ref(manifest)) is not None:
        return str(merged_model(manifest, s)) if s.adapter_serving == "merged" else ref.base_model
    lm = getattr(manifest, "lm", None)
    return lm.model if lm is not None and lm.backend == "engine" else None
