"""Titles named in found passages: a second hop without a query.

A multi-hop question's second paragraph is usually the bridge entity's, and the first paragraph names it ("...
directed by Ridley Scott"). Where the corpus has a passage titled with those words, that passage is the next hop:
no LM call, and no query for lexical or dense search to miss.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dspyc.retrieval.types import Passage

_WORD = re.compile(r"\w+")


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text))


class TitleLinks:
    """Every title of the corpus as its word sequence (case kept: "Paris", not "paris"), pointing at the title's
    first passage. Titles of `min_chars` or fewer characters are left out (they match common words)."""

    def __init__(self, passages: Iterable[Passage], min_chars: int = 3):
        self.first: dict[tuple[str, ...], Passage] = {}
        for p in passages:
            key = _words(p.title)
            if key and len(p.title) > min_chars:
                self.first.setdefault(key, p)
        self.longest = max((len(k) for k in self.first), default=0)

    def __deepcopy__(self, memo):  # an index: optimizers deepcopy programs, and this is never changed
        return self

    def named_in(self, texts: Sequence[str], exclude: set[str], n: int) -> list[Passage]:
        """Up to `n` passages whose titles the texts name, in order of mention (text by text), none titled in
        `exclude`. At each position the longest title wins ("New York City" over "New York")."""
        out: list[Passage] = []
        seen = set(exclude)
        for text in texts:
            words = _words(text)
            i = 0
            while i < len(words) and len(out) < n:
                for size in range(min(self.longest, len(words) - i), 0, -1):
                    p = self.first.get(words[i : i + size])
                    if p is not None:
                        if p.title not in seen:
                            seen.add(p.title)
                            out.append(p)
                        i += size - 1
                        break
                i += 1
        return out
