"""Summary rows aggregate categories the way BFCL v4 does: by default as the leaderboard (what was not
evaluated counts 0), with ``scoring="itool"`` over the categories present only."""

from __future__ import annotations

import pytest

from itool.plugins.evaluators.summary import summarize
from itool.schemas import Verdict


def verdicts(category: str, valid: int, total: int) -> list[Verdict]:
    return [Verdict(sample_id=f"{category}_{i}", category=category, valid=i < valid) for i in range(total)]


SOME = [
    *verdicts("simple_python", 3, 4), *verdicts("simple_java", 1, 2), *verdicts("multiple", 1, 1),
    *verdicts("live_simple", 1, 1), *verdicts("live_multiple", 0, 3),
    *verdicts("irrelevance", 1, 1), *verdicts("live_irrelevance", 0, 1), *verdicts("live_relevance", 1, 2),
    *verdicts("multi_turn_base", 1, 4), *verdicts("multi_turn_miss_func", 3, 4),
]


def test_by_default_categories_not_evaluated_count_zero_as_on_the_leaderboard():
    rows = summarize(SOME)
    assert rows["non_live_simple"] == pytest.approx((0.75 + 0.5 + 0) / 3)  # simple_javascript: 0
    assert rows["non_live"] == pytest.approx((rows["non_live_simple"] + 1.0 + 0 + 0) / 4)
    # live_parallel (16 entries) and live_parallel_multiple (24) weigh in with their full BFCL sizes.
    assert rows["live"] == pytest.approx((1 * 1 + 0 * 3) / (1 + 3 + 16 + 24))
    assert rows["multi_turn"] == pytest.approx((0.25 + 0.75 + 0 + 0) / 4)
    assert rows["agentic"] == 0.0  # web search and memory are not run by itool
    assert rows["irrelevance_detection"] == pytest.approx(0.5) and rows["relevance_detection"] == 0.5
    weighted = (10 * rows["non_live"] + 10 * rows["live"] + 10 * 0.5 + 30 * rows["multi_turn"] + 40 * 0) / 100
    assert rows["overall"] == pytest.approx(weighted)
    assert rows["accuracy"] == pytest.approx(12 / 23)
    assert list(rows)[:2] == ["overall", "non_live"]


def test_a_perfect_single_turn_run_scores_at_most_30_percent_overall_by_default():
    rows = summarize([Verdict(sample_id=c, category=c, valid=True) for c in
                      ["simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
                       "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
                       "irrelevance", "live_irrelevance"]])
    assert rows["non_live"] == rows["live"] == rows["irrelevance_detection"] == 1.0
    assert rows["multi_turn"] == 0.0 and rows["overall"] == pytest.approx(0.3)
    assert "relevance_detection" not in rows  # not part of overall; shown only when evaluated


def test_itool_scoring_averages_over_the_categories_present():
    rows = summarize(SOME, "itool")
    assert rows["simple_python"] == 0.75 and rows["simple_java"] == 0.5
    assert rows["non_live_simple"] == pytest.approx((0.75 + 0.5) / 2)  # unweighted over simple languages
    assert rows["non_live"] == pytest.approx((0.625 + 1.0) / 2)  # irrelevance is not part of it
    assert rows["live"] == pytest.approx(1 / 4)  # weighted by sample count: (1 + 0) / (1 + 3)
    assert rows["multi_turn"] == pytest.approx(0.5)
    assert rows["irrelevance_detection"] == pytest.approx(0.5) and rows["relevance_detection"] == 0.5
    weighted = (10 * rows["non_live"] + 10 * rows["live"] + 10 * 0.5 + 30 * 0.5) / 60
    assert rows["overall"] == pytest.approx(weighted)
    assert rows["accuracy"] == pytest.approx(12 / 23)
    assert list(rows)[:2] == ["overall", "non_live"]


def test_itool_rows_without_any_of_their_categories_are_left_out():
    rows = summarize(verdicts("live_simple", 1, 2), "itool")
    assert rows == {"overall": 0.5, "live": 0.5, "accuracy": 0.5, "live_simple": 0.5}
    assert summarize([], "itool") == summarize([]) == {}
