"""Lexical retrieval with bm25s; the index is built once per corpus and reloaded from disk afterwards."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

from dspyc.retrieval.chunking import corpus_hash, index_text
from dspyc.retrieval.types import Hit, Passage, Retriever

log = logging.getLogger(__name__)


class BM25Retriever(Retriever):
    """BM25 over title + text, English stopwords removed and words Snowball-stemmed.

    With `cache_dir`, the index lives in `cache_dir/bm25/<corpus_hash>/` (written atomically)."""

    def __init__(self, passages: Sequence[Passage], cache_dir: Path | None = None, name: str = "bm25"):
        if not passages:
            raise ValueError("BM25Retriever needs at least one passage")
        self.name = name
        self.passages = list(passages)
        self.corpus_hash = corpus_hash(self.passages)
        self._stemmer = Stemmer.Stemmer("english")
        self.index_dir = Path(cache_dir) / "bm25" / self.corpus_hash if cache_dir is not None else None
        self._bm25 = self._load() or self._build()

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        # Strings, not ids: ids are per-call vocabularies, while bm25s maps strings to the index vocabulary.
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False)

    def _build(self) -> bm25s.BM25:
        bm25 = bm25s.BM25()
        bm25.index(self._tokenize([index_text(p) for p in self.passages]), show_progress=False)
        if self.index_dir is not None:
            self.index_dir.parent.mkdir(parents=True, exist_ok=True)
            # bm25s writes several files; a temp dir + rename means a crash never leaves half an index.
            tmp = Path(tempfile.mkdtemp(dir=self.index_dir.parent, prefix=".tmp-"))
            try:
                bm25.save(str(tmp), show_progress=False)
                tmp.rename(self.index_dir)
            except OSError:  # another process won the race: its index is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
        return bm25

    def _load(self) -> bm25s.BM25 | None:
        if self.index_dir is None or not self.index_dir.is_dir():
            return None
        try:
            bm25 = bm25s.BM25.load(str(self.index_dir), show_progress=False)
        except Exception as e:  # a corrupt cache is rebuilt, not fatal
            log.warning("rebuilding BM25 index, cannot load %s: %s", self.index_dir, e)
            shutil.rmtree(self.index_dir, ignore_errors=True)
            return None
        if bm25.scores.get("num_docs") != len(self.passages):
            shutil.rmtree(self.index_dir, ignore_errors=True)
            return None
        return bm25

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries or k <= 0:
            return [[] for _ in queries]
        k = min(k, len(self.passages))  # bm25s refuses k larger than the corpus
        out: list[list[Hit]] = []
        for tokens in self._tokenize(list(queries)):
            # Only in-vocabulary tokens count; a query with none matches nothing (bm25s would warn per call).
            tokens = [t for t in tokens if t in self._bm25.vocab_dict]
            if not tokens:
                out.append([])
                continue
            ids, scores = self._bm25.retrieve([tokens], k=k, show_progress=False, n_threads=0)
            out.append(
                [
                    Hit(self.passages[int(i)], float(s))
                    for i, s in zip(ids[0], scores[0], strict=True)
                    if s > 0 and np.isfinite(s)
                ]
            )
        return out

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage (aligned with `self.passages`); zeros when no query word is indexed."""
        tokens = [t for t in self._tokenize([query])[0] if t in self._bm25.vocab_dict]
        if not tokens:
            return np.zeros(len(self.passages), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)
