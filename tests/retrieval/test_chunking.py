import pytest

from dspyc.errors import DataError
from dspyc.retrieval.chunking import chunk_documents, chunk_text, corpus_hash, split_sentences
from dspyc.retrieval.types import Passage


def sentences(n: int, words: int = 7) -> list[str]:
    # "S<i> w w ... ." with exactly `words` words, so sizes are easy to reason about.
    return [f"S{i} " + " ".join(["w"] * (words - 2)) + " end." for i in range(n)]


def test_split_sentences_keeps_abbreviations_and_initials():
    text = 'Dr. Who aired in the U.S. in 1963. J. R. R. Tolkien wrote it? Yes! "Quoted." Then more.'
    assert split_sentences(text) == [
        "Dr. Who aired in the U.S. in 1963.",
        "J. R. R. Tolkien wrote it?",
        "Yes!",
        '"Quoted."',
        "Then more.",
    ]


def test_chunks_respect_size_and_sentence_boundaries():
    sents = sentences(20)
    chunks = chunk_text(" ".join(sents), size=30, overlap=10)
    for c in chunks:
        assert len(c.split()) <= 30
        # every chunk is a run of whole sentences
        assert c.startswith("S") and c.endswith("end.")
    covered = {s for c in chunks for s in sents if s in c}
    assert covered == set(sents)


def test_overlap_carries_whole_trailing_sentences():
    sents = sentences(10)  # 7 words each; overlap 10 fits exactly one sentence
    chunks = chunk_text(" ".join(sents), size=28, overlap=10)
    assert chunks[0] == " ".join(sents[0:4])
    assert chunks[1] == " ".join(sents[3:7])  # starts with the last sentence of the previous chunk
    assert chunks[2] == " ".join(sents[6:10])
    assert len(chunks) == 3  # no trailing chunk made only of carried-over text


def test_zero_overlap_partitions_the_text():
    sents = sentences(9)
    chunks = chunk_text(" ".join(sents), size=21, overlap=0)
    assert chunks == [" ".join(sents[i : i + 3]) for i in (0, 3, 6)]


def test_overlap_smaller_than_a_sentence_carries_nothing():
    sents = sentences(6)
    chunks = chunk_text(" ".join(sents), size=14, overlap=5)
    assert chunks == [" ".join(sents[0:2]), " ".join(sents[2:4]), " ".join(sents[4:6])]


def test_only_an_oversized_sentence_is_cut():
    long = " ".join(f"X{i}" for i in range(25)) + "."
    chunks = chunk_text(f"Short one here. {long} Tail sentence.", size=10, overlap=2)
    assert chunks[0] == "Short one here."
    windows = chunks[1:-1]
    assert all(len(w.split()) <= 10 for w in windows)
    assert windows[0].split()[0] == "X0" and windows[1].split()[0] == "X8"  # step = size - overlap
    assert windows[-1].endswith("X24.")
    assert chunks[-1] == "Tail sentence."


def test_short_text_is_one_chunk_and_empty_text_none():
    assert chunk_text("One. Two.", 120, 20) == ["One. Two."]
    assert chunk_text("   ", 120, 20) == []


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_rejected(size, overlap):
    with pytest.raises(ValueError):
        chunk_text("A b.", size, overlap)


def test_ids_are_counted_per_title_across_rows():
    docs = [
        {"title": "Alpha", "text": " ".join(sentences(6))},
        {"title": "Beta", "text": "Just one sentence."},
        {"title": "Alpha", "text": "A second Alpha row."},
    ]
    ps = chunk_documents(docs, size=14, overlap=0)
    assert [p.id for p in ps] == ["Alpha#0", "Alpha#1", "Alpha#2", "Beta#0", "Alpha#3"]
    assert all(p.title == p.id.split("#")[0] for p in ps)
    assert ps[-1].text == "A second Alpha row."
    assert chunk_documents(docs, size=14, overlap=0) == ps  # deterministic


def test_bad_rows_raise_data_error():
    with pytest.raises(DataError):
        chunk_documents([{"text": "no title"}])
    with pytest.raises(DataError):
        chunk_documents([{"title": "  ", "text": "x"}])


def test_corpus_hash_is_stable_and_sensitive():
    a = [Passage("T#0", "T", "ab"), Passage("T#1", "T", "c")]
    b = [Passage("T#0", "T", "a"), Passage("T#1", "T", "bc")]
    assert corpus_hash(a) == corpus_hash(list(a))
    assert len(corpus_hash(a)) == 16 and int(corpus_hash(a), 16) >= 0
    assert corpus_hash(a) != corpus_hash(b)
    assert corpus_hash(a) != corpus_hash(a[::-1])
