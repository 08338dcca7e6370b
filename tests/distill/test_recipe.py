import pytest

from dspyc.distill import recipe as R
from dspyc.errors import DspycError


@pytest.mark.parametrize("name", ["sft_r16_qv", "sft_agent", "sft_tiny", "sft_qlora"])
def test_shipped_sft_recipes_validate(name):
    r = R.load(name, "sft")
    assert r.kind == "sft" and r.name == name and r.lora.target_modules


@pytest.mark.parametrize("name", ["dpo_default", "dpo_tiny"])
def test_shipped_dpo_recipes_validate(name):
    r = R.load(name, "dpo")
    assert r.kind == "dpo" and r.samples >= 2


def test_roadmap_recipe_is_r16_alpha32_on_q_v():
    r = R.load("sft_r16_qv", "sft")
    assert (r.lora.r, r.lora.alpha, r.lora.target_modules) == (16, 32, ["q_proj", "v_proj"])
    assert r.train.gradient_checkpointing is False


def test_the_agents_recipe_is_the_roadmaps_plus_gold_labels():
    """Same LoRA and training as sft_r16_qv; only the agent's data differs (gold labels, repeats kept once)."""
    import importlib

    base, agent = (
        R.load("sft_r16_qv", "sft"),
        R.load(importlib.import_module("programs.agent").PROGRAM.sft_recipe, "sft"),
    )
    assert (agent.lora, agent.train) == (base.lora, base.train)
    assert (agent.gold_extra, agent.dedupe_rows) == (90, True) and (base.gold_extra, base.dedupe_rows) == (0, False)


def test_available_lists_by_kind():
    assert {"sft_r16_qv", "sft_tiny"} <= set(R.available("sft"))
    assert "dpo_default" in R.available("dpo") and "sft_tiny" not in R.available("dpo")


@pytest.mark.parametrize(
    "body, match",
    [
        ("lora: {r: 16, alpah: 32}\n", "field 'lora.alpah'"),
        ("lora: {target_modules: [q_proj, wq]}\n", "unknown module"),
        ("lora: {r: 128}\n", "field 'lora.r'"),
        ("train: {precision: fp16}\n", "field 'train.precision'"),
        ("kind: dpo\n", "field 'kind'"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, body, match):
    f = tmp_path / "sft_bad.yaml"
    f.write_text(body)
    with pytest.raises(DspycError, match=match) as info:
        R.load(str(f), "sft")
    assert "\n" not in str(info.value)


def test_unknown_recipe_names_the_available_ones():
    with pytest.raises(DspycError, match="unknown sft recipe 'nope'.*sft_tiny"):
        R.load("nope", "sft")


def test_qlora_refused_without_cuda(monkeypatch):
    from dspyc.distill import train

    monkeypatch.setattr(train, "_cuda", lambda: False)
    with pytest.raises(DspycError, match="QLoRA .* needs CUDA"):
        train.load_base("/nonexistent", R.load("sft_qlora", "sft").train)
