"""docs/results.md's benchmark tables are rendered from the records in docs/bench/ (`python -m dspyc.results_doc`),
never retyped: these tests keep the two in step."""

from __future__ import annotations

import shutil

from dspyc.results_doc import BLOCK, DOC, ROOT, main, render


def test_results_doc_is_in_step_with_docs_bench(capsys):
    assert main(["--check"]) == 0, capsys.readouterr().out + "regenerate: python -m dspyc.results_doc"
    used = {m.group(2) for m in BLOCK.finditer(DOC.read_text())}
    records = {str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "bench").glob("*.json")}
    assert records <= used, (
        f"records in docs/bench that no table in docs/results.md is generated from: {records - used}"
    )


def test_a_table_edited_by_hand_is_found(tmp_path, capsys):
    doc = tmp_path / "results.md"
    shutil.copy(DOC, doc)
    text = doc.read_text()
    assert "| q/v, every layer | 1.08M | 75.3 |" in text
    doc.write_text(text.replace("| q/v, every layer | 1.08M | 75.3 |", "| q/v, every layer | 1.08M | 70.0 |", 1))
    assert main(["--check"], doc=doc) == 1
    out = capsys.readouterr().out
    assert "2026-12-06-train-qwen2.5-coder-0.5b-instruct-bf16.json is out of step" in out
    assert "lora-adapter" not in out and "fp32" not in out  # only the edited block is named
    assert doc.read_text().count("70.0") == 1  # --check changes nothing
    assert main([], doc=doc) == 0 and main(["--check"], doc=doc) == 0  # re-rendering puts it back
    assert doc.read_text() == DOC.read_text()


def test_a_synthetic_record_renders_its_rows():
    cpu = {"model": "Test CPU", "cores": 4, "flags": ["avx2", "fma"], "native_bf16": False}
    train = {
        "model": "tiny",
        "batch_size": 2,
        "max_length": 64,
        "steps": 1,
        "threads": 4,
        "cpu": cpu,
        "created": "2026-01-01T00:00:00+00:00",
        "rows": [
            {
                "shape": "q/v, every layer",
                "s_per_step": 1.234,
                "s_per_row": 0.617,
                "tokens_per_s": 103.7,
                "trainable_params": 1_500_000,
                "precision": "fp32",
                "peak_rss_gb": 2.04,
            },
            {"shape": "all linear, every layer", "error": "killed"},
        ],
    }
    out = render(train, {"q/v, every layer": "**q/v**"}, "docs/bench/x.json")
    assert "\n| **q/v** | 1.50M | 1.2 | 0.62 | 104 | 2.0 GB |\n" in out
    assert "\n| all linear, every layer | — | killed | — | — | — |\n" in out
    assert "From `docs/bench/x.json` (`dspyc bench train`, 2026-01-01T00:00:00+00:00): tiny, fp32" in out
    assert "CPU: 4-core Test CPU, `avx2 fma` (bf16 emulated)." in out

    lora = {
        "base_model": "tiny",
        "cpu": cpu,
        "rows": [
            {
                "system": "merged",
                "prompt_tokens_per_s": 355.6,
                "p50_latency_s": 4.231,
                "decode_tokens_per_s": 127.06,
                "requests": 3,
            }
        ],
    }
    assert "\n| merged | 356 | 4.23 | 127.1 |\n" in render(lora)


def test_a_retrieval_curve_renders_one_row_per_corpus_size():
    from dspyc import results_doc

    point = {
        "corpus": "sample 2000",
        "passages": 2000,
        "titles": 1900,
        "scores": {"bm25": {"recall@5": 0.5}, "hybrid": {"recall@5": 0.75}},
        "scale": {"hybrid_p50_ms": 30.0, "hybrid_p99_ms": 90.0, "bm25_index_mb": 1.0, "vectors_mb": 3.0},
    }
    record = {"dataset": "d", "split": "dev", "questions": 30, "seed": 0, "points": [point], "cpu": {"cores": 2}}
    body = results_doc.render(record, source="docs/bench/x.json")
    assert "| 2,000 (1,900) | 0.500 | 0.750 | 30.0 / 90.0 | – | 1.0 | 3.0 | 0.0 |" in body
    assert "`dspyc eval-retrieval`" in body and "d dev, 30 questions" in body
