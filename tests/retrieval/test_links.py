from dspyc.retrieval.links import TitleLinks
from dspyc.retrieval.types import Passage


def _p(title: str, i: int = 0) -> Passage:
    return Passage(id=f"{title}#{i}", title=title, text=f"about {title}")


def test_titles_are_found_whole_word_in_order_of_mention_longest_first():
    links = TitleLinks([_p("New York"), _p("New York City"), _p("York"), _p("Paris"), _p("Parisian Opera")])
    texts = ["Born in New York City, she moved to Paris.", "Parish records say York."]
    assert [p.title for p in links.named_in(texts, set(), 5)] == ["New York City", "Paris", "York"]


def test_found_titles_short_titles_and_the_cap_are_respected():
    links = TitleLinks([_p("Lyon"), _p("Lyon", 1), _p("Nice"), _p("Rome"), _p("Oslo"), _p("The")])
    text = ["Lyon, Nice, Rome and Oslo. The end."]
    assert [p.id for p in links.named_in(text, {"Nice"}, 2)] == ["Lyon#0", "Rome#0"]  # a title's first passage
    assert "The" not in [p.title for p in links.named_in(text, set(), 9)]  # 3 characters: a common word
    assert links.named_in(["lyon and rome"], set(), 9) == []  # case is kept


def test_a_copied_program_shares_the_index():
    import copy

    links = TitleLinks([_p("Lyon")])
    assert copy.deepcopy({"links": links})["links"] is links
