"""The roadmap's step 1, made visible: tokens, a forward pass, greedy decoding, and sampling."""

from __future__ import annotations

import time

import httpx
from rich.table import Table

from dspyc import engine
from dspyc.console import console as make_console
from dspyc.errors import DspycError
from dspyc.models import KNOWN_LMS, resolve_lm, served_name
from dspyc.settings import Settings, get_settings

console = make_console()


def _tokenizer(s: Settings):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_lm(s.lm_model, s))


def context_window(s: Settings) -> int:
    spec = KNOWN_LMS.get(s.lm_model)
    return spec.context_window if spec else s.engine_max_model_len


def show_tokens(text: str, s: Settings | None = None, chat: bool = False) -> list[int]:
    """Print each token id and piece, and how much of the context window the text uses."""
    s = s or get_settings()
    tok = _tokenizer(s)
    ids = (
        tok.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        if chat
        else tok.encode(text)
    )
    table = Table("#", "id", "piece", title=f"{len(ids)} tokens ({s.lm_model})")
    for i, t in enumerate(ids):
        table.add_row(str(i), str(t), repr(tok.decode([t])))
    console.print(table)
    window = context_window(s)
    console.print(
        f"context window: {len(ids)} / {window} tokens ({100 * len(ids) / window:.2f}%), "
        f"{len(text) / max(len(ids), 1):.2f} characters per token"
    )
    return ids


def smoke(prompt: str = "What is the capital of France?", max_new_tokens: int = 24, s: Settings | None = None) -> None:
    """Load the model with transformers, show the prompt's tokens, one forward pass, greedy decoding; then the engine."""
    import torch

    from dspyc.inprocess import load_model

    s = s or get_settings()
    tok, model = load_model(resolve_lm(s.lm_model, s))
    console.rule("[bold]1. transformers, in process")
    msgs = [{"role": "user", "content": prompt}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    console.print(f"prompt: {prompt!r} → {ids.shape[1]} tokens (chat template applied)")
    console.print("pieces: " + " ".join(repr(tok.decode([t])) for t in ids[0].tolist()))
    with torch.inference_mode():
        logits = model(ids).logits[0, -1]
    top = torch.topk(torch.softmax(logits, -1), 5)
    console.print(
        "forward → next-token distribution: "
        + ", ".join(f"{tok.decode([int(i)])!r} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
    )
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
    dt = time.perf_counter() - t0
    new = out[0, ids.shape[1] :]
    console.print(
        f"greedy ({len(new)} tokens, {len(new) / dt:.1f} tok/s): {tok.decode(new, skip_special_tokens=True)!r}"
    )
    console.rule("[bold]2. the same prompt through the engine")
    base = engine.ensure(s)
    t0 = time.perf_counter()
    r = httpx.post(
        f"{base}/chat/completions",
        headers={"Authorization": f"Bearer {s.lm_api_key}"},
        timeout=120,
        json={"model": served_name(s.lm_model, s), "messages": msgs, "max_tokens": max_new_tokens, "temperature": 0},
    )
    r.raise_for_status()
    body = r.json()
    dt = time.perf_counter() - t0
    n = body["usage"]["completion_tokens"]
    console.print(f"engine ({n} tokens, {n / dt:.1f} tok/s incl. HTTP): {body['choices'][0]['message']['content']!r}")


def sample(
    prompt: str,
    temperature: float = 0.8,
    top_p: float = 0.95,
    n: int = 5,
    max_tokens: int = 40,
    s: Settings | None = None,
) -> list[str]:
    """Sample n completions through the engine: see how temperature and top-p change the outputs."""
    s = s or get_settings()
    base = engine.ensure(s)
    r = httpx.post(
        f"{base}/chat/completions",
        headers={"Authorization": f"Bearer {s.lm_api_key}"},
        timeout=300,
        json={
            "model": served_name(s.lm_model, s),
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "n": n,
        },
    )
    if r.status_code >= 400:
        raise DspycError(f"the engine refused the request ({r.status_code}): {r.text[:200]}")
    outs = [c["message"]["content"] for c in r.json()["choices"]]
    table = Table("#", "completion", title=f"temperature={temperature} top_p={top_p} n={n}")
    for i, o in enumerate(outs):
        table.add_row(str(i), o)
    console.print(table)
    console.print(f"{len(set(outs))} distinct of {n}")
    return outs
