"""Whether a corpus mentions the names a question asks about: a sign that it cannot answer it.

HotPotQA's distractor passages are the ones a search ranks highest for the question, so a similarity score barely
tells a corpus that lost a question's gold passages from one that holds them. But a question is about named things
("Toad Hall", "Lord Frederick Charles Cavendish"), and once the passages about them are gone the corpus seldom
names them anywhere. No model, no LM call: capitalised phrases from the question, looked up word for word.
"""

from __future__ import annotations

import difflib
import itertools
import re
from array import array
from collections import defaultdict
from collections.abc import Iterable

from dspyc.retrieval.types import Passage

_POSSESSIVE = re.compile(r"['’]s\b")
_NON_WORD = re.compile(r"[^\w]+")
_GLUED = re.compile(r"\.(?=[a-z])")  # "Apple Inc.suggest": a sentence run on after an abbreviation
_EDGE = re.compile(r"^[^\w]+|[^\w.]+$")  # a word's quotes and brackets; a trailing period stays ("Jr.")
# Capitalised words that open a question or a clause rather than name something.
_OPENERS = frozenset(
    "What Which Who Whom Whose Where When How Why Are Is Was Were Do Did Does The A An In On At Of For By As If "
    "This That These Those Both Between Besides From Name Since During After Before Than And Or Not It Its He She "
    "They Among Under Along With Within While Although Despite Also".split()
)
# Lower-case words inside a name: "Battle of Peleliu", "Géza von Cziffra", "Rhiwallon ap Cynfyn".
_JOINERS = frozenset("of the de von van la le du da del di y ap &".split())


def normalize(text: str) -> str:
    """Lower case, no possessive 's, punctuation as spaces, padded: " women national basketball league "."""
    return " " + " ".join(_NON_WORD.sub(" ", _POSSESSIVE.sub("", text.lower())).split()) + " "


def names(question: str) -> list[str]:
    """The question's names: runs of capitalised words joined by `of`, `the`, `de`, ..., ending at punctuation or
    a number ("Big Hero 6" is "Big Hero": "70+" or "1999" run on after a name as often as they belong to it). A
    question word opening a run is not part of it."""
    out: list[str] = []
    run: list[str] = []

    def close() -> None:
        while run and run[-1].lower() in _JOINERS:
            run.pop()
        if run and not "".join(run).isdigit() and len(" ".join(run)) > 3:
            out.append(" ".join(run))
        run.clear()

    for word in _GLUED.sub(". ", _POSSESSIVE.sub("", question)).replace('"', " ").split():
        core = _EDGE.sub("", word)
        if core and core[0].isupper() and (run or core not in _OPENERS):
            run.append(core)
        elif run and core.lower() in _JOINERS:
            run.append(core)
        else:
            close()
        if word.endswith((",", "?", ";", ":")) or (word.endswith(".") and len(core) > 2):
            close()
    close()
    return out


class Mentions:
    """Which names the passages (title and text) contain, word for word after `normalize`. Looked up through
    an index of each word's passages, so a question costs a scan of the passages holding its rarest word, not
    of the corpus. Held by reference (optimizers deepcopy programs)."""

    def __init__(self, passages: Iterable[Passage]):
        self.texts = [normalize(f"{p.title} {p.text}") for p in passages]
        self.index: dict[str, array] = defaultdict(lambda: array("I"))  # 4 bytes a posting, not a Python int
        self._by_initial: dict[str, list[str]] | None = None  # built on the first misspelt word
        for i, text in enumerate(self.texts):
            for word in set(text.split()):
                self.index[word].append(i)

    def __deepcopy__(self, memo):
        return self

    def mentions(self, name: str) -> bool:
        """The name in a passage, word for word; or, where its last word is a common one ("Paul Baloff American":
        two names run together in the question), the rest of it. A long word no passage holds may be read as a
        close corpus word ("Amercian Patriot" as "american patriot"): a misspelt name is still found. A short rare
        name ("Lilt", "Exies") is taken as written, or every missing one would have a near namesake."""
        words = normalize(name).split()
        if self._holds(words):
            return True
        common = len(words) > 2 and len(self.index.get(words[-1], ())) >= max(2, 0.01 * len(self.texts))
        return common and self._holds(words[:-1])

    def _holds(self, words: list[str]) -> bool:
        options = [[w] if w in self.index else self.closest(w) for w in words]
        for choice in itertools.product(*options):
            phrase = " " + " ".join(choice) + " "
            if any(phrase in self.texts[i] for i in min((self.index[w] for w in choice), key=len)):
                return True
        return not words

    def closest(self, word: str, n: int = 5, cutoff: float = 0.8, min_chars: int = 6) -> list[str]:
        """Up to `n` corpus words like `word` (difflib's ratio at least `cutoff`) among those of its first letter;
        none for a word under `min_chars` letters."""
        if len(word) < min_chars:
            return []
        if self._by_initial is None:
            self._by_initial = defaultdict(list)
            for w in self.index:
                self._by_initial[w[0]].append(w)
        return difflib.get_close_matches(word, self._by_initial.get(word[0], []), n=n, cutoff=cutoff)

    def missing(self, question: str) -> list[str]:
        """The question's names that no passage holds."""
        return [n for n in names(question) if not self.mentions(n)]
