"""The labelled probe `dspyc adapter-check` runs: Predict, ChainOfThought, a typed pydantic output, a list, a
Literal and a number, most calls with a checker of their answer, so the check reports answer quality beside
parse failures. Module-level and without `from __future__ import annotations`, so DSPy can resolve every
output type into a JSON schema (a signature defined inside a function, with string annotations, cannot).

Each call is a `ProbeCall`: it unpacks as `(module, inputs, check)`; `check(prediction) -> bool` is None for
the few open questions (they still count parse failures), and `gold` / `wrong` are outputs the check accepts /
rejects (for tests and fakes). Everything is deterministic: the same N calls every run."""

import dataclasses
import re
import unicodedata
from typing import Any, Callable, Iterator, Literal, Optional

import dspy
import pydantic


class City(pydantic.BaseModel):
    name: str
    country: str
    population_millions: float


class Describe(dspy.Signature):
    """Give structured facts about the city."""

    city: str = dspy.InputField()
    facts: City = dspy.OutputField()


class Keywords(dspy.Signature):
    """List the keywords of the text."""

    text: str = dspy.InputField()
    keywords: list[str] = dspy.OutputField()


class Sentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()
    confidence: float = dspy.OutputField()


class ShortAnswer(dspy.Signature):
    """Answer the question with a word or a short phrase (yes or no for a yes/no question)."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a word or a short phrase", max_length=60)


class Animal(dspy.Signature):
    """Classify the animal, count its legs and list a few of its features."""

    animal: str = dspy.InputField()
    group: Literal["mammal", "bird", "fish", "reptile", "insect"] = dspy.OutputField()
    legs: int = dspy.OutputField(desc="how many legs it has")
    features: list[str] = dspy.OutputField()


Check = Callable[[dspy.Prediction], bool]


@dataclasses.dataclass(frozen=True)
class ProbeCall:
    """One probe call. Unpacks as `(module, inputs, check)`."""

    kind: str
    module: dspy.Module
    inputs: dict[str, str]
    check: Optional[Check]
    gold: dict[str, Any]  # an output the check accepts (a plausible one for unlabelled calls)
    wrong: Optional[dict[str, Any]] = None  # an output the check rejects (labelled calls)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.module, self.inputs, self.check))


def normalize(text: Any) -> str:
    """Lower case, no accents, punctuation as spaces, single spaces: 'São Paulo!' → 'sao paulo'."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def mentions(text: Any, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words, after `normalize` ('8 legs' mentions '8'; '18' does not)."""
    return f" {normalize(phrase)} " in f" {normalize(text)} "


def _field(obj: Any, name: str) -> Any:
    """A field of a prediction value, whether the adapter parsed it into a model or left a dict."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def text_check(field: str, accept: tuple[str, ...], forbid: tuple[str, ...] = (), sub: Optional[str] = None) -> Check:
    """Right when the field (or its `sub` field) mentions one accepted phrase and no forbidden one."""

    def check(pred: dspy.Prediction) -> bool:
        value = _field(pred, field)
        if sub is not None:
            value = _field(value, sub)
        if not isinstance(value, str) or not value.strip():
            return False
        return any(mentions(value, a) for a in accept) and not any(mentions(value, f) for f in forbid)

    return check


def equals_check(**expected: Any) -> Check:
    """Right when every named field equals its expected value (strings compared normalized, numbers by value)."""

    def same(got: Any, want: Any) -> bool:
        if isinstance(want, str):
            return isinstance(got, str) and normalize(got) == normalize(want)
        if isinstance(want, (int, float)) and not isinstance(got, bool):
            try:
                return float(got) == float(want)
            except (TypeError, ValueError):
                return False
        return got == want

    def check(pred: dspy.Prediction) -> bool:
        return all(same(_field(pred, k), v) for k, v in expected.items())

    return check


def list_check(field: str, accept: tuple[str, ...]) -> Check:
    """Right when some item of the list field mentions one accepted phrase."""

    def check(pred: dspy.Prediction) -> bool:
        items = _field(pred, field)
        return isinstance(items, list) and any(isinstance(i, str) and mentions(i, a) for i in items for a in accept)

    return check


COUNTRIES = {
    "Paris": ("France",),
    "Tokyo": ("Japan",),
    "Lagos": ("Nigeria",),
    "Lima": ("Peru",),
    "Oslo": ("Norway",),
    "Cairo": ("Egypt",),
    "Delhi": ("India",),
    "Quito": ("Ecuador",),
    "Rome": ("Italy",),
    "Seoul": ("South Korea", "Korea", "Republic of Korea"),
}
NOT_COUNTRIES = {"Seoul": ("North Korea",)}  # mentions 'Korea', but is wrong
SENTIMENTS = {
    "I loved": "positive",
    "Wonderful": "positive",
    "I hated": "negative",
    "Terrible,": "negative",
    "It was fine:": "neutral",
}

# (question, accepted answers, a wrong answer): well-known facts, checked by whole-word containment
FACTS: list[tuple[str, tuple[str, ...], str]] = [
    ("What is the capital of France?", ("Paris",), "London"),
    ("How many legs does a spider have?", ("8", "eight"), "6"),
    ("What colour is the sky on a clear day?", ("blue",), "green"),
    ("Is the sun a star?", ("yes",), "no"),
    ("What is the capital of Japan?", ("Tokyo",), "Kyoto"),
    ("How many days are in a week?", ("7", "seven"), "5"),
    ("What colour is fresh snow?", ("white",), "black"),
    ("Is a cat a bird?", ("no",), "yes"),
    ("What is the capital of Italy?", ("Rome",), "Milan"),
    ("How many months are in a year?", ("12", "twelve"), "10"),
    ("What is the largest planet in the solar system?", ("Jupiter",), "Mars"),
    ("Is fire cold?", ("no",), "yes"),
    ("What is the capital of Germany?", ("Berlin",), "Munich"),
    ("How many hours are in a day?", ("24", "twenty four", "twenty-four"), "12"),
    ("What colour is grass?", ("green",), "red"),
    ("Does a week have seven days?", ("yes",), "no"),
    ("What is the capital of Spain?", ("Madrid",), "Barcelona"),
    ("How many sides does a triangle have?", ("3", "three"), "4"),
    ("Which planet do we live on?", ("Earth",), "Venus"),
    ("Is Paris in Germany?", ("no",), "yes"),
    ("What is the capital of Egypt?", ("Cairo",), "Alexandria"),
    ("What is 2 + 2?", ("4", "four"), "5"),
    ("What colour is a ripe banana?", ("yellow",), "purple"),
    ("Is ice cold?", ("yes",), "no"),
    ("What is the capital of Canada?", ("Ottawa",), "Toronto"),
    ("How many legs does a dog have?", ("4", "four"), "2"),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",), "Charles Dickens"),
    ("Is 7 an even number?", ("no",), "yes"),
    ("What is the capital of the United Kingdom?", ("London",), "Paris"),
    ("What is 10 times 10?", ("100", "one hundred", "a hundred"), "1000"),
    ("Which animal is known as the king of the jungle?", ("lion",), "tiger"),
    ("Is the Earth round?", ("yes",), "no"),
    ("What is the capital of Russia?", ("Moscow",), "Saint Petersburg"),
    ("What is the freezing point of water in degrees Celsius?", ("0", "zero"), "100"),
    ("What do bees make?", ("honey",), "milk"),
    ("Do fish live in water?", ("yes",), "no"),
    ("What is the largest ocean on Earth?", ("Pacific",), "Atlantic"),
    ("What is the opposite of hot?", ("cold",), "warm"),
    ("What language is mainly spoken in Brazil?", ("Portuguese",), "Spanish"),
    ("What gas do people breathe in to live?", ("oxygen",), "helium"),
]
# yes/no answers must not hedge: 'yes' is wrong if it also says 'no', and the other way round
_OPPOSITE = {"yes": ("no",), "no": ("yes",)}

# (animal, group, legs)
ANIMALS: list[tuple[str, str, int]] = [
    ("dog", "mammal", 4),
    ("eagle", "bird", 2),
    ("salmon", "fish", 0),
    ("snake", "reptile", 0),
    ("ant", "insect", 6),
    ("cat", "mammal", 4),
    ("owl", "bird", 2),
    ("shark", "fish", 0),
    ("lizard", "reptile", 4),
    ("bee", "insect", 6),
    ("horse", "mammal", 4),
    ("penguin", "bird", 2),
    ("tuna", "fish", 0),
    ("crocodile", "reptile", 4),
    ("butterfly", "insect", 6),
    ("cow", "mammal", 4),
    ("parrot", "bird", 2),
    ("goldfish", "fish", 0),
    ("turtle", "reptile", 4),
    ("elephant", "mammal", 4),
]
_WRONG_GROUP = {"mammal": "bird", "bird": "mammal", "fish": "reptile", "reptile": "fish", "insect": "mammal"}

CITIES = ["Paris", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul"]
ROUNDS = 40
KINDS = ("facts", "country (ChainOfThought)", "animal", "sentiment", "city facts", "keywords", "open question")

_short, _open, _cot = (
    dspy.Predict(ShortAnswer),
    dspy.Predict("question -> answer"),
    dspy.ChainOfThought("question -> answer"),
)
_animal, _sentiment = dspy.Predict(Animal), dspy.Predict(Sentiment)
_describe, _keywords = dspy.Predict(Describe), dspy.Predict(Keywords)


def labelled_calls() -> list[ProbeCall]:
    """280 calls: 40 rounds of the seven kinds (KINDS) interleaved, so any prefix mixes them; 240 are labelled."""
    cities = CITIES * 4
    words = ["history", "food", "weather", "music"] * 10
    topics = [f"the {t} of {c}" for t, c in zip(words, cities)]
    openers = ["I loved", "I hated", "It was fine:", "Terrible,", "Wonderful"] * 8
    reviews = [f"{a} {t}." for a, t in zip(openers, topics)]
    calls: list[ProbeCall] = []
    for i in range(ROUNDS):
        city, other = cities[i], cities[(i + 1) % len(cities)]
        country, wrong_country = COUNTRIES[city][0], COUNTRIES[other][0]
        question, accept, wrong = FACTS[i % len(FACTS)]
        animal, group, legs = ANIMALS[i % len(ANIMALS)]
        label = SENTIMENTS[openers[i]]
        wrong_label = "negative" if label == "positive" else "positive"
        calls += [
            ProbeCall(
                "facts",
                _short,
                {"question": question},
                text_check("answer", accept, _OPPOSITE.get(accept[0], ())),
                {"answer": accept[0]},
                {"answer": wrong},
            ),
            ProbeCall(
                "country (ChainOfThought)",
                _cot,
                {"question": f"Which country is {city} in?"},
                text_check("answer", COUNTRIES[city], NOT_COUNTRIES.get(city, ())),
                {"reasoning": f"{city} is a city in {country}.", "answer": country},
                {"reasoning": f"{city} is a city in {wrong_country}.", "answer": wrong_country},
            ),
            ProbeCall(
                "animal",
                _animal,
                {"animal": animal},
                equals_check(group=group, legs=legs),
                {"group": group, "legs": legs, "features": ["a feature"]},
                {"group": _WRONG_GROUP[group], "legs": legs + 2, "features": ["a feature"]},
            ),
            ProbeCall(
                "sentiment",
                _sentiment,
                {"review": reviews[i]},
                equals_check(sentiment=label),
                {"sentiment": label, "confidence": 0.9},
                {"sentiment": wrong_label, "confidence": 0.9},
            ),
            ProbeCall(
                "city facts",
                _describe,
                {"city": city},
                text_check("facts", COUNTRIES[city], NOT_COUNTRIES.get(city, ()), sub="country"),
                {"facts": {"name": city, "country": country, "population_millions": 5.0}},
                {"facts": {"name": city, "country": wrong_country, "population_millions": 5.0}},
            ),
            ProbeCall(
                "keywords",
                _keywords,
                {"text": reviews[i]},
                list_check("keywords", (city, words[i])),
                {"keywords": [words[i], city]},
                {"keywords": ["nothing"]},
            ),
            ProbeCall(
                "open question",
                _open,
                {"question": f"What is {topics[i]} like?"},
                None,
                {"answer": f"It is rich and varied: {topics[i]} has a long story."},
            ),
        ]
    return calls


def adapter_calls() -> list[tuple[dspy.Module, dict[str, str]]]:
    """The probe's first 200 calls as (module, inputs) pairs, without their checkers."""
    return [(c.module, c.inputs) for c in labelled_calls()[:200]]
