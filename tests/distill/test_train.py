"""Resuming a finished training run: it is reused, never trained past its last step."""

import json

from dspyc.distill import pipeline
from dspyc.distill.recipe import DPORecipe, TrainSpec
from dspyc.distill.train import ADAPTER_FILES, RESULT_FILE, finished

SPEC = TrainSpec(precision="fp32")


def checkpoint(work, step, max_steps, weights=b"w"):
    d = work / "checkpoints" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    for f in ADAPTER_FILES:
        (d / f).write_bytes(weights)
    log = [{"step": i, "loss": 1.0 / i} for i in range(1, step + 1)]
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps, "log_history": log}))
    return d


def test_no_run_and_an_unfinished_run_are_trained(tmp_path):
    assert finished(tmp_path, SPEC) is None
    checkpoint(tmp_path, 2, 3)
    assert finished(tmp_path, SPEC) is None


def test_a_run_killed_after_its_final_checkpoint_takes_its_adapter_from_it(tmp_path):
    checkpoint(tmp_path, 2, 3, weights=b"old")
    checkpoint(tmp_path, 3, 3, weights=b"final")
    out = finished(tmp_path, SPEC)
    assert out["steps"] == 3 and out["train_runtime_s"] is None
    assert out["losses"] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == b"final"
    assert (tmp_path / RESULT_FILE).exists()


def test_a_saved_run_returns_its_result(tmp_path):
    (tmp_path / "adapter").mkdir()
    for f in ADAPTER_FILES:
        (tmp_path / "adapter" / f).write_bytes(b"a")
    (tmp_path / RESULT_FILE).write_text(json.dumps({"adapter": "x", "steps": 42, "train_runtime_s": 1513.2}))
    assert finished(tmp_path, SPEC)["steps"] == 42
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()  # an adapter lost since: train again
    assert finished(tmp_path, SPEC) is None


def test_sampled_candidates_are_reused_only_for_the_same_prompts_and_settings(tmp_path):
    cache, dpo, prompts = tmp_path / "samples.json", DPORecipe(), [[{"role": "user", "content": "q"}]]
    assert pipeline._cached_samples(cache, prompts, dpo, 0) is None
    pipeline._store_samples(cache, prompts, dpo, 0, [["a", "b"]])
    assert pipeline._cached_samples(cache, prompts, dpo, 0) == [["a", "b"]]
    assert pipeline._cached_samples(cache, prompts, dpo, 1) is None
    assert pipeline._cached_samples(cache, prompts, dpo.model_copy(update={"temperature": 0.5}), 0) is None
    assert pipeline._cached_samples(cache, [[{"role": "user", "content": "other"}]], dpo, 0) is None


def test_length_grouped_batches_are_a_recipe_switch(tmp_path):
    from dspyc.distill.recipe import TrainSpec
    from dspyc.distill.train import _common_args

    assert _common_args(TrainSpec(), tmp_path)["train_sampling_strategy"] == "random"
    assert _common_args(TrainSpec(group_by_length=True), tmp_path)["train_sampling_strategy"] == "group_by_length"


def test_the_heap_is_trimmed_after_every_training_step(monkeypatch):
    from types import SimpleNamespace

    from dspyc.distill import train

    trims = []
    monkeypatch.setattr(train, "trim_heap", lambda: trims.append(1))
    cb = train.trim_heap_callback()
    for step in (1, 2, 3):
        cb.on_step_end(None, SimpleNamespace(global_step=step), None)
    assert len(trims) == 3


def test_a_trained_run_keeps_its_peak_memory_for_a_compile_that_reuses_it(tmp_path):
    from types import SimpleNamespace

    from dspyc.distill.train import _train_and_save

    class Model:
        def save_pretrained(self, dest, selected_adapters):
            for f in ADAPTER_FILES:
                (tmp_path / "adapter" / f).write_bytes(b"w")

    trainer = SimpleNamespace(
        model=Model(),
        state=SimpleNamespace(log_history=[{"step": 1, "loss": 0.5}]),
        train=lambda resume_from_checkpoint: SimpleNamespace(global_step=1, metrics={"train_runtime": 2.0}),
    )
    out = _train_and_save(trainer, "SFT", tmp_path, SPEC)
    assert out["peak_rss_gb"] > 0 and finished(tmp_path, SPEC)["peak_rss_gb"] == out["peak_rss_gb"]
