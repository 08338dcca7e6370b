from dspyc.retrieval.mentions import Mentions, names, normalize
from dspyc.retrieval.types import Passage


def test_names_are_capitalised_runs_joined_by_particles_and_cut_at_punctuation():
    assert names("Which magazine was published first, Guitar World or Science News?") == [
        "Guitar World",
        "Science News",
    ]
    assert names("Did the Battle of Pusan Perimeter or the Battle of Peleliu happen first?") == [
        "Battle of Pusan Perimeter",
        "Battle of Peleliu",
    ]
    # a question word opening a run is no name, nor is a number; a possessive is dropped
    assert names("When did Bobby Sands's hunger strike end in 1981?") == ["Bobby Sands"]
    assert names("Was Big Hero 6 made by Apple Inc.after 2010?") == ["Big Hero", "Apple Inc."]
    assert names("Rhiwallon ap Cynfyn, was a Welsh King") == ["Rhiwallon ap Cynfyn", "Welsh King"]
    assert names("What is the capital of France?") == ["France"]
    assert names("how many rooms?") == []


def test_normalize_drops_case_possessives_and_punctuation():
    assert normalize("The Women's National Basketball League, (WNBL)") == " the women national basketball league wnbl "


def test_a_name_is_mentioned_when_a_passage_holds_its_words_in_order():
    m = Mentions(
        [
            Passage(
                id="1",
                title="Toad Hall",
                text="A residence of the Australian National University, for American students.",
            ),
            Passage(id="2", title="WNBL", text="The Women's National Basketball League includes Adelaide."),
            Passage(id="3", title="Patriots", text="An American patriot, and an American."),
        ]
    )
    assert m.mentions("Toad Hall") and m.mentions("Women National Basketball League")
    assert not m.mentions("Hall Toad") and not m.mentions("Dale Cregan")
    assert m.missing("Toad Hall is in which Australian city near Dale Cregan's home?") == ["Dale Cregan"]
    # a misspelt long word is read as its closest corpus word; a short rare name is taken as written
    assert m.mentions("Amercian Patriot") and not m.mentions("Tood Hall")
    # a common word run on after a name ("... Adelaide American"): the name is enough
    assert m.mentions("Toad Hall American") and not m.mentions("Toad Hall Adelaide")
    import copy

    assert copy.deepcopy({"m": m})["m"] is m
