"""Serving compiled programs: `dspyc serve` (FastAPI + uvicorn over the vLLM engine).

`create_app` builds the ASGI app over a `ProgramPool`; `serve` loads students into the engine, loads each
program's version at the serving alias, and runs uvicorn.
"""

from dspyc.serve.app import create_app
from dspyc.serve.pool import Loaded, ProgramPool

__all__ = ["Loaded", "ProgramPool", "create_app"]
