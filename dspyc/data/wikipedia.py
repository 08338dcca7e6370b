"""The offline default RAG corpus: ~100 real English Wikipedia articles turned into passages.

The articles come from a MediaWiki XML dump excerpt that ships as test data inside the ``gensim``
wheel, so a fresh machine can build the corpus with nothing but PyPI. ``prepare`` is deterministic:
the same dump always gives a byte-identical ``corpus.jsonl``.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

import mwparserfromhell
from mwparserfromhell.nodes import Heading, Tag, Template, Wikilink
from mwparserfromhell.wikicode import Wikicode

from dspyc.errors import DataError

GENSIM = "gensim==4.4.0"
DUMP_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# A larger corpus for retrieval at scale: enwik8, the first 10^8 bytes of a 2006 English Wikipedia dump (~8.5k
# articles, cut mid-page), as the data file in the x-transformers sdist (MIT code; the text is Wikipedia's).
ENWIK8 = "x-transformers==2.16.1"
ENWIK8_MEMBER = "x_transformers-2.16.1/data/enwik8.gz"

# Sections that hold citations and link lists rather than prose.
DROP_SECTIONS = {
    "references",
    "external links",
    "see also",
    "further reading",
    "notes",
    "footnotes",
    "citations",
    "sources",
    "bibliography",
    "works cited",
    "notes and references",
    "references and notes",
    "gallery",
}
JUNK_TAGS = {"ref", "table", "gallery", "references", "math", "timeline", "imagemap"}
JUNK_LINK = re.compile(r"^\s*:?\s*(file|image|media|category)\s*:", re.I)
INTERLANGUAGE = re.compile(r"^\s*[a-z]{2,3}(-[a-z]+)*\s*:")  # [[de:Anarchismus]] etc. (no display text)
INLINE_TEXT = {"ndash": "–", "mdash": "—", "snd": " – ", "spaced ndash": " – ", "nbsp": " ", "'": "'"}
MIN_WORDS = 5  # lines shorter than this are list items, captions or leftovers
MERGE_CHARS = 300  # merge consecutive paragraphs until a passage is at least this long...
MAX_CHARS = 1200  # ...and split longer ones on sentence boundaries to stay under this
# Stripped by regex before parsing: unbalanced refs and comments make the parser fall back to plain text.
PRE_STRIP = re.compile(r"<!--.*?(-->|$)|<ref(\s[^>]*)?/>|<ref(\s[^>]*)?>.*?</ref\s*>", re.S | re.I)
LEAKED_MARKUP = re.compile(r"^[{|!]|\{\{|\}\}|\[\[|\]\]|</?[a-z]+[ >/]")  # what the parser could not make sense of
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[A-Z0-9])")


def fetch_gensim_dump(cache_dir: Path) -> Path:
    """The dump excerpt from the gensim wheel, downloaded once with pip and extracted into `cache_dir`."""
    dump = Path(cache_dir) / Path(DUMP_MEMBER).name
    if not dump.is_file():  # written atomically, so present means complete
        wheel = _pip_download(Path(cache_dir) / "wheels", GENSIM, "gensim-4.4.0-*.whl", "--only-binary=:all:")
        with zipfile.ZipFile(wheel) as zf, zf.open(DUMP_MEMBER) as src:
            _atomic_write(dump, src.read())
    return dump


def fetch_enwik8(cache_dir: Path) -> Path:
    """enwik8.gz from the x-transformers sdist (pip, once), extracted into `cache_dir`."""
    dump = Path(cache_dir) / "enwik8.gz"
    if not dump.is_file():
        sdist = _pip_download(Path(cache_dir) / "sdists", ENWIK8, "x_transformers-2.16.1.tar.gz", "--no-binary=:all:")
        with tarfile.open(sdist) as tf, tf.extractfile(ENWIK8_MEMBER) as src:  # type: ignore[union-attr]
            _atomic_write(dump, src.read())
    return dump


def _pip_download(folder: Path, requirement: str, pattern: str, kind: str) -> Path:
    """The archive of `requirement` in `folder` (`pattern`), downloaded with pip unless already there; `kind` is
    pip's --only-binary (a wheel) or --no-binary (an sdist)."""
    found = sorted(folder.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, requirement, "-d", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(folder.glob(pattern))
        what = "wheel" if kind.startswith("--only-binary") else "sdist"
        if proc.returncode != 0 or not found:
            why = (proc.stderr.strip().splitlines() or [f"no {what} downloaded"])[-1]
            raise DataError(f"could not download the {requirement} {what} with pip (offline?): {why}")
    return found[0]


def parse_dump(path: Path, progress: bool = False) -> Iterator[dict]:
    """Stream `{"title", "text"}` passages (several per article) from a MediaWiki XML dump, bz2 or gzip. A dump
    cut mid-page (enwik8) ends at its last whole page; an old export with no `<ns>` tells articles by their title.
    With `progress`, a bar over the compressed bytes read (with an ETA)."""
    opener = gzip.open if str(path).endswith(".gz") else bz2.open
    with open(path, "rb") as raw, opener(raw, "rb") as f, _bytes_bar(path, progress) as advance:
        try:
            for _, elem in ElementTree.iterparse(f, events=("end",)):
                if _local(elem.tag) != "page":
                    continue
                yield from _page_passages({_local(e.tag): e for e in elem.iter()})
                elem.clear()  # keep memory flat on big dumps
                advance(raw.tell())
        except ElementTree.ParseError:  # the cut: everything before it was yielded
            return


@contextmanager
def _bytes_bar(path: Path, show: bool) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda _done: None
        return
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns()) as bar:
        task = bar.add_task(f"parsing {Path(path).name}", total=Path(path).stat().st_size)
        yield lambda done: bar.update(task, completed=done)


def _page_passages(fields: dict) -> Iterator[dict]:
    title, ns, text = fields.get("title"), fields.get("ns"), fields.get("text")
    if title is None or text is None or not text.text or "redirect" in fields:
        return
    article = ns.text == "0" if ns is not None else ":" not in title.text
    if article and not text.text.lstrip()[:9].lower().startswith("#redirect"):
        for passage in _passages(_paragraphs(text.text)):
            yield {"title": title.text.strip(), "text": passage}


def prepare(out_dir: Path, cache_dir: Path) -> Path:
    """Write `out_dir/corpus.jsonl` from the gensim dump excerpt; return its path."""
    return write_corpus(parse_dump(fetch_gensim_dump(cache_dir)), Path(out_dir) / "corpus.jsonl")


def enwik8_corpus(cache_dir: Path) -> Path:
    """`cache_dir/corpora/enwik8/corpus.jsonl` (a distractor pool: passages, no questions), built once."""
    out = Path(cache_dir) / "corpora" / "enwik8" / "corpus.jsonl"
    if not out.is_file():
        write_corpus(parse_dump(fetch_enwik8(cache_dir), progress=True), out)
    return out


def write_corpus(rows: Iterator[dict], out: Path) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    _atomic_write(out, data)
    return out


def _paragraphs(wikitext: str) -> Iterator[str]:
    """Plain-text paragraphs of one article, boilerplate sections and markup removed."""
    dropped_level = None  # while inside a dropped section, its heading level (its subsections go too)
    for section in mwparserfromhell.parse(PRE_STRIP.sub("", wikitext)).get_sections(flat=True, include_lead=True):
        head = section.nodes[0] if section.nodes and isinstance(section.nodes[0], Heading) else None
        if head is not None:
            if dropped_level is not None and head.level <= dropped_level:
                dropped_level = None
            if dropped_level is None and head.title.strip_code().strip().lower() in DROP_SECTIONS:
                dropped_level = head.level
            section.remove(head)
        if dropped_level is not None:
            continue
        for block in re.split(r"\n\s*\n", _strip(section)):
            lines = [" ".join(line.split()) for line in block.splitlines()]
            para = _tidy(" ".join(s for s in lines if len(s.split()) >= MIN_WORDS and not LEAKED_MARKUP.search(s)))
            if para:
                yield para


def _strip(code: Wikicode) -> str:
    """`strip_code()` after removing what it would leak (refs, tables, files, categories) and
    rendering the few templates whose text belongs in the sentence (it drops all the others)."""
    for node in list(code.filter(recursive=True, forcetype=(Template, Tag, Wikilink))):
        try:
            if isinstance(node, Template):
                if text := _template_text(node):
                    code.replace(node, text)
            elif _is_junk(node):
                code.remove(node)
        except ValueError:  # already gone with a removed parent
            pass
    return code.strip_code(normalize=True, collapse=True)


def _template_text(t: Template) -> str:
    name = str(t.name).strip()
    args = [p.value.strip_code().strip() for p in t.params if not p.showkey]
    key = name.lower()
    if key in INLINE_TEXT:
        return INLINE_TEXT[key]
    if key in ("convert", "cvt") and len(args) >= 2:  # {{convert|468|km2}} -> "468 km2"
        return " ".join(args[:4] if args[1] in ("-", "–", "to", "and", "or") and len(args) >= 4 else args[:2])
    if key == "lang" and len(args) >= 2:
        return args[1]
    if key == "nihongo" and args:
        return args[0]
    if key == "as of" and args:  # keeps the template's own capitalisation: "As of 2015"
        return f"{name} {args[0]}"
    return ""


def _is_junk(node: Tag | Wikilink) -> bool:
    if isinstance(node, Tag):
        return str(node.tag).strip().lower() in JUNK_TAGS
    title = str(node.title)
    return bool(JUNK_LINK.match(title) or (node.text is None and INTERLANGUAGE.match(title)))


def _tidy(text: str) -> str:
    """Clean the holes that removed templates leave behind, e.g. "Anarchism ( ; ) is"."""
    text = text.replace("''", "")  # unbalanced italics/bold quotes
    text = re.sub(r"\((\s*[,;:])*\s*\)", "", text)
    text = re.sub(r"\((\s*[,;:])+\s*", "(", text)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    return " ".join(text.split())


def _passages(paragraphs: Iterator[str]) -> Iterator[str]:
    """Merge short consecutive paragraphs, then split long ones on sentence boundaries."""
    buf = ""
    for para in paragraphs:
        buf = f"{buf} {para}" if buf else para
        if len(buf) >= MERGE_CHARS:
            yield from _pack(_pieces(buf))
            buf = ""
    if buf:
        yield from _pack(_pieces(buf))


def _pieces(text: str) -> Iterator[str]:
    for sentence in SENTENCE_END.split(text):
        yield from [sentence] if len(sentence) <= MAX_CHARS else sentence.split()  # a run-on list: words


def _pack(pieces: Iterator[str]) -> Iterator[str]:
    """Greedily join pieces with spaces into chunks of at most MAX_CHARS."""
    chunk = ""
    for piece in pieces:
        if chunk and len(chunk) + 1 + len(piece) > MAX_CHARS:
            yield chunk
            chunk = piece
        else:
            chunk = f"{chunk} {piece}" if chunk else piece
    if chunk:
        yield chunk


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop the export-0.10 XML namespace


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is a shared data file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
