# dspyc recipes. `just --list` shows them; every recipe runs inside the project's .venv.
set positional-arguments
export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")
export HF_HUB_OFFLINE := "1"

default:
    @just --list

# Install everything into .venv (the engine gets its own venv on first use)
setup:
    python3 -m venv .venv
    .venv/bin/pip install -q torch==2.13.0 -e '.[dev]'

# Compile a program with a recipe: just compile rag [RECIPE] [--data DIR] [--seed N] [--token-budget N]
compile program *args:
    dspyc compile "$@"

# Evaluate a compiled version: just eval rag@3 --data DIR --split test
eval ref *args:
    dspyc eval "$@"

# Ask the tool-calling agent: just ask "What's the weather in Paris?" [--provider offline] [--version N]
ask question *args:
    dspyc ask "$@"

# Recall@k and MRR for BM25, dense, hybrid and hybrid+rerank on dev
eval-retrieval program="rag" *args:
    dspyc eval-retrieval --program "$@"

# Foundations: tokens, forward, greedy decode in process, then the engine
smoke:
    dspyc smoke

# The local vLLM engines, one per model: just engine up|down|status|logs [MODEL] (default: the program LM)
engine action="status" *args:
    dspyc engine {{action}} {{args}}

# Provision models offline
models:
    dspyc models pull

# Serve every program's champion: just serve [--dev] [--port N] (keys from DSPYC_SERVE_API_KEYS)
serve *args:
    dspyc serve "$@"

# Cost and latency percentiles of served requests: just usage [--since 24h] [--program rag]
usage *args:
    dspyc usage "$@"

# Benchmarks: just bench engine | just bench compile rag | just bench serve | just bench train | just bench lora agent@4
bench what="engine" *args:
    dspyc bench "$@"

# Answer quality and parse failures on a labelled probe: new vs old format vs DSPy's ChatAdapter/JSONAdapter, on the
# program LM and the student base: just adapter-check [N] [--stock-n 30] [--model KEY] [--adapter new]
adapter-check n="60" *args:
    dspyc adapter-check -n "$@"

# Distill a program into a LoRA student (SFT then DPO), served by the engine as an adapter: just distill tone [--no-dpo]
distill program *args:
    dspyc distill "$@"

# Re-optimize when the data or code changed: promote a challenger only on a significant win
reoptimize program="rag" *args:
    dspyc reoptimize "$@"

# Versions, aliases and scores of a program; promote or roll back its champion
versions program="rag":
    dspyc versions {{program}}

# Plots and a markdown summary under artifacts/PROGRAM/report
report program="rag":
    dspyc report {{program}}

# Fast unit tests only
test-unit *args:
    pytest -m "not integration" -q "$@"

# The whole suite: unit tests, then integration tests against the real engine and services
test *args:
    pytest -q "$@"

# The MLflow UI on loopback over the tracking store
mlflow-ui port="5000":
    mlflow ui --backend-store-uri "${DSPYC_MLFLOW_URI:-sqlite:///{{justfile_directory()}}/artifacts/mlflow.db}" --host 127.0.0.1 --port {{port}}
