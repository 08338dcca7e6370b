"""Every table the CLI prints comes out whole when stdout is not a terminal (`dspyc compile rag | tee log`, CI).

Each test feeds one table-printing function small synthetic inputs with long values (a 60-character program name,
a long header, a wide interval) and prints it the way the CLI does when piped: stdout is a StringIO (no terminal)
and the module's console comes from dspyc's factory (dspyc/console.py), with COLUMNS unset or narrow. No cell
may be cut ("accuracy_simple_p…") or wrapped onto a second line: each long value appears in full on one line.
"""

import io
import json
import time
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.table import Table

from dspyc import artifacts
from dspyc import console as console_module
from dspyc.console import console as make_console
from dspyc.settings import Settings

PROGRAM = "multi_hop_question_answering_with_citations_and_rewrites_v23"  # 60 characters
MODEL = "/models/qwen2.5-coder-0.5b-instruct-merged-agent-ft-3f2a9c1b"  # a local folder as the model key
assert len(PROGRAM) == 60 and len(MODEL) == 60


@pytest.fixture(params=[None, "80"], ids=["COLUMNS unset", "COLUMNS=80"])
def pipe(request, monkeypatch):
    """A pipe (a StringIO: no terminal). `use(module)` gives the module a console from dspyc's factory writing to it,
    as the module's own console is when stdout is a pipe; after `factory()`, consoles the factory makes write to it."""
    for var in ("FORCE_COLOR", "FORCE_TERMINAL", "TTY_INTERACTIVE", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    if request.param is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", request.param)
    out = io.StringIO()

    def use(module, name: str = "console") -> None:
        monkeypatch.setattr(module, name, make_console(file=out))

    def factory() -> None:  # after the imports: a module imported now would keep a console on this pipe
        monkeypatch.setattr(console_module, "console", lambda **kw: make_console(**{"file": out} | kw))

    return SimpleNamespace(use=use, factory=factory, text=out.getvalue)


def assert_whole(text: str, *values: str) -> None:
    assert "…" not in text, f"a cell was cut:\n{text}"
    lines = text.splitlines()
    for v in values:
        assert any(v in line for line in lines), f"{v!r} is not whole on one line:\n{text}"


def test_a_wide_table_prints_whole_while_text_keeps_the_consoles_width(pipe):
    pipe.factory()
    c = console_module.console()
    assert isinstance(c, Console) and not c.is_terminal
    width = c.width  # LOG_WIDTH, or COLUMNS where set
    table = Table("x" * 150, "y")
    table.add_row("a" * 150, "b" * 150)
    c.print(table)
    c.print(" ".join(["word"] * 100))
    lines = pipe.text().splitlines()
    assert "a" * 150 in lines[3] and "b" * 150 in lines[3] and "…" not in pipe.text()
    assert max(len(line) for line in lines[-3:]) <= width and c.width == width  # text wraps; the width is back


# --- dspyc compile: the summary and the cost search's candidates (dspyc/compiler.py) -----------------------------


def _manifest(**metrics) -> artifacts.Manifest:
    return artifacts.Manifest(
        program=PROGRAM,
        version=12,
        import_path="programs.x",
        source_hash="0" * 16,
        recipe={"name": "better_together"},
        seed=0,
        metrics=metrics,
        dataset=artifacts.DatasetRef(name="wiki", path="datasets/wiki", version="3f2a9c1b7d6e"),
        lm=artifacts.LMRef(backend="engine", model=MODEL, served_name=MODEL),
        usage={"lm_calls": 504, "input_tokens": 85_998, "output_tokens": 16_564},
        kept="uncompiled",
        kept_reason="not better than uncompiled on dev beyond noise",
    )


SCORES = {
    "accuracy": 0.467,
    "accuracy_simple_python": 0.633,
    "accuracy_multiple": 0.5,
    "accuracy_parallel": 0.267,
    "accuracy_parallel_multiple": 0.2,
    "retrieval_recall_of_the_gold_titles": 0.81,
    "metric": 0.467,
    "errors": 0,
}
RUN_COST = {
    "lm_calls": 219,
    "cached_calls": 3,
    "prompt_tokens_per_call": 179.2,
    "output_tokens_per_call": 33.7,
    "latency_p50_s": 8.828,
    "runs": 90,
    "prompt_tokens_per_run": 412.5,
    "output_tokens_per_run": 77.1,
    "run_p50_s": 21.37,
    "machine_s_per_run": 12.9,
}
DELTA = {"mean": 0.044, "low": -0.033, "high": 0.122, "p": 0.17, "n": 90}


def test_the_compile_summary_prints_whole(pipe):
    from dspyc import compiler

    pipe.use(compiler)
    both = {"dev": SCORES, "test": SCORES}
    cost = {"dev": RUN_COST, "test": RUN_COST}
    compiler.print_summary(
        _manifest(
            baseline=both, compiled=both, delta={"dev": DELTA, "test": DELTA}, cost={"baseline": cost, "compiled": cost}
        )
    )
    assert_whole(
        pipe.text(),
        f"{PROGRAM}@12",
        compiler.DELTA_COLUMN,
        "accuracy_simple_python",
        "accuracy_parallel_multiple",
        "retrieval_recall_of_the_gold_titles",
        "+0.044 [-0.033, +0.122]",
        "uncompiled (kept)",
        "prompt tok/call",
        "$/1k runs",
    )


def test_a_weights_compile_shows_the_untrained_program_under_its_config(pipe):
    """A finetune compile under the spec's finetune_config scores that program without the adapter too: its row, and
    what the weights add over it, print beside the usual two."""
    from dspyc import compiler

    pipe.use(compiler)
    both = {"dev": SCORES, "test": SCORES}
    cost = {"dev": RUN_COST, "test": RUN_COST}
    compiler.print_summary(
        _manifest(
            baseline=both,
            untrained=both,
            compiled=both,
            delta={"dev": DELTA, "test": DELTA},
            delta_untrained={"test": {"mean": 0.1, "low": -0.011, "high": 0.211, "p": 0.04, "n": 90}},
            untrained_config={"split_step": "with_functions"},
            cost={"baseline": cost, "untrained": cost, "compiled": cost},
        )
    )
    text = pipe.text()
    assert_whole(text, "untrained, split_step=with_functions", "test +0.100 [-0.011, +0.211]")
    assert text.count("untrained, split_step=with_functions") == 3  # a dev row, a test row, the line under them


def test_the_cost_search_candidates_print_whole(pipe):
    from dspyc import compiler

    pipe.use(compiler)
    rows = [
        {
            "name": "uncompiled",
            "dev": 0.5,
            "delta": None,
            "dev_cost": 1520.0,
            "probe_cost": 1490.0,
            "cost": RUN_COST,
            "chosen": False,
            "frontier": True,
        },
        {
            "name": "max_passages=3 hops=1 max_rewrites=0 query_passage_chars=150",
            "dev": 0.48,
            "delta": DELTA,
            "dev_cost": 610.0,
            "probe_cost": 598.5,
            "cost": RUN_COST,
            "chosen": True,
            "frontier": True,
        },
    ]
    compiler.print_candidates(
        _manifest(objective={"objective": "pareto", "margin": 0.03, "cost": "tokens"}, candidates=rows)
    )
    assert_whole(
        pipe.text(),
        "max_passages=3 hops=1 max_rewrites=0 query_passage_chars=150",
        "Δ vs uncompiled [95% CI]",
        "+0.044 [-0.033, +0.122]",
        f"{PROGRAM}@12",
    )


# --- dspyc eval (compiler.evaluate_version) ----------------------------------------------------------------------


def test_the_eval_table_prints_whole(pipe, monkeypatch, tmp_path):
    from dspyc import compiler, registry, tracking

    pipe.use(compiler)
    dataset = SimpleNamespace(name="hotpotqa-distractor-dev-mini", version="v", splits={"test": [object()] * 3})
    monkeypatch.setattr(registry, "get", lambda name: SimpleNamespace(name=name))
    monkeypatch.setattr(compiler, "build_uncompiled", lambda name, data=None, **kw: (object(), dataset, {}))
    monkeypatch.setattr(compiler, "configure", lambda s, **kw: None)
    monkeypatch.setattr(tracking, "enable_traces", lambda *a, **kw: False)
    monkeypatch.setattr(tracking, "log_run", lambda *a, **kw: None)
    scores = {"retrieval_recall_of_the_gold_titles_at_ten": 0.8123, "citation_recall": 0.5, "metric": 0.4}
    monkeypatch.setattr(compiler, "evaluate_many", lambda jobs, spec, threads: [compiler.Evaluation(scores, [])])
    compiler.evaluate_version(PROGRAM, uncompiled=True, s=Settings(artifacts_root=tmp_path))
    assert_whole(pipe.text(), "retrieval_recall_of_the_gold_titles_at_ten", "0.812", "uncompiled")


# --- dspyc versions (dspyc/report.py) ------------------------------------------------------------------------------


def test_the_versions_table_prints_whole(pipe, monkeypatch):
    from dspyc import report

    pipe.use(report)
    row = {
        "version": 12,
        "aliases": ["champion", "candidate-pareto-frontier"],
        "recipe": "better_together",
        "lm": MODEL,
        "dataset": "hotpotqa-distractor-dev-mini@3f2a9c1b7d6e5f40",
        "dev": 0.512,
        "test": 0.498,
        "tokens": 1_234_567,
        "created": "2026-12-06T14:51:38+00:00",
        "kept": "uncompiled",
    }
    monkeypatch.setattr(report, "version_rows", lambda program, s=None: [row])
    report.print_versions(PROGRAM)
    assert_whole(
        pipe.text(),
        MODEL,
        "better_together (uncompiled kept)",
        "champion, candidate-pareto-frontier",
        "hotpotqa-distractor-dev-mini@3f2a9c1b7d6e5f40",
        "1,234,567",
        "2026-12-06 14:51",
    )


# --- dspyc usage (dspyc/serve/usage.py) ---------------------------------------------------------------------------


def test_the_usage_table_prints_whole(pipe, tmp_path):
    from dspyc.serve import usage

    log = tmp_path / "requests.jsonl"
    now = time.time()
    records = [
        {
            "ts": now - i,
            "program": PROGRAM,
            "version": 12,
            "status": 200,
            "latency_ms": 1234.5 + i,
            "prompt_tokens": 1_000_000,
            "completion_tokens": 250_000,
            "cost_usd": 0.123456,
        }
        for i in range(3)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    pipe.factory()
    usage.usage_report(since=None, path=log)  # makes its console when called
    assert_whole(pipe.text(), PROGRAM, "completion tok", "3,000,000", "750,000", "0.370368")


# --- dspyc bench ... (dspyc/bench.py, dspyc/serve/bench.py) -------------------------------------------------------


def test_the_serve_bench_table_prints_whole(pipe):
    from dspyc.serve import bench

    pipe.use(bench)
    side = {"requests": 10_000, "errors": 0, "throughput_rps": 1234.5, "p50_ms": 12.3, "p95_ms": 45.6, "p99_ms": 78.9}
    over = {"p50_added_ms": 1.2, "p50_pct": 10.8, "p95_added_ms": 3.4, "p99_added_ms": 5.6}
    run = {"server": side, "direct": side, "overhead": over, "upstream": "dspyc.serve.stub"}
    bench._print({"program": PROGRAM, "stub": run, "engine@32": run})
    assert_whole(pipe.text(), "server overhead", "+1.2 (10.8%)", "10,000", "engine@32")


def test_the_compile_bench_table_prints_whole(pipe, monkeypatch, tmp_path):
    import dspy

    from dspyc import bench, compiler, engine

    pipe.use(bench)
    for name in ("down", "ensure"):
        monkeypatch.setattr(engine, name, lambda *a, **kw: None)
    monkeypatch.setattr(engine, "status", lambda *a, **kw: None)
    monkeypatch.setattr(dspy, "configure_cache", lambda **kw: None)
    monkeypatch.setattr(bench, "cpu_summary", lambda: {})
    monkeypatch.setattr(bench, "_save", lambda *a, **kw: None)
    m = SimpleNamespace(
        usage={"lm_calls": 123_456, "input_tokens": 9_876_543, "output_tokens": 1},
        metrics={"compiled": {"dev": {"metric": 0.4321}}},
    )
    monkeypatch.setattr(compiler, "compile_program", lambda *a, **kw: m)
    bench.bench_compile(PROGRAM, s=Settings(artifacts_root=tmp_path))
    assert_whole(pipe.text(), "engine, warm DSPy cache (re-run)", "compiled dev metric", "9876544", "0.432")


def test_the_train_bench_table_prints_whole(pipe, monkeypatch, tmp_path):
    from dspyc import bench
    from dspyc.distill import speed

    pipe.use(bench)
    monkeypatch.setattr(bench, "resolve_lm", lambda key, s=None, pull=True: key)
    monkeypatch.setattr(bench, "cpu_summary", lambda: {})
    monkeypatch.setattr(bench, "_save", lambda *a, **kw: None)
    monkeypatch.setattr(speed, "shapes", lambda top: [SimpleNamespace(label="every linear layer of the top 8 layers")])
    monkeypatch.setattr(
        speed,
        "measure",
        lambda path, shape, spec, steps: {
            "shape": shape.label,
            "trainable_params": 8_650_752,
            "s_per_step": 123.4,
            "s_per_row": 15.43,
            "tokens_per_s": 33.2,
            "peak_rss_gb": 11.2,
            "precision": "fp32",
        },
    )
    bench.bench_train(model=MODEL, s=Settings(artifacts_root=tmp_path))
    assert_whole(pipe.text(), "every linear layer of the top 8 layers", "trainable params", "8.65M", "peak RSS GB")


def test_the_adapter_check_table_prints_whole(pipe, monkeypatch, tmp_path):
    from dspyc import adapter_probe, bench
    from dspyc import lm as lm_module

    pipe.use(bench)
    monkeypatch.setattr(bench, "resolve_lm", lambda key, s=None, pull=True: key)
    monkeypatch.setattr(bench, "cpu_summary", lambda: {})
    monkeypatch.setattr(bench, "_save", lambda *a, **kw: None)
    monkeypatch.setattr(adapter_probe, "labelled_calls", lambda: [SimpleNamespace(check=None)] * 2)
    monkeypatch.setattr(lm_module, "build_lm", lambda s, model=None, **kw: SimpleNamespace(model=f"openai/{model}"))
    result = {
        "calls": 60,
        "parse_failures": 12,
        "failure_rate": 0.2,
        "empty": 3,
        "errors": 1,
        "error_sample": None,
        "labelled": 48,
        "accuracy": 0.4583,
        "accuracy_parsed": 0.5789,
        "prompt_tokens_per_call": 1234.5,
        "seconds": 321.0,
    }
    monkeypatch.setattr(bench, "_run_calls", lambda lm, adapter, calls, threads: result)
    bench.adapter_check(n=2, models=[MODEL], only=["new", "JSONAdapter"], s=Settings(artifacts_root=tmp_path))
    assert_whole(pipe.text(), MODEL, "accuracy (parsed)", "prompt tok/call", "parse failures", "JSONAdapter", "57.9%")


# --- dspyc distill's honest table (dspyc/distill/pipeline.py) -------------------------------------------------


def test_the_distill_table_prints_whole(pipe):
    from dspyc.distill import pipeline

    pipe.use(pipeline)
    teacher = f"{PROGRAM} (uncompiled, default config)"  # the label of a teacher run as built
    systems = {
        "teacher": {
            "adherence": 0.8,
            "pass_rate": 0.5,
            "prompt_tokens_per_call": 600.0,
            "completion_tokens_per_call": 70.0,
            "latency_p50_s": 4.0,
            "cost_per_1k_calls_usd": 0.2,
            "metric": 0.8,
            "per_example": [1.0, 1.0, 0.0] * 20,
        },
        "student_dpo": {
            "adherence": 0.72,
            "pass_rate": 0.25,
            "prompt_tokens_per_call": 150.0,
            "completion_tokens_per_call": 60.0,
            "latency_p50_s": 2.0,
            "cost_per_1k_calls_usd": 0.05,
            "metric": 0.72,
            "per_example": [1.0, 0.0, 0.0] * 20,
            "errors": 3,
        },
    }
    rows = pipeline.table_rows(systems, labels={"teacher": teacher})
    pipeline.print_table(PROGRAM, rows, "test", 60, Settings())
    assert_whole(
        pipe.text(),
        teacher,
        "% of teacher",
        "95% interval",
        rows[1]["pct_of_teacher_95ci"],
        "output tok/call",
        "$ / 1k calls",
        "student_dpo",
    )


# --- just eval-retrieval (dspyc/retrieval_report.py) ---------------------------------------------------------


def test_the_retrieval_report_prints_whole(pipe, monkeypatch, tmp_path):
    from dspyc import registry, retrieval_report

    pipe.use(retrieval_report)
    ex = SimpleNamespace(question="q", gold_titles=["A"])
    data = SimpleNamespace(
        name="wiki", version="3f2a9c1b7d6e5f40", documents=[], splits={"dev": [ex]}, outside=lambda *splits: [ex]
    )
    monkeypatch.setattr(registry, "get", lambda name: SimpleNamespace(dataset="wiki", load_data=lambda d, seed: data))
    monkeypatch.setattr(artifacts, "program_dir", lambda program, s=None: tmp_path)
    name = "hybrid_bm25_dense_reciprocal_rank_fusion_then_cross_encoder_rerank"
    scores = {"recall@1": 0.4, "recall@5": 0.7, "recall@10": 0.8, "mrr": 0.55, "answer_passage_recall@10": 0.6}
    monkeypatch.setattr(retrieval_report, "build_retrievers", lambda docs, train_questions=None: {name: None})
    monkeypatch.setattr(retrieval_report, "evaluate_retrievers", lambda retrievers, questions, ks: {name: scores})
    monkeypatch.setattr(retrieval_report, "measure_scale", lambda *a: {"hybrid_p99_ms": 12.5, "peak_rss_gb": 2.25})
    retrieval_report.report(PROGRAM)
    assert_whole(pipe.text(), name, "answer_passage_recall@10", "recall@10", "hybrid p99 ms", "peak RSS GB")


# --- dspyc engine status (dspyc/cli.py) -------------------------------------------------------------------------


def test_the_engine_status_table_prints_whole(pipe, monkeypatch):
    from typer.testing import CliRunner

    from dspyc import cli, engine, engine_tuning

    pipe.use(cli, "out")
    st = SimpleNamespace(
        served_model=MODEL,
        key=MODEL,
        base_url="http://127.0.0.1:8400/v1",
        pid=123456,
        adapters=["rag-ft-3f2a9c1b7d6e", "agent-ft-0a1b2c3d4e5f"],
        dtype="bfloat16",
        lora_enabled=True,
        tuning={},
    )
    monkeypatch.setattr(engine, "engines", lambda s=None: [st])
    monkeypatch.setattr(engine, "served_rank", lambda st: 16)
    monkeypatch.setattr(engine, "served_targets", lambda st: {"q_proj", "v_proj", "k_proj", "o_proj"})
    monkeypatch.setattr(engine, "healthy", lambda url, timeout=2.0: True)
    cpu = {"model": "cpu", "cores": 2, "flags": [], "native_bf16": False}
    monkeypatch.setattr(engine_tuning, "cpu_summary", lambda: cpu)
    r = CliRunner().invoke(cli.app, ["engine", "status"])
    assert r.exit_code == 0, r.output
    assert_whole(
        pipe.text(),
        MODEL,
        "rag-ft-3f2a9c1b7d6e, agent-ft-0a1b2c3d4e5f",
        "on, rank ≤ 16, k_proj/o_proj/q_proj/v_proj",
        "http://127.0.0.1:8400/v1",
    )
