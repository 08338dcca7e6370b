from dspyc.metrics import exact_match, mean, normalize_answer, title_recall, token_f1


def test_normalize_answer():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"


def test_exact_match_and_f1():
    assert exact_match("the Paris", "Paris") == 1.0
    assert token_f1("Paris France", "Paris") == 2 * 0.5 * 1 / 1.5
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("yes it is", "yes") == 0.0  # yes/no need an exact match


def test_title_recall_and_mean():
    assert title_recall(["A", "C"], ["A", "B"]) == 0.5
    assert title_recall([], []) == 0.0
    assert mean([]) == 0.0 and mean([1, 0]) == 0.5
