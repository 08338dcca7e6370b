"""The offline default RAG corpus: ~100 real English Wikipedia articles turned into passages.

The articles come from a MediaWiki XML dump excerpt that ships as test data inside the ``gensim``
wheel, so a fresh machine can build the corpus with nothing but PyPI. ``prepare`` is deterministic:
the same dump always gives a byte-identical ``corpus.jsonl``.
"""

from __future__ import annotations

import bz2
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import mwparserfromhell
from mwparserfromhell.nodes import Heading, Tag, Template, Wikilink
from mwparserfromhell.wikicode import Wikicode

from dspyc.errors import DataError

GENSIM = "gensim==4.4.0"
DUMP_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

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
    cache_dir = Path(cache_dir)
    dump = cache_dir / Path(DUMP_MEMBER).name
    if dump.is_file():  # written atomically, so present means complete
        return dump
    wheels = cache_dir / "wheels"
    found = sorted(wheels.glob("gensim-4.4.0-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", GENSIM, "-d", str(wheels)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("gensim-4.4.0-*.whl"))
        if proc.returncode != 0 or not found:
            why = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataError(f"could not download the {GENSIM} wheel with pip (offline?): {why}")
    with zipfile.ZipFile(found[0]) as zf, zf.open(DUMP_MEMBER) as src:
        _atomic_write(dump, src.read())
    return dump


def parse_dump(bz2_path: Path) -> Iterator[dict]:
    """Stream `{"title", "text"}` passages (several per article) from a bz2 MediaWiki XML dump."""
    with bz2.open(bz2_path, "rb") as f:
        for _, elem in ElementTree.iterparse(f, events=("end",)):
            if _local(elem.tag) != "page":
                continue
            fields = {_local(e.tag): e for e in elem.iter()}
            title, ns, text = fields.get("title"), fields.get("ns"), fields.get("text")
            if ns is not None and ns.text == "0" and "redirect" not in fields and text is not None and text.text:
                for passage in _passages(_paragraphs(text.text)):
                    yield {"title": title.text.strip(), "text": passage}
            elem.clear()  # keep memory flat on big dumps


def prepare(out_dir: Path, cache_dir: Path) -> Path:
    """Write `out_dir/corpus.jsonl` from the gensim dump excerpt; return its path."""
    rows = parse_dump(fetch_gensim_dump(cache_dir))
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    out = Path(out_dir) / "corpus.jsonl"
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
