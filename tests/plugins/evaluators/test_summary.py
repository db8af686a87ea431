"""Summary rows aggregate categories the way BFCL v4 does, over the categories present only."""

from __future__ import annotations

import pytest

from itool.plugins.evaluators.summary import summarize
from itool.schemas import Verdict


def verdicts(category: str, valid: int, total: int) -> list[Verdict]:
    return [Verdict(sample_id=f"{category}_{i}", category=category, valid=i < valid) for i in range(total)]


def test_rows_follow_bfcl_v4_aggregation():
    rows = summarize([
        *verdicts("simple_python", 3, 4), *verdicts("simple_java", 1, 2), *verdicts("multiple", 1, 1),
        *verdicts("live_simple", 1, 1), *verdicts("live_multiple", 0, 3),
        *verdicts("irrelevance", 1, 1), *verdicts("live_irrelevance", 0, 1), *verdicts("live_relevance", 1, 2),
        *verdicts("multi_turn_base", 1, 4), *verdicts("multi_turn_miss_func", 3, 4),
    ])
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


def test_rows_without_any_of_their_categories_are_left_out():
    rows = summarize(verdicts("live_simple", 1, 2))
    assert rows == {"overall": 0.5, "live": 0.5, "accuracy": 0.5, "live_simple": 0.5}
    assert summarize([]) == {}
