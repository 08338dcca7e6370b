"""Compile into weights, CI-sized, against the real engine: `compile agent finetune_tiny` on the pinned model traces
the program over 6 BFCL items, trains a LoRA on the program LM for 3 real steps (PEFT + TRL), loads it into the
engine at runtime, scores it beside the uncompiled program, and stores it as an adapter that `dspyc.load` serves."""

import json

import pytest

from dspyc import artifacts, compiler, engine, loading, registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def finetuned(live_engine, tmp_path_factory):
    """A cold DSPy cache of its own, so every call reaches the engine and is billed (cache hits are counted apart)."""
    import dspy

    from dspyc.settings import get_settings

    before = dspy.cache
    dspy.configure_cache(disk_cache_dir=str(tmp_path_factory.mktemp("dspy-cache")))

    s = get_settings().model_copy(update={"artifacts_root": tmp_path_factory.mktemp("artifacts")})
    with pytest.MonkeyPatch.context() as mp:
        # 3 dev items cannot show a gain beyond noise; the keep rule has its own tests, this one tests what is kept
        mp.setattr(compiler, "keep", lambda *a, **k: ("compiled", ""))
        manifest = compiler.compile_program("agent", "finetune_tiny", sizes=(2, 1, 1), s=s)
    yield manifest, s
    dspy.cache = before


def assert_calls_area(program) -> None:
    """One request through the loaded program: it answers with calls to the one listed function."""
    pred = program(
        question="What is the area of a circle of radius 3?",
        functions=["area_circle(radius: integer) - area of a circle"],
        schemas=[
            {
                "name": "area_circle",
                "description": "area of a circle",
                "parameters": {"type": "dict", "properties": {"radius": {"type": "integer"}}, "required": ["radius"]},
            }
        ],
    )
    assert pred.calls and all(c["name"] == "area_circle" for c in pred.calls)


def test_the_version_is_an_adapter_on_the_program_lm_never_a_merged_model(finetuned):
    m, s = finetuned
    assert m.adapter is not None and m.adapter.base_model == s.lm_model and m.adapter.lora_name.startswith("agent-ft-")
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(m.files)
    assert not any(f.endswith("model.safetensors") and not f.startswith("adapter/") for f in m.files)
    config = json.loads(
        (artifacts.program_dir("agent", s) / str(m.version) / "adapter" / "adapter_config.json").read_text()
    )
    assert config["layers_to_transform"] == [28, 29]  # SmolLM2's top 2 of 30 layers, as the recipe asks
    state = json.loads((artifacts.program_dir("agent", s) / str(m.version) / artifacts.PROGRAM_FILE).read_text())
    assert all(v.get("lm") is None for v in state.values() if isinstance(v, dict) and "demos" in v)  # no engine URL


def test_the_compile_table_records_training_and_per_call_cost(finetuned):
    m, _ = finetuned
    training = m.usage["training"]
    assert training["steps"] == 3 and 0 < training["rows"] <= 6
    assert training["train_wall_s"] > 0 or training["reused"]  # an earlier run of this test trained the same rows
    assert training["gold_rows"] > 0  # BFCL's labels joined the program's passing traces
    # the agent's finetune_config: the program under it without the adapter is scored too
    assert m.metrics["untrained_config"] == registry.get("agent").finetune_config
    assert set(m.metrics["untrained"]) == {"dev", "test"} and "metric" in m.metrics["untrained"]["test"]
    for which in ("baseline", "compiled"):
        cost = m.metrics["cost"][which]["test"]
        assert cost["lm_calls"] >= 3 and cost["cached_calls"] == 0
        assert cost["prompt_tokens_per_call"] > 50 and cost["latency_p50_s"] > 0


def test_load_serves_the_program_through_its_adapter(finetuned):
    m, s = finetuned
    s = s.model_copy(update={"adapter_serving": "lora"})
    program = loading.load_program(f"agent@{m.version}", s=s)
    assert {p.lm.model for _, p in program.named_predictors()} == {f"openai/{m.adapter.lora_name}"}
    assert m.adapter.lora_name in engine.status(s).adapters  # loaded at runtime into the program LM's engine
    assert_calls_area(program)


def test_a_merged_copy_is_a_hash_checked_cache_and_serves_the_same_program(finetuned):
    """DSPYC_ADAPTER_SERVING=merged: base + adapter merged once into the cache (never the store), checked on every
    use and rebuilt when damaged, served by an engine of its own without LoRA."""
    from dspyc import merge
    from dspyc.distill.student import adapter_path

    m, s = finetuned
    folder = merge.merged_copy(adapter_path(m, s), m.adapter.base_model, s)
    digest = artifacts.sha256_file(adapter_path(m, s) / "adapter_model.safetensors")
    assert merge.is_valid(folder, digest) and (folder / "config.json").exists()
    assert not (artifacts.program_dir("agent", s) / str(m.version) / "model.safetensors").exists()
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    assert not merge.is_valid(folder, digest)
    assert merge.is_valid(merge.merged_copy(adapter_path(m, s), m.adapter.base_model, s), digest)  # rebuilt
    merged = s.model_copy(update={"adapter_serving": "merged"})
    program = loading.load_program(f"agent@{m.version}", s=merged)
    assert {p.lm.model for _, p in program.named_predictors()} == {f"openai/{folder.name.lower()}"}
    assert_calls_area(program)
    engine.down(merged, model=str(folder))
