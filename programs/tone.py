"""Corporate tone: rewrite an informal text in the house tone that a style guide file defines.

One predictor. The teacher is told the whole style guide (and, once compiled, gets few-shot demos); the
distilled student (`dspyc distill tone`) sees only the signature's one-line instruction and no demos, so
the tone must live in its LoRA weights. Adherence is scored programmatically by `ToneEvaluator`: rule
checks from the style guide plus TF-IDF similarity to a reference corpus of corporate writing.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import dspy
import yaml
from pydantic import BaseModel, ConfigDict

from dspyc.data.tone import ToneDataset, load_tone_dataset, prepare
from dspyc.metrics import mean
from dspyc.registry import ProgramSpec
from signatures.tone import CorporateRewrite

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_CONTRACTION = re.compile(r"\b\w+(n't|'re|'ve|'ll|'d|'m)\b|\b(it|that|there|what|he|she|let)'s\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class StyleGuide(BaseModel):
    """`style_guide.yaml`: the prose the teacher reads and the rules the evaluator checks."""

    model_config = ConfigDict(extra="forbid")

    name: str
    instructions: str
    sign_off: str
    banned_words: list[str] = []
    first_person_singular: list[str] = ["i", "me", "my", "mine", "myself"]
    max_sentence_words: int = 20
    min_words: int = 8
    max_words: int = 60
    min_content_overlap: float = 0.3
    weights: dict[str, float] = {"rules": 0.8, "similarity": 0.2}
    pass_threshold: float = 0.8
    examples: list[dict[str, str]] = []  # worked examples {text, rewrite}: the teacher's few-shot demos

    @classmethod
    def load(cls, path: Path) -> "StyleGuide":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


class ToneScore(BaseModel):
    rules: dict[str, bool]
    similarity: float
    adherence: float


class ToneEvaluator:
    """Scores a rewrite against the style guide (rule checks) and the reference corpus (TF-IDF similarity)."""

    RULES = (
        "no_banned_words",
        "no_contractions",
        "no_exclamation",
        "company_voice",
        "sentence_length",
        "capitalized",
        "sign_off",
        "length",
        "keeps_subject",
    )

    def __init__(self, guide: StyleGuide, reference: list[str]):
        self.guide, self.reference = guide, reference
        self.banned = {w.lower() for w in guide.banned_words}
        self.first_person = {w.lower() for w in guide.first_person_singular}

    @cached_property
    def _profile(self):
        """TF-IDF vectorizer over the reference corpus and the corpus centroid (its vocabulary profile).
        Stop words stay: "we", "our", "please", "will" are much of what makes writing sound corporate."""
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
        centroid = np.asarray(vec.fit_transform(self.reference).mean(axis=0)).ravel()
        return vec, centroid / np.linalg.norm(centroid)

    @cached_property
    def _stop(self) -> frozenset[str]:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        return frozenset(ENGLISH_STOP_WORDS)

    def content_words(self, text: str) -> set[str]:
        return {w for w in (t.lower() for t in _WORD.findall(text)) if len(w) > 2 and w not in self._stop}

    def similarity(self, text: str) -> float:
        """Cosine of the text's TF-IDF vector to the reference corpus centroid (0 for an empty text).
        A centroid, not nearest sentences: one shared rare word makes a short text "near" some sentence."""
        import numpy as np

        vec, centroid = self._profile
        v = vec.transform([text]).toarray().ravel()
        norm = np.linalg.norm(v)
        return float(v @ centroid / norm) if norm else 0.0

    def check(self, source: str, rewrite: str) -> dict[str, bool]:
        g = self.guide
        text = " ".join(str(rewrite or "").split())
        words = [w.lower() for w in _WORD.findall(text)]
        # The sign-off is a closing line, not a sentence to count.
        body = text[: -len(g.sign_off)].strip() if text.endswith(g.sign_off) else text
        sentences = [s for s in _SENTENCE.split(body) if s.strip()]
        src = self.content_words(source)
        kept = len(src & self.content_words(body)) / len(src) if src else 1.0
        return {
            "no_banned_words": bool(words) and not (set(words) & self.banned),
            "no_contractions": bool(words) and not _CONTRACTION.search(text.replace("’", "'")),
            "no_exclamation": bool(words) and "!" not in text,
            "company_voice": bool(words) and not (set(words) & self.first_person),
            "sentence_length": bool(sentences)
            and all(len(_WORD.findall(s)) <= g.max_sentence_words for s in sentences),
            "capitalized": bool(sentences) and all(s[0].isupper() and s.rstrip()[-1] == "." for s in sentences),
            "sign_off": text.endswith(g.sign_off),
            "length": g.min_words <= len(words) <= g.max_words,
            "keeps_subject": kept >= g.min_content_overlap,
        }

    def score(self, source: str, rewrite: str) -> ToneScore:
        rules = self.check(source, rewrite)
        body = str(rewrite or "").replace(self.guide.sign_off, "")
        sim = self.similarity(body)
        w = self.guide.weights
        adherence = (w.get("rules", 1.0) * sum(rules.values()) / len(rules) + w.get("similarity", 0.0) * sim) / sum(
            w.values()
        )
        return ToneScore(rules=rules, similarity=round(sim, 4), adherence=round(adherence, 4))


class ToneRewriter(dspy.Module):
    def __init__(self, instructions: str | None = None, demos: list[dict[str, str]] | None = None):
        super().__init__()
        signature = CorporateRewrite.with_instructions(instructions) if instructions else CorporateRewrite
        self.rewrite = dspy.Predict(signature)
        self.rewrite.demos = [dspy.Example(**d) for d in demos or []]

    def forward(self, text: str) -> dspy.Prediction:
        return dspy.Prediction(rewrite=self.rewrite(text=text).rewrite)


# --- what dspyc needs: data, build, metric, report ---------------------------------------------------

# prompt: "guide" tells the predictor the whole style guide and gives it the guide's worked examples as
# demos (the few-shot teacher); "short" only the signature's one-line instruction, no demos (the student).
CONFIG: dict[str, Any] = {"prompt": "guide", "train": 48, "dev": 16, "test": 24}
_evaluators: dict[str, ToneEvaluator] = {}
_active: list[str] = []  # the dataset the metric scores against: the last one loaded


def evaluator(data: ToneDataset | str | Path = "tone") -> ToneEvaluator:
    data = data if isinstance(data, ToneDataset) else load_tone_dataset(data)
    key = str(data.path)
    if key not in _evaluators:
        _evaluators[key] = ToneEvaluator(StyleGuide.load(data.style_guide_path), [r.text for r in data.reference])
    return _evaluators[key]


def load_data(dataset: str, seed: int) -> ToneDataset:
    data = load_tone_dataset(dataset)
    data.split(seed, CONFIG["train"], CONFIG["dev"], CONFIG["test"])
    evaluator(data)
    _active[:] = [str(data.path)]  # DSPy metrics see no dataset; score against the style guide loaded last
    return data


def build(data: ToneDataset, config: dict[str, Any]) -> ToneRewriter:
    cfg = CONFIG | config
    guide = StyleGuide.load(data.style_guide_path)
    if cfg["prompt"] == "guide":
        return ToneRewriter(instructions=guide.instructions, demos=guide.examples)
    return ToneRewriter()


def _current() -> ToneEvaluator:
    return _evaluators[_active[0]] if _active else evaluator("tone")


def score(example: dspy.Example, pred: Any) -> ToneScore:
    rewrite = pred.get("rewrite", "") if hasattr(pred, "get") else getattr(pred, "rewrite", "")
    return _current().score(example.text, rewrite or "")


def metric(example: dspy.Example, pred: dspy.Prediction, trace=None) -> float | bool:
    s = score(example, pred).adherence
    # While bootstrapping demos or keeping teacher traces (trace is set), keep only passing rewrites.
    return s >= _current().guide.pass_threshold if trace is not None else s


def report(results: list[tuple[dspy.Example, dspy.Prediction]]) -> dict[str, float]:
    scores = [score(ex, p) for ex, p in results]
    out = {
        "adherence": mean(s.adherence for s in scores),
        "pass_rate": mean(float(s.adherence >= _current().guide.pass_threshold) for s in scores),
        "similarity": mean(s.similarity for s in scores),
    }
    for rule in ToneEvaluator.RULES:
        out[f"rule_{rule}"] = mean(float(s.rules[rule]) for s in scores)
    return out


PROGRAM = ProgramSpec(
    name="tone",
    build=build,
    load_data=load_data,
    metric=metric,
    report=report,
    dataset="tone",
    default_recipe="bootstrap",
    config=CONFIG,
    cost_space={"prompt": ["guide", "short"]},  # the style guide and its demos, or one line
    student_config={"prompt": "short"},
    prepare_data=prepare,  # the distilled student: the one-line instruction, no demos
    description="Rewrite informal text in the house corporate tone of a style guide; distillable into a LoRA student.",
)
