"""An in-process DSPy engine over transformers: the same model and settings, no server.

For machines without vLLM, and the naive baseline in benchmarks: one generation at a time, no
batching. JSON-schema `response_format` is enforced token by token with lm-format-enforcer, so the
constrained adapter parses here as it does through the engine.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch
from dspy.clients.engines.base import validate_request
from dspy.clients.lm15_boundary import request_kwargs
from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


@functools.lru_cache(maxsize=2)
def load_model(path: str, dtype: str = "float32") -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return tok, model.eval()


class _TokenizerData:
    """lm-format-enforcer's per-tokenizer tables (its transformers integration predates transformers 5)."""

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def build(path: str) -> Any:
        from lmformatenforcer import TokenEnforcerTokenizerData

        tok, _ = load_model(path, "float32")
        zero = tok.encode("0")[-1]
        special = set(tok.all_special_ids)
        regular = []
        for idx in range(len(tok)):
            if idx in special:
                continue
            after_zero = tok.decode([zero, idx])[1:]  # a leading space survives only after another token
            regular.append((idx, after_zero, len(after_zero) > len(tok.decode([idx]))))
        decode = lambda ids: tok.decode(ids).rstrip("\ufffd")  # noqa: E731
        return TokenEnforcerTokenizerData(regular, decode, tok.eos_token_id, False, len(tok))


def _schema_constraint(path: str, response_format: dict[str, Any] | None, prompt_len: int):
    if not response_format or response_format.get("type") not in ("json_schema", "json_object"):
        return None
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    schema = (
        (response_format.get("json_schema") or {}).get("schema") if response_format["type"] == "json_schema" else None
    )
    enforcer = TokenEnforcer(_TokenizerData.build(path), JsonSchemaParser(schema))
    return lambda _batch, ids: enforcer.get_allowed_tokens(ids[prompt_len:].tolist()).allowed_tokens


class TransformersEngine:
    """A `dspy.LM(engine=...)` engine: `complete(Request) -> Response` with a local HF model."""

    def __init__(self, path: str, served_name: str, dtype: str = "float32", threads: int | None = None):
        self.path, self.served_name, self.dtype = path, served_name, dtype
        self._lock = threading.Lock()  # one generate at a time: torch already uses every core
        if threads:
            torch.set_num_threads(threads)

    @property
    def tokenizer(self):
        return load_model(self.path, self.dtype)[0]

    def generate(
        self,
        messages: list[dict[str, str]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        response_format: dict | None = None,
        seed: int | None = None,
    ) -> tuple[str, int, int, str]:
        """Returns (text, prompt tokens, completion tokens, finish reason)."""
        tok, model = load_model(self.path, self.dtype)
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        input_ids = ids["input_ids"]
        n_prompt = input_ids.shape[1]
        kwargs: dict[str, Any] = dict(max_new_tokens=max_tokens, pad_token_id=tok.eos_token_id)
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if constraint := _schema_constraint(self.path, response_format, n_prompt):
            kwargs["prefix_allowed_tokens_fn"] = constraint
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = model.generate(input_ids=input_ids, attention_mask=ids["attention_mask"], **kwargs)
        new = out[0, n_prompt:]
        finish = "length" if len(new) >= max_tokens and new[-1].item() != tok.eos_token_id else "stop"
        return tok.decode(new, skip_special_tokens=True), n_prompt, len(new), finish

    def complete(self, request: Request) -> Response:
        validate_request(request)
        data = request_kwargs(request, "chat")
        messages = [{"role": m["role"], "content": _message_text(m.get("content"))} for m in data["messages"]]
        text, n_in, n_out, finish = self.generate(
            messages,
            max_tokens=data.get("max_completion_tokens") or data.get("max_tokens") or 256,
            temperature=data.get("temperature") or 0.0,
            top_p=data.get("top_p") or 1.0,
            response_format=data.get("response_format"),
            seed=data.get("seed"),
        )
        return Response(
            id=None,
            model=self.served_name,
            message=Message.assistant([TextPart(text)]),
            finish_reason=finish,
            usage=Usage(input_tokens=n_in, output_tokens=n_out),
        )

    def stream(self, request: Request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass
