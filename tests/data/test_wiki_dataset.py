"""The offline Wikipedia RAG dataset: committed files are consistent, and the prepare step is faithful."""

import bz2
import gzip
import json
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from dspyc.data.wikipedia import parse_dump, prepare
from dspyc.errors import DataError

WIKI = Path(__file__).resolve().parents[2] / "datasets" / "wiki"
FIELDS = {"id", "question", "answer", "type", "supporting_titles", "answer_kind"}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    passages: dict[str, list[str]] = {}
    for row in _jsonl(WIKI / "corpus.jsonl"):
        assert set(row) == {"title", "text"} and row["title"] and row["text"]
        passages.setdefault(row["title"], []).append(row["text"].lower())
    return passages


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    return _jsonl(WIKI / "questions.jsonl")


def test_question_rows_are_well_formed(questions):
    for q in questions:
        assert set(q) == FIELDS, q
        assert q["type"] in {"single", "bridge", "comparison"}, q
        assert q["answer_kind"] in {"extractive", "yes_no", "entity"}, q
        assert q["question"].strip() and q["answer"].strip(), q
        assert isinstance(q["supporting_titles"], list) and q["supporting_titles"], q
    assert len({q["id"] for q in questions}) == len(questions)


def test_question_counts(questions):
    assert len(questions) >= 150
    two_hop = [q for q in questions if q["type"] in {"bridge", "comparison"}]
    assert len(two_hop) >= 50
    for q in two_hop:
        assert len(set(q["supporting_titles"])) == 2, q
    kinds = Counter(q["answer_kind"] for q in questions)
    assert kinds["extractive"] > len(questions) / 2


def test_supporting_titles_exist(questions, corpus):
    missing = [(q["id"], t) for q in questions for t in q["supporting_titles"] if t not in corpus]
    assert not missing


def test_answers_are_grounded(questions, corpus):
    def in_gold(q: dict) -> bool:
        return any(q["answer"].lower() in p for t in q["supporting_titles"] for p in corpus.get(t, []))

    for q in questions:
        if q["answer_kind"] == "extractive":
            assert in_gold(q), q
        elif q["answer_kind"] == "yes_no":
            assert q["answer"] in {"yes", "no"}, q
        else:
            assert q["answer"] in q["supporting_titles"] or in_gold(q), q


def _page(title: str, ns: int, wikitext: str, redirect: str | None = None) -> str:
    redirect_tag = f'<redirect title="{escape(redirect)}" />' if redirect else ""
    return (
        f"<page><title>{escape(title)}</title><ns>{ns}</ns><id>1</id>{redirect_tag}"
        f'<revision><text xml:space="preserve">{escape(wikitext)}</text></revision></page>'
    )


ARTICLE = """{{Infobox widget|name=Foo|inventor=Nobody}}
'''Foo''' is a small test article about widgets and gadgets.<ref>{{cite web|url=http://example.com|title=Cited}}</ref> It was invented in 1901 by [[Jane Doe|Jane]] in [[Paris]].

[[File:Foo.jpg|thumb|A caption that should vanish]]
The second paragraph has more than enough words to be kept as prose.<ref name="x"/>

{| class="wikitable"
| a table cell that should vanish || another cell
|}

== History ==
The history section of this article is also perfectly ordinary prose.

== References ==
{{reflist}}
* A citation line that must not appear in the output at all, ever.

[[Category:Widgets]]
"""


def test_parse_dump_strips_markup_and_skips_redirects(tmp_path):
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
        + _page("Foo", 0, ARTICLE)
        + _page("Bar", 0, "#REDIRECT [[Foo]]", redirect="Foo")
        + _page("Talk:Foo", 1, "This talk page discussion has plenty of words in it.")
        + "</mediawiki>"
    )
    dump = tmp_path / "tiny.xml.bz2"
    dump.write_bytes(bz2.compress(xml.encode("utf-8")))

    rows = list(parse_dump(dump))
    assert rows and {r["title"] for r in rows} == {"Foo"}
    text = " ".join(r["text"] for r in rows)
    assert "Foo is a small test article about widgets and gadgets." in text
    assert "invented in 1901 by Jane in Paris" in text
    assert "history section" in text
    for leak in (
        "{{",
        "}}",
        "[[",
        "<ref",
        "cite web",
        "http",
        "Infobox",
        "caption",
        "table cell",
        "Category",
        "citation line",
        "References",
    ):
        assert leak not in text, leak


@pytest.mark.integration
def test_prepare_reproduces_committed_corpus(tmp_path):
    from dspyc.settings import get_settings

    try:
        out = prepare(tmp_path, get_settings().cache_dir)
    except DataError as e:
        pytest.skip(f"the gensim wheel with the dump excerpt could not be obtained: {e}")
    assert out == tmp_path / "corpus.jsonl"
    assert out.read_bytes() == (WIKI / "corpus.jsonl").read_bytes()


def test_an_old_dump_cut_mid_page_ends_at_its_last_whole_page(tmp_path):
    """enwik8: an export-0.3 dump (no `<ns>`, redirects only as "#REDIRECT" text), gzip, cut in the middle of a page."""
    pages = [
        f"<page><title>{title}</title><revision><text>{escape(text)}</text></revision></page>"
        for title, text in [
            ("Foo", ARTICLE),
            ("Bar", "#REDIRECT [[Foo]]"),
            ("Talk:Foo", "This talk page discussion has plenty of words in it."),
            ("Baz", "The Baz article is a whole page with enough words in it to keep."),
        ]
    ]
    xml = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.3/">' + "".join(pages)
    cut = xml + "<page><title>Cut</title><revision><text>This page never ends because the dump"
    dump = tmp_path / "enwik.gz"
    dump.write_bytes(gzip.compress(cut.encode("utf-8")))

    rows = list(parse_dump(dump))
    assert [r["title"] for r in rows if r["title"] != "Foo"] == ["Baz"]
    assert "history section" in " ".join(r["text"] for r in rows if r["title"] == "Foo")
