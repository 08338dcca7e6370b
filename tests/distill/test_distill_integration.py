"""The whole distillation, CI-sized, against the real engine: teacher traces on 2 inputs, a few real SFT and
DPO steps (PEFT + TRL), student versions in a private artifact store, then the DPO adapter served by the
running engine as a LoRA module (loaded at runtime) and compared with the base model."""

import json

import httpx
import pytest

from dspyc import artifacts, engine

pytestmark = pytest.mark.integration

# Overfits 2 examples in a few steps, so the adapter surely changes greedy output.
SFT = """kind: sft
lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
train: {max_steps: 4, learning_rate: 3.0e-3, batch_size: 2, max_length: 384, save_steps: 2}
min_score: 0.0
"""


@pytest.fixture(scope="module")
def distilled(live_engine, tmp_path_factory):
    from dspyc.distill.pipeline import distill
    from dspyc.settings import get_settings

    tmp = tmp_path_factory.mktemp("distill")
    (tmp / "sft_ci.yaml").write_text(SFT)
    s = get_settings().model_copy(update={"artifacts_root": tmp / "artifacts", "cache_dir": get_settings().cache_dir})
    result = distill(
        "tone", str(tmp / "sft_ci.yaml"), "dpo_tiny", sizes=(2, 0, 2), eval_threads=2, num_threads=2, track=False, s=s
    )
    return result, s


def test_students_are_versions_with_adapter_datasets_and_scores(distilled):
    result, s = distilled
    assert set(result["versions"]) == {"sft", "dpo"} and set(result["systems"]) == {
        "teacher",
        "student_sft",
        "student_dpo",
        "student_base",
    }
    d = artifacts.program_dir("tone", s) / str(result["versions"]["dpo"])
    m = artifacts.read_manifest("tone", result["versions"]["dpo"], s)  # verifies every file's hash
    assert m.kind == "student" and m.config["student"]["stage"] == "dpo" and m.config["prompt"] == "short"
    assert (d / "adapter" / "adapter_config.json").exists() and (d / "adapter" / "adapter_model.safetensors").exists()
    assert not (d / "adapter" / "model.safetensors").exists()  # an adapter, never a merged model
    sft_rows = [json.loads(line) for line in (d / "sft.jsonl").read_text().splitlines()]
    assert sft_rows and all("Kind regards" not in json.dumps(r["prompt"]) for r in sft_rows)  # the student's prompt
    pairs = [json.loads(line) for line in (d / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    assert m.config["student"]["sft_train"]["steps"] == 4 and m.config["student"]["dpo_train"]["losses"]
    teacher, student = result["systems"]["teacher"], result["systems"]["student_dpo"]
    assert student["prompt_tokens_per_call"] < teacher["prompt_tokens_per_call"]  # no guide, no demos
    assert student["lm_calls"] == 2 and 0.0 <= student["adherence"] <= 1.0
    base = result["systems"]["student_base"]  # the untuned base answers the same prompt
    assert base["prompt_tokens_per_call"] == student["prompt_tokens_per_call"] and base["cost_per_1k_calls_usd"] > 0
    assert m.config["student"]["decoding"] == {}  # no dev split here: greedy, recorded


def test_served_adapter_answers_differently_from_the_base_model(distilled):
    from dspyc.distill.student import base_model, serve
    from dspyc.loading import load_program

    result, s = distilled
    m = artifacts.read_manifest("tone", result["versions"]["dpo"], s)
    name = serve(m, s)
    state = engine.status(s, base_model(m))  # the student's base model's engine, with LoRA on
    assert state.lora_enabled and name in state.adapters
    models = httpx.get(f"{state.base_url}/models", headers={"Authorization": f"Bearer {s.lm_api_key}"}).json()
    assert name in [x["id"] for x in models["data"]]
    prompt = json.loads((artifacts.program_dir("tone", s) / str(m.version) / "sft.jsonl").read_text().splitlines()[0])[
        "prompt"
    ]

    def complete(model):
        r = httpx.post(
            f"{state.base_url}/chat/completions",
            timeout=300,
            headers={"Authorization": f"Bearer {s.lm_api_key}"},
            json={"model": model, "messages": prompt, "max_tokens": 24, "temperature": 0},
        )
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    assert complete(name) != complete(state.served_model)
    # The program itself, loaded from the store with its predictors on the student.
    student = load_program(
        f"tone@{m.version}", s=s.model_copy(update={"adapter_serving": "lora"})
    )  # dspyc.load: a student's predictors call its adapter
    assert student.rewrite.lm.model == f"openai/{name}"
    assert isinstance(student(text="our new office coffee machine is basically a disaster").rewrite, str)


def test_distill_table_rescores_the_stored_students(distilled):
    """`dspyc distill-table`: the same rows again from the stored versions, on the split they were distilled with."""
    from dspyc.distill.remeasure import remeasure

    result, s = distilled
    refs = [f"tone@{result['versions'][k]}" for k in ("sft", "dpo")]
    again = remeasure(refs, eval_threads=2, track=False, s=s)
    assert set(again["systems"]) == set(result["systems"])
    assert all(row["lm_calls"] == 2 for row in again["systems"].values())  # the 2 test examples, one call each


def test_the_prompt_pass_bootstraps_demos_on_the_teacher_engine_for_the_served_student(distilled):
    """BetterTogether's last step against the real engines: the program LM bootstraps demos on the student's own
    prompt (a metric that passes everything, so the count is known), and the student answers with them through
    its adapter."""
    import dataclasses

    from dspyc import registry
    from dspyc.distill.pipeline import prompt_pass
    from dspyc.distill.student import serve
    from dspyc.loading import load_program
    from dspyc.lm import build_lm
    from dspyc.optimizers import load_recipe

    result, s = distilled
    m = artifacts.read_manifest("tone", result["versions"]["sft"], s)
    serve(m, s)
    student = load_program(f"tone@{m.version}", s=s.model_copy(update={"adapter_serving": "lora"}))
    student_lm = student.rewrite.lm
    student.set_lm(None)  # the prompt pass runs the student under its LM by context, like the table
    spec = dataclasses.replace(registry.get("tone"), metric=lambda ex, pred, trace=None: True)
    train = [dspy_example(t) for t in ("the printer is broken again lol", "pls send the deck by fri")]
    prompted = prompt_pass(
        load_recipe("bootstrap"), student, student_lm, build_lm(s, temperature=0.0), train, spec, num_threads=2, seed=0
    )
    demos = prompted.rewrite.demos
    assert len(demos) == 2 and all(isinstance(d.rewrite, str) and d.rewrite for d in demos)
    assert student.rewrite.demos == []  # the stored student is not changed
    prompted.set_lm(student_lm)
    assert isinstance(prompted(text="meeting moved to 3, dont be late").rewrite, str)


def dspy_example(text: str):
    import dspy

    return dspy.Example(text=text).with_inputs("text")
