"""The run report: evaluation rows with 95% intervals (Wilson for categories, a stratified bootstrap for
the evaluator's aggregate rows), a sentence on what the size can show, and a plot of the aggregates only."""

from __future__ import annotations

import pytest

from itool.report import stratified_draws, summary_intervals, wilson_interval, write_report
from itool.rundir import RunDir, write_json, write_jsonl
from toy_verdicts import summary_of, verdict_objects


@pytest.mark.parametrize("right, n, low, high", [
    (0, 10, 0.0, 0.2775),   # upper = z²/n / (1 + z²/n) by hand, z = 1.95996
    (10, 10, 0.7225, 1.0),
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_interval_matches_hand_computed_values(right, n, low, high):
    assert wilson_interval(right, n) == pytest.approx((low, high), abs=1e-4)


def test_stratified_draws_resample_each_category_within_itself():
    categories = ["a"] * 5 + ["b"] * 3
    draws = stratified_draws(categories, 200, seed=1)
    assert draws.shape == (200, 8)
    assert set(draws[:, :5].ravel()) <= set(range(5)) and set(draws[:, 5:].ravel()) <= {5, 6, 7}
    assert (draws == stratified_draws(categories, 200, seed=1)).all()


def test_an_aggregate_row_gets_a_bootstrap_interval_around_its_value():
    verdicts = verdict_objects([True] * 30 + [False] * 10, "big") + verdict_objects([True] * 2 + [False] * 8, "small", 40)
    (row,) = summary_intervals(verdicts, summary_of, resamples=500)
    assert row.row == "macro" and row.value == pytest.approx((0.75 + 0.2) / 2)
    assert row.low < row.value < row.high
    assert 0.2 < row.high - row.low < 0.5  # the 10-sample category dominates the spread




def test_the_run_report_gives_every_row_an_interval_and_says_what_its_size_can_show(tmp_path):
    run = RunDir.create(tmp_path, "r", {"seed": 0})
    verdicts = verdict_objects([True] * 6 + [False] * 14, "calls") + verdict_objects([True] * 8 + [False] * 2, "no-calls", 20)
    stage = run.stage_dir("warmup.eval")
    write_jsonl(stage / "verdicts.jsonl", verdicts)
    write_json(stage / "summary.json", summary_of(verdicts))
    run.complete("warmup.eval", {"summary": {**summary_of(verdicts), "calls": 0.3, "no-calls": 0.8}, "n": 30})
    report = write_report(run, summary_of).read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "[" in line]
    assert rows[0].startswith("| macro | 55.0 [")  # the aggregate first, with its bootstrap interval
    assert "| calls | 30.0 [14.5, 51.9] |" in report  # Wilson, 6 of 20
    assert "30 held-out samples" in report and "noise at this size" in report
    assert (run.path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    without = write_report(run).read_text()
    assert "| macro | 55.0 |" in without  # no summarize: the aggregate without an interval
