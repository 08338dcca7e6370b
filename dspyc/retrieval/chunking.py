"""Sentence-aware chunking of `{"title", "text"}` documents into stable, title-carrying passages."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence

from dspyc.errors import DataError
from dspyc.retrieval.types import Passage

# A sentence ends at . ! or ? (plus closing quotes/brackets), followed by space and a likely sentence start.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
# Tokens that end in a period without ending a sentence; splitting after them would cut names in half.
_ABBREVIATIONS = {
    "mr.",
    "mrs.",
    "ms.",
    "dr.",
    "prof.",
    "st.",
    "jr.",
    "sr.",
    "vs.",
    "etc.",
    "no.",
    "co.",
    "inc.",
    "ltd.",
    "corp.",
    "mt.",
    "ft.",
    "gen.",
    "col.",
    "lt.",
    "sgt.",
    "capt.",
    "gov.",
    "rep.",
    "sen.",
    "jan.",
    "feb.",
    "mar.",
    "apr.",
    "jun.",
    "jul.",
    "aug.",
    "sep.",
    "sept.",
    "oct.",
    "nov.",
    "dec.",
    "u.s.",
    "u.k.",
    "e.g.",
    "i.e.",
    "a.m.",
    "p.m.",
    "c.",
    "ca.",
}


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences; conservative (merges pieces that end in an abbreviation or an initial)."""
    pieces = [p.strip() for p in _SENTENCE_END.split(text.strip()) if p and p.strip()]
    sentences: list[str] = []
    for piece in pieces:
        if sentences:
            last_word = sentences[-1].rsplit(maxsplit=1)[-1]
            # "J. R. R. Tolkien" or "Dr. Who": the period belonged to a word, not to a sentence end.
            if last_word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", last_word):
                sentences[-1] = f"{sentences[-1]} {piece}"
                continue
        sentences.append(piece)
    return sentences


def _word_windows(words: list[str], size: int, overlap: int) -> list[str]:
    """Fixed word windows for a sentence longer than `size` (the only place we cut inside a sentence)."""
    step = max(1, size - overlap)
    out: list[str] = []
    for start in range(0, len(words), step):
        out.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return out


def chunk_text(text: str, size: int = 120, overlap: int = 20) -> list[str]:
    """Chunks of whole sentences of at most `size` words; each starts with the previous chunk's trailing
    whole sentences that fit in `overlap` words (so a fact split across a boundary is seen whole once)."""
    if size <= 0 or overlap < 0 or overlap >= size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got size={size} overlap={overlap}")
    chunks: list[str] = []
    current: list[list[str]] = []  # sentences (as word lists) in the chunk being built
    n_carried = 0  # how many of `current` are overlap from the previous chunk (no new content)

    def flush() -> None:
        nonlocal current, n_carried
        if len(current) > n_carried:  # a chunk of only carried-over sentences would be a pure duplicate
            chunks.append(" ".join(w for s in current for w in s))
        carry: list[list[str]] = []
        words = 0
        for sent in reversed(current):
            if words + len(sent) > overlap:
                break
            carry.insert(0, sent)
            words += len(sent)
        if len(carry) == len(current):  # carrying everything would make no progress
            carry = []
        current, n_carried = carry, len(carry)

    for sentence in split_sentences(text):
        words = sentence.split()
        if len(words) > size:
            flush()
            chunks.extend(_word_windows(words, size, overlap))
            current, n_carried = [], 0
            continue
        while current and sum(map(len, current)) + len(words) > size:
            if len(current) > n_carried:
                flush()
            else:  # only carried sentences left and still no room: drop the oldest one
                current.pop(0)
                n_carried -= 1
        current.append(words)
    flush()
    return chunks


def chunk_documents(docs: Iterable[Mapping[str, str]], size: int = 120, overlap: int = 20) -> list[Passage]:
    """Passages with ids `"<title>#<i>"`, `i` counted per title across all rows sharing that title."""
    passages: list[Passage] = []
    per_title: dict[str, int] = {}
    for n, doc in enumerate(docs):
        try:
            title, text = str(doc["title"]).strip(), str(doc["text"])
        except (KeyError, TypeError) as e:
            raise DataError(f"corpus row {n}: expected an object with 'title' and 'text' ({e!r})") from None
        if not title:
            raise DataError(f"corpus row {n}: empty title")
        for chunk in chunk_text(text, size, overlap):
            i = per_title.get(title, 0)
            per_title[title] = i + 1
            passages.append(Passage(id=f"{title}#{i}", title=title, text=chunk))
    return passages


def corpus_hash(passages: Sequence[Passage]) -> str:
    """A short fingerprint of the chunked corpus: every cache (BM25, Qdrant, reranker) is keyed by it."""
    h = hashlib.sha256()
    for p in passages:
        # NUL separators so ("ab", "c") and ("a", "bc") hash differently.
        h.update(p.id.encode())
        h.update(b"\0")
        h.update(p.text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def index_text(p: Passage) -> str:
    """What the indexes see: the title first, because HotpotQA-style questions name entities by title."""
    return f"{p.title}. {p.text}"
