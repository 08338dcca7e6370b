"""Compile into weights, without an engine: the recipe surface, the training rows, the chain of stages, the costs."""

from types import SimpleNamespace

import dspy
import pytest

from dspyc import compiler
from dspyc.distill import traces as T
from dspyc.errors import DspycError
from dspyc.finetune import CompileContext, Finetune
from dspyc.optimizers import Recipe, build_optimizer, load_recipe
from dspyc.registry import ProgramSpec


def metric(ex, pred, trace=None):
    ok = pred.answer == ex.answer
    return ok if trace is not None else float(ok)


def _spec(**hooks) -> ProgramSpec:
    return ProgramSpec(
        name="qa",
        build=lambda d, c: dspy.Predict("question -> answer"),
        load_data=lambda n, s: None,
        metric=metric,
        report=lambda results: {},
        dataset="x",
        **hooks,
    )


def _context(spec: ProgramSpec, outside=()) -> CompileContext:
    data = SimpleNamespace(outside=lambda *splits: list(outside))
    return CompileContext(program="qa", spec=spec, dataset=data, settings=None)


TRAIN = [
    dspy.Example(id=f"t{i}", question=f"Capital of country {i}?", answer="Paris").with_inputs("question")
    for i in range(3)
]


def test_shipped_weights_recipes_load_and_validate():
    ft = load_recipe("finetune")
    assert ft.optimizer == "Finetune" and ft.params["lora"].get("layers") is None  # every layer
    chain = load_recipe("better_together")
    assert chain.sequence == ["bootstrap", "finetune", "bootstrap"] and not chain.optimizer
    with pytest.raises(DspycError, match="params field 'lora.r'"):
        build_optimizer(
            Recipe(name="x", optimizer="Finetune", params={"lora": {"r": 0}}), metric, context=_context(_spec())
        )


def test_finetune_needs_the_compile_context():
    with pytest.raises(DspycError, match="runs inside `dspyc compile`"):
        build_optimizer(load_recipe("finetune"), metric)


def test_a_sequence_names_only_its_stages(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sequence: [bootstrap]\noptimizer: BootstrapFewShot\n")
    with pytest.raises(DspycError, match="names only its stages"):
        load_recipe(str(bad))
    nested = tmp_path / "nested.yaml"
    nested.write_text("sequence: [better_together]\n")
    with pytest.raises(DspycError, match="is itself a sequence"):
        load_recipe(str(nested))
    missing = tmp_path / "missing.yaml"
    missing.write_text("sequence: [bootstrap, nope]\n")
    with pytest.raises(DspycError, match="unknown recipe 'nope'"):
        load_recipe(str(missing))


def test_rows_are_passing_traces_and_gold_labels_never_dev_or_test():
    """Passing traces of the program over train, and gold traces of train + `gold_extra` outside examples."""
    gold = lambda ex: [{"predictor": "self", "inputs": {"question": ex.question}, "outputs": {"answer": ex.answer}}]  # noqa: E731
    extra = [dspy.Example(id="x1", question="Capital of Spain?", answer="Madrid").with_inputs("question")]
    opt = Finetune(
        metric, _context(_spec(gold_trace=gold), outside=extra), gold_extra=1, dedupe_rows=True, num_threads=1
    )
    lm = dspy.utils.DummyLM([{"answer": "Paris"}, {"answer": "Lyon"}, {"answer": "Paris"}], adapter=dspy.JSONAdapter())
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        rows, by_source = opt.training_rows(dspy.Predict("question -> answer"), TRAIN)
    # 2 passing traces; the gold rows of those 2 examples repeat them verbatim and are kept once
    assert by_source == {"teacher rows": 2, "gold rows": 2}
    assert {r.example_id for r in rows} == {"t0", "t1", "t2", "x1"}
    assert all(r.completion[0]["content"] != '{"answer":"Lyon"}' for r in rows)  # the failing trace taught nothing


def test_rows_are_capped_by_a_seeded_sample():
    opt = Finetune(metric, _context(_spec()), max_rows=2, num_threads=1, seed=3)
    lm = dspy.utils.DummyLM([{"answer": "Paris"}] * 3, adapter=dspy.JSONAdapter())
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        rows, _ = opt.training_rows(dspy.Predict("question -> answer"), TRAIN)
    assert len(rows) == 2


def test_no_rows_is_a_one_line_error():
    opt = Finetune(metric, _context(_spec()), num_threads=1)
    with dspy.context(
        lm=dspy.utils.DummyLM([{"answer": "Rome"}] * 3, adapter=dspy.JSONAdapter()), adapter=dspy.JSONAdapter()
    ):
        with pytest.raises(DspycError, match="no finetune rows"):
            opt.training_rows(dspy.Predict("question -> answer"), TRAIN)


def test_a_row_holds_the_prompt_the_program_sends_demos_and_plain_text_included():
    from dspyc.adapter import ConstrainedJSONAdapter

    adapter = ConstrainedJSONAdapter()
    pred = dspy.Predict("question -> answer", reply="text")
    pred.demos = [dspy.Example(question="Capital of Italy?", answer="Rome")]
    prompt, completion = T.chat_row(adapter, pred, {"question": "Capital of France?"}, {"answer": "Paris"})
    sent = adapter._text_request("answer", 200, {}, pred.signature, pred.demos, {"question": "Capital of France?"})
    assert prompt == sent["messages"] and completion == [{"role": "assistant", "content": "Paris"}]
    assert any(m["content"] == "Rome" for m in prompt)  # the demo is part of what the adapter learns to read
    json_pred = dspy.Predict("question -> answer")
    prompt, completion = T.chat_row(adapter, json_pred, {"question": "Capital of France?"}, {"answer": "Paris"})
    assert completion[0]["content"] == '{"answer":"Paris"}' and prompt == [
        {"role": m["role"], "content": m["content"]}
        for m in adapter.format(json_pred.signature, demos=[], inputs={"question": "Capital of France?"})
    ]


def test_rag_relabels_only_answer_steps_whose_passages_hold_the_gold_answer():
    from programs import rag

    ex = dspy.Example(question="Where is the Louvre?", answer="Paris")
    call = lambda p, i, o: T.PredictorCall(predictor=p, inputs=i, outputs=o)  # noqa: E731
    q = call("generate_query", {"question": ex.question, "passages": ["x"]}, {"query": "Louvre"})
    held = call("answer", {"question": ex.question, "passages": ["Louvre: a museum in Paris."]}, {"answer": "Lyon"})
    not_held = call("answer", {"question": ex.question, "passages": ["Louvre: a museum."]}, {"answer": "Paris"})
    # the run failed (its last answer, Lyon): the grounded answer step is taught the gold answer, no query step
    assert rag.relabel(ex, [q, not_held, held]) == [
        {"predictor": "answer", "inputs": held.inputs, "outputs": {"answer": "Paris"}}
    ]
    # the run passed: its query step joins; the answer step over passages without "Paris" is never taught
    out = rag.relabel(ex, [q, not_held])
    assert [c["predictor"] for c in out] == ["generate_query"]


def test_rag_teaches_a_comparison_question_with_its_options_in_both_orders():
    from programs import rag

    q = "Which composer was born first, Antonin Dvorak or Giuseppe Verdi?"
    assert rag.swap_options(q, "Giuseppe Fortunino Francesco Verdi") == (
        "Which composer was born first, Giuseppe Verdi or Antonin Dvorak?"
    )
    assert rag.swap_options("Between Iain Banks and Irwin Shaw, which writer wrote more?", "Irwin Shaw") == (
        "Between Irwin Shaw and Iain Banks, which writer wrote more?"
    )
    # not one of the two options, or not two options: no swap (it could change the right answer)
    assert rag.swap_options(q, "Puccini") is None
    assert rag.swap_options("Where is the Louvre, Paris?", "Paris") is None
    ex = dspy.Example(question=q, answer="Verdi")
    held = T.PredictorCall(predictor="answer", inputs={"question": q, "passages": ["Verdi: born 1813."]}, outputs={})
    assert [r["inputs"]["question"] for r in rag.relabel(ex, [held])] == [
        q,
        "Which composer was born first, Giuseppe Verdi or Antonin Dvorak?",
    ]


def test_a_chain_stops_at_the_stage_that_stops_helping(monkeypatch):
    ran = []

    def fake_stage(recipe, program, splits, spec, context, seed):
        ran.append(recipe.name)
        return compiler.Compiled(program=f"{program}+{recipe.name}", trials=[len(ran)])

    dev = {"p+bootstrap": 0.5, "p+bootstrap+finetune": 0.7, "p+bootstrap+finetune+bootstrap": 0.7}
    monkeypatch.setattr(compiler, "run_stage", fake_stage)
    monkeypatch.setattr(compiler, "evaluate", lambda program, *a: compiler.Evaluation({"metric": dev[program]}, []))
    ctx = SimpleNamespace(settings=SimpleNamespace(num_threads=1))
    out = compiler.run_recipe(load_recipe("better_together"), "p", {"dev": []}, None, ctx, 0, baseline_dev=0.4)
    assert ran == ["bootstrap", "finetune", "bootstrap"]
    assert out.program == "p+bootstrap+finetune" and out.trials == [1, 2]  # the last stage did not raise dev
    assert [(s["recipe"], s["kept"]) for s in out.stages] == [
        ("bootstrap", True),
        ("finetune", True),
        ("bootstrap", False),
    ]
    ran.clear()
    out = compiler.run_recipe(load_recipe("better_together"), "p", {"dev": []}, None, ctx, 0, baseline_dev=0.6)
    assert ran == ["bootstrap"] and out.program == "p"  # the first stage fell below the uncompiled program: stop


def test_call_costs_count_billed_calls_and_leave_cache_hits_apart():
    costs = compiler.CallCosts()
    for usage in (
        {"prompt_tokens": 100, "completion_tokens": 10},
        {"prompt_tokens": 300, "completion_tokens": 30},
        None,
    ):
        costs._local.job = "job"
        costs.on_lm_start("id", None, {})
        if usage:
            costs.bill(usage)
        costs.on_lm_end("id", None, None)
    out = costs.summary("job")
    assert out["lm_calls"] == 3 and out["cached_calls"] == 1
    assert out["prompt_tokens_per_call"] == 200 and out["output_tokens_per_call"] == 20
    assert costs.summary("other") == {}
    assert compiler._cost_cell({"lm_calls": 2, "cached_calls": 2}, "latency_p50_s") == "cached"


def test_a_stored_program_names_no_engine():
    p = dspy.Predict("question -> answer")
    p.lm = dspy.LM("openai/qa-ft-abc", api_base="http://127.0.0.1:8401/v1")
    assert compiler.without_lm(p).lm is None and p.lm is not None


def test_lora_on_the_top_layers_only():
    from dspyc.distill.recipe import LoraSpec
    from dspyc.distill.train import lora_config

    assert lora_config(LoraSpec(layers=8), num_layers=24).layers_to_transform == list(range(16, 24))
    assert lora_config(LoraSpec(), num_layers=24).layers_to_transform is None
    assert lora_config(LoraSpec(layers=30), num_layers=24).layers_to_transform is None  # more than it has: all


def test_min_steps_raises_the_epochs_of_few_rows_only():
    """118 rows at batch 8 fill 15 steps: 2 epochs for 30. 421 rows fill 53: the recipe's 1 epoch stands."""
    opt = Finetune(metric, _context(_spec()), min_steps=30, train={"epochs": 1, "batch_size": 8})
    assert opt.train_spec(118).epochs == 2.0
    assert opt.train_spec(421).epochs == 1
    assert Finetune(metric, _context(_spec()), train={"epochs": 1}).train_spec(118).epochs == 1
    fixed = Finetune(metric, _context(_spec()), min_steps=30, train={"max_steps": 4})
    assert fixed.train_spec(10).max_steps == 4 and fixed.train_spec(10).epochs == fixed.params.train.epochs


def test_a_token_budget_keeps_a_seeded_sample_that_fits(monkeypatch):
    """Rows all fit: kept as they are. They do not: a seeded sample of whole rows within budget / epochs."""
    import transformers

    class Tok:  # one token per character of the rendered chat
        def apply_chat_template(self, messages, tokenize=False):
            return "".join(m["content"] for m in messages)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(text)}

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tok())
    monkeypatch.setattr("dspyc.models.resolve_lm", lambda *a, **k: "model")
    rows = [
        T.SFTRow(
            example_id=str(i),
            predictor="p",
            score=1.0,
            prompt=[{"role": "user", "content": "x" * 9}],
            completion=[{"role": "assistant", "content": str(i)}],
        )
        for i in range(10)
    ]  # 10 tokens each
    ctx = _context(_spec())
    ctx.settings = SimpleNamespace(lm_model="m")
    fits = Finetune(metric, ctx, max_train_tokens=200, train={"epochs": 2})
    assert fits.within_budget(rows) == rows
    tight = Finetune(metric, ctx, max_train_tokens=100, train={"epochs": 2}, seed=1)
    kept = tight.within_budget(rows)
    assert (
        len(kept) == 5
        and kept != rows[:5]
        and kept == Finetune(metric, ctx, max_train_tokens=100, train={"epochs": 2}, seed=1).within_budget(rows)
    )


def test_long_rows_train_in_micro_batches_of_the_same_effective_batch():
    """rag's ~1,100-token rows at batch 8 were killed for memory: a step keeps its batch, split to fit the tokens."""
    from dspyc.distill.recipe import TrainSpec, fit_batch

    spec = TrainSpec(batch_size=8, max_batch_tokens=4096)
    shapes = {
        n: (s.batch_size, s.gradient_accumulation_steps) for n in (300, 700, 1100, 5000) for s in [fit_batch(spec, n)]
    }
    assert shapes == {300: (8, 1), 700: (4, 2), 1100: (2, 4), 5000: (1, 8)}
    assert fit_batch(TrainSpec(batch_size=8), 5000).batch_size == 8  # no bound: as the recipe says
    # fp32 activations take twice the memory: half the tokens a micro-batch
    assert fit_batch(spec, 700, "fp32").batch_size == 2 and fit_batch(spec, 700, "bf16").batch_size == 4
    assert fit_batch(spec, 300, "fp32").max_batch_tokens == 2048
    assert (
        fit_batch(TrainSpec(batch_size=6, gradient_accumulation_steps=2, max_batch_tokens=4096), 1100).model_dump() | {}
        == TrainSpec(batch_size=3, gradient_accumulation_steps=4, max_batch_tokens=4096).model_dump()
    )


def test_a_merged_copy_not_kept_gives_its_engine_back(monkeypatch, tmp_path):
    """After agent@2 (kept uncompiled) the merged copy's engine held ~7 GB until stopped by hand."""
    from dspyc import engine, merge
    from dspyc.finetune import WeightsResult, release_adapter_lm
    from dspyc.settings import Settings

    stopped = []
    monkeypatch.setattr(engine, "down", lambda s, model=None: stopped.append(model) or True)
    monkeypatch.setattr(merge, "merged_copy", lambda adapter, base, s: tmp_path / f"merged-of-{base}")
    w = WeightsResult(
        adapter_dir=str(tmp_path),
        lora_name="a",
        base_model="qwen",
        rows=1,
        rows_by_source={},
        dataset_version="v",
        epochs=1,
        steps=1,
        train_wall_s=1.0,
        precision="bf16",
        lora={"r": 16},
    )
    release_adapter_lm(Settings(adapter_serving="lora"), w)
    assert stopped == []  # the adapter lives on the base engine, which the compile keeps using
    release_adapter_lm(Settings(adapter_serving="merged", lm_backend="engine"), w)
    assert stopped == [str(tmp_path / "merged-of-qwen")]


def test_a_finetune_config_rewires_the_program_it_trains_and_serves(monkeypatch, tmp_path):
    """A program's `finetune_config` (the agent's count-first split) is what the adapter trains under and what the
    version records; a predictor whose fields did not change keeps the demos a prompt stage before it gave it."""
    from dspyc import finetune as F

    built: list[dict] = []

    def build(data, config):
        built.append(config)
        return dspy.Predict("question -> count, answer" if config.get("counted") else "question -> answer")

    spec = _spec(finetune_config={"counted": True})
    spec.build = build
    ctx = _context(spec)
    from dspyc.settings import Settings

    ctx.config, ctx.settings = {"k": 1}, Settings()
    opt = Finetune(metric, ctx, num_threads=1)
    trained_on = []
    monkeypatch.setattr(Finetune, "training_rows", lambda self, prog, train: trained_on.append(prog) or ([], {}))
    monkeypatch.setattr(T, "write_dataset", lambda *a: ("v", tmp_path))
    monkeypatch.setattr(
        Finetune, "train", lambda self, rows, v, spec: {"adapter": str(tmp_path), "steps": 1, "precision": "bf16"}
    )
    monkeypatch.setattr(F, "adapter_lm", lambda s, w: dspy.utils.DummyLM([]))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    compiled = opt.compile(dspy.Predict("question -> answer"), trainset=TRAIN)
    assert built == [{"k": 1, "counted": True}] and "count" in trained_on[0].signature.output_fields
    assert compiled.searched_config == {"counted": True}
    assert "count" in opt.untrained.signature.output_fields and opt.untrained.lm is None  # scored without the adapter

    before = dspy.Predict("question -> answer")
    before.demos = [dspy.Example(question="q", answer="a")]
    assert F.rewire(before, dspy.Predict("question -> answer")).demos == before.demos
    assert F.rewire(before, dspy.Predict("question -> count, answer")).demos == []
