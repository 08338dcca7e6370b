"""Paired intervals (dspyc.stats): a student's share of its teacher's score."""

import pytest

from dspyc.stats import paired_ratio


def test_a_share_of_the_teacher_has_an_interval_that_narrows_with_more_examples():
    teacher, student = [1.0, 1.0, 0.0, 1.0] * 15, [1.0, 0.0, 0.0, 1.0] * 15  # 60 items: 2/3 of the teacher
    share, (low, high) = paired_ratio(student, teacher)
    assert share == pytest.approx(2 / 3) and low < share < high
    _, (low4, high4) = paired_ratio(student * 4, teacher * 4)
    assert low < low4 < share < high4 < high
    assert paired_ratio(student, teacher) == paired_ratio(student, teacher)  # seeded


def test_no_share_of_a_teacher_that_scores_nothing():
    assert paired_ratio([1.0, 0.0], [0.0, 0.0]) is None
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 0.0])
