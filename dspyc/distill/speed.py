"""What a LoRA training step costs on this machine, by where the adapter sits: `dspyc bench train`.

A recipe's batch, length and row cap are sized from these numbers, so they are measured, not guessed: each shape
trains a few AdamW steps on full-length rows (after one warm-up step) in a fresh process, so each peak RSS is
its own. The loop is the SFT trainer's inner step without the trainer around it: TRL's fused LM head projects only
the completion's positions (the last `completion_tokens` of each row; the prompt carries no loss), then backward
and the optimizer step.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from pydantic import BaseModel

from dspyc.distill.recipe import LoraSpec, TrainSpec

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Shape(BaseModel):
    label: str
    lora: LoraSpec


def shapes(top_layers: int = 8) -> list[Shape]:
    """q/v and every linear layer, over the whole stack and over its top `top_layers` layers only."""
    return [
        Shape(label="q/v, every layer", lora=LoraSpec(target_modules=["q_proj", "v_proj"])),
        Shape(label="all linear, every layer", lora=LoraSpec(target_modules=ALL_LINEAR)),
        Shape(
            label=f"q/v, top {top_layers} layers", lora=LoraSpec(target_modules=["q_proj", "v_proj"], layers=top_layers)
        ),
        Shape(
            label=f"all linear, top {top_layers} layers", lora=LoraSpec(target_modules=ALL_LINEAR, layers=top_layers)
        ),
    ]


def _measure(model_path: str, lora: LoraSpec, train: TrainSpec, steps: int, completion_tokens: int) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from dspyc.distill.train import _threads, load_base, lora_config, precision
    from dspyc.engine_tuning import peak_rss_gb

    _threads()
    torch.manual_seed(0)
    model, tok = load_base(model_path, train)
    add_fused_lm_head(model)  # as SFTTrainer does: no (batch, length, vocab) logits
    model = get_peft_model(model, lora_config(lora, model.config.num_hidden_layers))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.learning_rate)
    ids = torch.randint(100, min(tok.vocab_size, 30_000), (train.batch_size, train.max_length))
    labels = ids.clone()
    labels[:, : train.max_length - completion_tokens] = -100  # the prompt: no loss
    times = []
    for _ in range(steps + 1):  # the first step warms up (allocations, kernels) and is not counted
        t = time.perf_counter()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        loss = -out.log_probs.sum() / (labels != -100).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    per_step = sum(times[1:]) / steps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "s_per_step": round(per_step, 2),
        "s_per_row": round(per_step / train.batch_size, 2),
        "tokens_per_s": round(train.batch_size * train.max_length / per_step, 1),
        "trainable_params": trainable,
        "precision": precision(train),
        "peak_rss_gb": peak_rss_gb(),
    }


def _child(queue, *args) -> None:
    queue.put(_measure(*args))


def measure(
    model_path: str, shape: Shape, train: TrainSpec, steps: int = 2, completion_tokens: int = 64
) -> dict[str, Any]:
    """One shape's cost, measured in its own process (so its peak RSS is its own); a process the OS killed (out
    of memory) is reported as such."""
    import queue as q

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(results, model_path, shape.lora, train, steps, completion_tokens))
    proc.start()
    while True:
        try:
            out = results.get(timeout=5)
            break
        except q.Empty:
            if not proc.is_alive():
                return {"shape": shape.label, "error": f"killed (exit code {proc.exitcode}: out of memory?)"}
    proc.join()
    return {"shape": shape.label} | out
