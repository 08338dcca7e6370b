"""LoRA SFT (TRL `SFTTrainer`) and DPO (TRL `DPOTrainer`, continuing from the SFT adapter), with PEFT.

Runs on CPU (fp32, or bf16 where the CPU has it natively) and on CUDA; QLoRA (bitsandbytes 4-bit) on CUDA.
Checkpoints go to a folder keyed by the run's inputs, so rerunning a killed run resumes it. The result is
always an adapter folder (adapter_config.json + adapter_model.safetensors), never a merged model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dspyc.artifacts import write_json_atomic
from dspyc.console import console as make_console
from dspyc.distill.recipe import DPORecipe, LoraSpec, SFTRecipe, TrainSpec, fit_batch
from dspyc.engine_tuning import peak_rss_gb
from dspyc.errors import DspycError

console = make_console(stderr=True)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def precision(spec: TrainSpec) -> str:
    """fp32 or bf16: "auto" picks bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere (emulated bf16 is slow)."""
    if spec.precision != "auto":
        return spec.precision
    from dspyc.engine_tuning import has_native_bf16

    return "bf16" if _cuda() or has_native_bf16() else "fp32"


def load_base(model_path: str, spec: TrainSpec):
    """(model, tokenizer) for training; 4-bit when the recipe asks for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if precision(spec) == "bf16" else torch.float32}
    if spec.quantization == "4bit":
        if not _cuda():
            raise DspycError("QLoRA (quantization: 4bit) needs CUDA; use a recipe without it on CPU (e.g. sft_r16_qv)")
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise DspycError("QLoRA needs bitsandbytes: pip install bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if spec.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    return model, tok


def lora_config(spec: LoraSpec, num_layers: int | None = None):
    """PEFT's LoraConfig for a recipe; `num_layers` (the model's decoder depth) places `spec.layers` at the top."""
    from peft import LoraConfig

    top = None
    if spec.layers is not None and num_layers is not None and spec.layers < num_layers:
        top = list(range(num_layers - spec.layers, num_layers))
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        layers_to_transform=top,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _common_args(spec: TrainSpec, out_dir: Path) -> dict[str, Any]:
    bf16 = precision(spec) == "bf16"
    return dict(
        output_dir=str(out_dir),
        num_train_epochs=spec.epochs,
        max_steps=spec.max_steps,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        learning_rate=spec.learning_rate,
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=spec.gradient_checkpointing,
        save_strategy="steps",
        save_steps=spec.save_steps,
        save_total_limit=2,
        logging_steps=spec.logging_steps,
        report_to=[],
        seed=spec.seed,
        disable_tqdm=True,
        use_cpu=not _cuda(),
        dataloader_num_workers=0,
        max_length=spec.max_length,
        train_sampling_strategy="group_by_length" if spec.group_by_length else "random",
    )


def _last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


def progress_callback(label: str):
    """A rich progress bar over optimizer steps that shows the latest loss (TrainerCallback)."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = None

        def on_train_begin(self, args, state, control, **kw):
            self.progress.start()
            self.task = self.progress.add_task(label, total=state.max_steps, completed=state.global_step, loss="")

        def on_step_end(self, args, state, control, **kw):
            self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.progress.update(self.task, loss=f"loss {logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            self.progress.stop()

    return RichProgress()


def trim_heap_callback():
    """Trim the heap after every optimizer step (TrainerCallback). Each step's activations differ in size
    (unpadded batches) and glibc keeps what they freed: untrimmed, the agent's all-linear LoRA SFT grew to
    17.7 GB by step 66 and was OOM-killed; trimmed, it stayed at 5-11 GB."""
    from transformers import TrainerCallback

    class TrimHeap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            trim_heap()

    return TrimHeap()


def _losses(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """Loss per logged step, from a trainer's state (a resumed run restores it from the checkpoint)."""
    return [(int(h["step"]), float(h["loss"])) for h in log_history if "loss" in h and "step" in h]


RESULT_FILE = "result.json"


def finished(work_dir: Path, train_spec: TrainSpec) -> dict[str, Any] | None:
    """The result of a training run in `work_dir` that already reached its last step, else None.

    A run whose adapter was saved has its result file. A run killed after its final checkpoint but before the
    save gets its adapter from that checkpoint: resuming there would make the trainer take one step past
    max_steps ("4/3"), changing the adapter a finished run already has.
    """
    result, adapter = work_dir / RESULT_FILE, work_dir / "adapter"
    if result.exists() and all((adapter / f).exists() for f in ADAPTER_FILES):
        return json.loads(result.read_text())
    last = _last_checkpoint(work_dir / "checkpoints")
    state_file = Path(last) / "trainer_state.json" if last else None
    if state_file is None or not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    if not state.get("max_steps") or state.get("global_step", 0) < state["max_steps"]:
        return None
    adapter.mkdir(parents=True, exist_ok=True)
    for f in ADAPTER_FILES:  # the checkpoint's top level holds the trained adapter (DPO's frozen copy is in ref/)
        shutil.copy2(Path(last) / f, adapter / f)
    out = {
        "adapter": str(adapter),
        "losses": _losses(state.get("log_history", [])),
        "steps": int(state["global_step"]),
        "train_runtime_s": None,
        "precision": precision(train_spec),
    }
    write_json_atomic(work_dir / RESULT_FILE, out)
    return out


def _train_and_save(trainer, label: str, work_dir: Path, train_spec) -> dict[str, Any]:
    """Train (resuming from the last checkpoint in `work_dir` if any), save the adapter, report the run."""
    resume = _last_checkpoint(work_dir / "checkpoints")
    if resume:
        console.print(f"[dim]resuming {label} from {resume}[/dim]")
    result = trainer.train(resume_from_checkpoint=resume)
    adapter = _save_adapter(trainer.model, work_dir / "adapter")
    out = {
        "adapter": str(adapter),
        "losses": _losses(trainer.state.log_history),
        "steps": result.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        "precision": precision(train_spec),
        # the training process's peak, kept so a later compile that reuses this run reports it rather than its own
        "peak_rss_gb": peak_rss_gb(),
    }
    write_json_atomic(work_dir / RESULT_FILE, out)
    return out


def _save_adapter(model, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    # DPO adds a frozen "ref" copy of the adapter; only the trained one is the student.
    model.save_pretrained(str(dest), selected_adapters=["default"])
    missing = [f for f in ADAPTER_FILES if not (dest / f).exists()]
    if missing:
        raise DspycError(f"adapter save left no {', '.join(missing)} in {dest}")
    return dest


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing to do)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def release_memory() -> None:
    """Give a finished trainer's memory back to the OS: the engines share the machine, and glibc keeps what was
    freed (the agent's 777-row SFT left 13 GB resident; the DPO after it, beside two engines, was OOM-killed)."""
    import gc

    gc.collect()  # a Trainer sits in reference cycles (its callbacks hold it)
    trim_heap()


def _threads() -> None:
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("DSPYC_TRAIN_THREADS", os.cpu_count() or 1))))


def chat_tokens(tok, messages: list[dict]) -> int:
    """How many tokens a chat (a row's prompt + completion) is under the model's chat template."""
    return len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])


def longest_row(rows: list[dict], tok, max_length: int) -> int:
    """The longest prompt + completion among chat rows, in tokens, capped at what training truncates to."""
    return min(max_length, max(chat_tokens(tok, r["prompt"] + r["completion"]) for r in rows))


def run_sft(rows: list[dict], model_path: str, recipe: SFTRecipe, work_dir: Path) -> dict[str, Any]:
    """LoRA SFT on prompt/completion chat rows (loss on the completion only). Returns the adapter path and losses."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise DspycError(
            "no SFT examples: no teacher trace passed the metric (lower min_score or raise teacher_repeats)"
        )
    if done := finished(work_dir, recipe.train):
        console.print(f"[dim]SFT already trained: {done['adapter']}[/dim]")
        return done | {"examples": len(rows)}
    _threads()
    model, tok = load_base(model_path, recipe.train)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    spec = fit_batch(recipe.train, longest_row(rows, tok, recipe.train.max_length), precision(recipe.train))
    if spec.batch_size != recipe.train.batch_size:
        console.print(
            f"batch {recipe.train.batch_size} as {spec.gradient_accumulation_steps} micro-batches of "
            f"{spec.batch_size} (at most {spec.max_batch_tokens:,} padded tokens a step)"
        )
    args = SFTConfig(**_common_args(spec, work_dir / "checkpoints"), completion_only_loss=True, packing=False)
    cb = progress_callback(f"SFT {recipe.name}")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=lora_config(recipe.lora, model.config.num_hidden_layers),
        callbacks=[cb, trim_heap_callback()],
    )
    try:
        return _train_and_save(trainer, "SFT", work_dir, recipe.train) | {"examples": len(rows)}
    finally:
        del trainer, model
        release_memory()


def run_dpo(pairs: list[dict], model_path: str, sft_adapter: Path, recipe: DPORecipe, work_dir: Path) -> dict[str, Any]:
    """DPO continuing from the SFT adapter (TRL keeps a frozen copy of it as the reference)."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise DspycError("no preference pairs: every input's samples scored the same (raise samples or temperature)")
    if done := finished(work_dir, recipe.train):
        console.print(f"[dim]DPO already trained: {done['adapter']}[/dim]")
        return done | {"pairs": len(pairs)}
    _threads()
    base, tok = load_base(model_path, recipe.train)
    model = PeftModel.from_pretrained(base, str(sft_adapter), is_trainable=True)
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    args = DPOConfig(
        **_common_args(recipe.train, work_dir / "checkpoints"),
        beta=recipe.train.beta,
        loss_type=[recipe.train.loss_type],
    )
    cb = progress_callback(f"DPO {recipe.name}")
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[cb, trim_heap_callback()]
    )
    try:
        return _train_and_save(trainer, "DPO", work_dir, recipe.train) | {"pairs": len(pairs)}
    finally:
        del trainer, model, base
        release_memory()
