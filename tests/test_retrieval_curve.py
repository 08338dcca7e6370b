"""`dspyc eval-retrieval --add-corpus DIR --sizes N,...`: recall by corpus size (dspyc/retrieval_report.py).

A 12-passage QA folder (one passage per capital, 24 questions), a QA folder of filler passages and a corpus-only
folder of passages that copy the questions' wording. Indexing runs for real (bm25s, an in-memory Qdrant) with a
hashing embedder and a word-overlap reranker in place of MiniLM, in a private cache; no LM is called."""

import io
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

from dspyc.errors import DspycError
from dspyc.retrieval_report import cumulative, parse_sizes, sample

TOPICS = [
    "Paris",
    "Berlin",
    "Rome",
    "Madrid",
    "Vienna",
    "Lisbon",
    "Prague",
    "Dublin",
    "Oslo",
    "Athens",
    "Warsaw",
    "Bern",
]
THINGS = ["bridges", "bakeries", "trams", "museums", "parks", "markets", "towers", "fountains", "libraries", "harbours"]


def own_rows():
    return [
        {"title": t, "text": f"{t} is a European capital. The river of {t} is called the {t} river."} for t in TOPICS
    ]


def filler_rows():
    """32 rows: 30 titles, "Filler 0" twice (one article, two passages: both kept), and a second "Paris" (dropped)."""
    rows = [
        {
            "title": f"Filler {i}",
            "text": f"The town of Filler {i} is known for its {THINGS[i % 10]} and {THINGS[i * 3 % 10]}.",
        }
        for i in range(30)
    ]
    return rows + [
        {"title": "Filler 0", "text": "Filler 0 also has a small airport."},
        {"title": "Paris", "text": "Paris is also a prince of Troy in Greek myth."},
    ]


def echo_rows():
    """One passage per capital that repeats the question's words (BM25 prefers it to the gold passage), and a
    "Filler 3" already pooled from the filler folder (dropped)."""
    return [
        {"title": f"Quiz about {t}", "text": f"Which river flows through {t}? Which river flows through {t}?"}
        for t in TOPICS
    ] + [{"title": "Filler 3", "text": "Filler 3 again."}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def folders(tmp_path):
    own, filler, echo = tmp_path / "caps", tmp_path / "filler", tmp_path / "echo"
    for d in (own, filler, echo):
        d.mkdir()
    write_jsonl(own / "corpus.jsonl", own_rows())
    write_jsonl(
        own / "questions.jsonl",
        [
            {
                "id": f"q{i}",
                "question": f"Which river flows through {t}?",
                "answer": f"the {t} river",
                "supporting_titles": [t],
            }
            for i, t in enumerate(TOPICS * 2)
        ],
    )
    write_jsonl(filler / "corpus.jsonl", filler_rows())
    write_jsonl(
        filler / "questions.jsonl",
        [{"id": "f1", "question": "What is Filler 1 known for?", "answer": "trams", "supporting_titles": ["Filler 1"]}],
    )
    write_jsonl(echo / "corpus.jsonl", echo_rows())  # a corpus-only folder: a pool of distractors has no questions
    return own, filler, echo


# --- pooling and sampling (no index) -----------------------------------------------------------------------------


def test_pooling_skips_titles_already_in_the_corpus_and_each_size_holds_the_one_before():
    corpora = cumulative("caps", own_rows(), [("filler", filler_rows()), ("echo", echo_rows())])
    assert [c.label for c in corpora] == ["caps", "+ filler", "+ echo"]
    assert [len(c.rows) for c in corpora] == [12, 12 + 31, 12 + 31 + 12]
    for smaller, larger in zip(corpora, corpora[1:]):
        assert larger.rows[: len(smaller.rows)] == smaller.rows
    last = corpora[-1].rows
    assert [r["text"] for r in last if r["title"] == "Paris"] == [own_rows()[0]["text"]]  # the gold one, once
    assert [r["text"] for r in last if r["title"] == "Filler 3"] == [filler_rows()[3]["text"]]
    assert sum(r["title"] == "Filler 0" for r in last) == 2  # an added article keeps all its passages


def test_sizes_keep_every_gold_passage_and_a_larger_size_holds_a_smaller_one():
    pool = cumulative("caps", own_rows(), [("filler", filler_rows()), ("echo", echo_rows())])[-1].rows
    gold = {"Paris", "Rome", "Oslo"}
    corpora = sample(pool, 12, gold, [40, 5, 20], seed=0)
    assert [len(c.rows) for c in corpora] == [5, 20, 40] and corpora[0].label == "sample 5"
    for c in corpora:
        assert gold <= {r["title"] for r in c.rows}
        assert [r for r in pool if r in c.rows] == c.rows  # pool order kept
    for smaller, larger in zip(corpora, corpora[1:]):
        assert all(r in larger.rows for r in smaller.rows)
    assert {r["title"] for r in corpora[0].rows} <= set(TOPICS)  # below the program's size: its own rows only
    assert all(r in corpora[1].rows for r in own_rows())  # above it: every own row, then sampled distractors
    assert sample(pool, 12, gold, [20], seed=0)[0].rows == corpora[1].rows
    assert sample(pool, 12, gold, [20], seed=1)[0].rows != corpora[1].rows


@pytest.mark.parametrize("size, message", [(2, "the 3 gold passages"), (56, "the 55 passages of the pool")])
def test_a_size_outside_gold_and_pool_is_a_user_error(size, message):
    pool = cumulative("caps", own_rows(), [("filler", filler_rows()), ("echo", echo_rows())])[-1].rows
    with pytest.raises(DspycError, match=message):
        sample(pool, 12, {"Paris", "Rome", "Oslo"}, [10, size], seed=0)


def test_parse_sizes():
    assert parse_sizes("2000, 6k,0.5k") == (2000, 6000, 500) and parse_sizes(None) == ()
    with pytest.raises(DspycError, match="--sizes 'two'"):
        parse_sizes("two")


# --- the whole report, indexed for real with fakes for the models --------------------------------------------------


class HashingEmbedder:
    """Bag of words hashed into 64 buckets (no model to load)."""

    def encode(self, sentences, **_):
        out = np.zeros((len(sentences), 64), dtype=np.float32)
        for i, s in enumerate(sentences):
            for w in s.lower().replace(".", " ").replace("?", " ").split():
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        return out


class OverlapReranker:
    def score(self, query, passages):
        words = set(query.lower().split())
        return [float(len(words & set(p.text.lower().split()))) for p in passages]


@pytest.fixture
def offline(tmp_path, monkeypatch, request):
    """A private cache and artifact store, the hashing embedder, and a reranker 'trained' by counting."""
    import dspyc.retrieval
    from dspyc import retrieval_report
    from dspyc.console import console as make_console
    from dspyc.retrieval.rerank import CrossEncoderReranker
    from dspyc.settings import get_settings

    monkeypatch.setenv("DSPYC_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("DSPYC_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    monkeypatch.setattr(dspyc.retrieval, "load_embedder", lambda *a, **k: HashingEmbedder())
    trained = []
    monkeypatch.setattr(
        CrossEncoderReranker,
        "train_or_load",
        classmethod(lambda cls, pairs, cache_dir, **kw: trained.append(pairs) or OverlapReranker()),
    )
    out = io.StringIO()
    monkeypatch.setattr(retrieval_report, "console", make_console(file=out))
    return type(
        "Offline",
        (),
        {"trained": trained, "printed": out.getvalue, "report_dir": tmp_path / "artifacts" / "rag" / "report"},
    )


def test_add_corpus_gives_one_block_per_size_and_copied_wording_lowers_bm25_recall(folders, offline):
    from dspyc.retrieval_report import report

    own, filler, echo = folders
    points = report("rag", data=str(own), split="dev", add_corpus=[str(filler), str(echo)])
    assert [(p.corpus, p.passages) for p in points] == [("caps", 12), ("+ filler", 43), ("+ echo", 55)]
    assert all(list(p.scores) == ["bm25", "dense", "hybrid", "hybrid+rerank"] for p in points)
    bm25 = [p.scores["bm25"]["recall@1"] for p in points]
    assert bm25[0] == 1.0 and bm25[2] < bm25[0]  # the curve can fall: the echo passages outrank the gold ones
    assert len(offline.trained) == 1  # the reranker is trained once, on the program's own corpus
    saved = json.loads((offline.report_dir / "retrieval-caps-dev.json").read_text())
    assert [b["passages"] for b in saved["points"]] == [12, 43, 55]
    assert saved["points"][2]["scores"]["bm25"]["recall@1"] == bm25[2] and saved["questions"] == 8
    assert (offline.report_dir / "retrieval-caps-dev.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = offline.printed().splitlines()
    for label, size in (("caps", "12"), ("+ filler", "43"), ("+ echo", "55")):
        assert any(label in ln and f" {size} " in ln and "bm25" in ln for ln in lines), offline.printed()
    assert sum(" hybrid+rerank " in ln for ln in lines) == 3
    # what each size costs: hybrid latency, index and vectors on disk, memory; index time where built here
    scale = saved["points"][2]["scale"]
    assert 0 < scale["hybrid_p50_ms"] <= scale["hybrid_p99_ms"] and scale["peak_rss_gb"] > 0
    assert scale["bm25_index_mb"] > 0 and scale["index_s"] > 0
    assert scale["vectors_mb"] == 55 * 64 * 4 / 1e6  # 64: the hashing embedder's buckets
    assert "index_s" not in saved["points"][0]["scale"]  # the program's own corpus: built with the reranker, before
    assert "hybrid p99 ms" in offline.printed() and any(" + echo " in ln and "–" not in ln for ln in lines[-8:])


def test_sizes_score_samples_of_the_pool(folders, offline):
    from dspyc.retrieval_report import report

    own, filler, echo = folders
    points = report("rag", data=str(own), split="dev", add_corpus=[str(filler), str(echo)], sizes=(50, 20))
    assert [(p.corpus, p.passages) for p in points] == [("sample 20", 20), ("sample 50", 50)]
    saved = json.loads((offline.report_dir / "retrieval-caps-dev.json").read_text())
    assert [b["corpus"] for b in saved["points"]] == ["sample 20", "sample 50"]


def test_an_encoder_adds_trained_rows_at_every_size(folders, offline, monkeypatch, tmp_path):
    from dspyc import retrieval_report
    from dspyc.retrieval_report import encoder_folder, report

    class Blind(HashingEmbedder):
        """An 'encoder' that sees only the first word: worse than the base one, and told apart from it."""

        def encode(self, sentences, **kw):
            return super().encode([(s.split() or [""])[0] for s in sentences], **kw)

    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    loaded = []
    monkeypatch.setattr(retrieval_report, "load_encoder", lambda path: loaded.append(path) or Blind())
    own, filler, _ = folders
    points = report("rag", data=str(own), split="dev", add_corpus=[str(filler)], encoder=encoder_folder(str(folder)))
    assert all(list(p.scores)[-2:] == ["dense·trained", "hybrid·trained"] for p in points)
    assert loaded == [folder, folder]
    assert points[0].scores["dense·trained"]["recall@5"] < points[0].scores["dense"]["recall@5"]


def test_with_program_scores_the_program_itself_over_every_corpus(folders, offline, monkeypatch):
    from types import SimpleNamespace

    import dspyc.compiler
    import dspyc.lm
    from dspyc.retrieval_report import report

    seen = []

    def fake_evaluate(program, examples, spec, num_threads, label):
        corpus = program.retriever  # the hybrid over the corpus it was built on
        seen.append((len(examples), len(corpus.retrievers[0].passages)))
        return SimpleNamespace(scores={"retrieval_recall": 1.0 / len(seen), "errors": 0})

    monkeypatch.setattr(dspyc.compiler, "evaluate", fake_evaluate)
    monkeypatch.setattr(dspyc.lm, "configure", lambda s: None)
    own, filler, _ = folders
    points = report("rag", data=str(own), split="dev", add_corpus=[str(filler)], with_program=True)
    assert [n for _, n in seen] == [12, 43] and {n for n, _ in seen} == {8}  # each corpus, the dev questions
    assert [p.program for p in points] == [{"retrieval_recall": 1.0}, {"retrieval_recall": 0.5}]
    saved = json.loads((offline.report_dir / "retrieval-caps-dev.json").read_text())
    assert saved["points"][1]["program"] == {"retrieval_recall": 0.5}
    assert "the program itself" in offline.printed()


# --- the command line ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--add-corpus", "/no/such/folder"], "--add-corpus /no/such/folder: dataset '/no/such/folder' not found"),
        (["--sizes", "1"], "--sizes 1: a size must lie between the"),
        (["--sizes", "2k,many"], "--sizes '2k,many'"),
        (["--encoder", "/no/such/folder"], "--encoder '/no/such/folder': neither a folder nor a version"),
        (["--encoder", "rag@1"], "rag@1 not found"),
    ],
)
def test_user_mistakes_are_one_line_errors(folders, tmp_path, args, message):
    import os

    env = {**os.environ, "DSPYC_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "DSPYC_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-m", "dspyc.cli", "eval-retrieval", "--program", "rag", "--data", str(folders[0]), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
