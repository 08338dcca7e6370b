"""dspyc: a DSPy-centric optimizing compiler for LLM programs."""

import os

# Offline-first: DSPy would otherwise try to refresh its model-metadata map from the network on import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"

from dspyc.errors import DspycError  # noqa: E402
from dspyc.settings import Settings, get_settings  # noqa: E402


def load(ref: str, **kwargs):
    """Load a compiled program: `load("rag")` (latest), `load("rag@<version>")`, `load("rag@champion")`."""
    from dspyc.loading import load_program

    return load_program(ref, **kwargs)


__all__ = ["DspycError", "Settings", "get_settings", "load", "__version__"]
