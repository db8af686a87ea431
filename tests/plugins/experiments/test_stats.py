"""Paired statistics of the experiment report: intervals, McNemar's exact test, the paired bootstrap, and
the report section they make from the arms' verdict files."""

from __future__ import annotations

import json

import pytest

import loop_plugins
from itool.plugins.experiments.stats import (
    ALL_SAMPLES, compare_paired, comparison_sentence, mcnemar_exact_p, paired_bootstrap, summary_differences)
from toy_verdicts import summary_of, verdict_objects


def test_mcnemar_exact_p_is_the_two_sided_binomial_test_on_discordant_pairs():
    assert mcnemar_exact_p(10, 2) == pytest.approx(0.0386, abs=1e-4)  # 2 · (1 + 12 + 66) / 2¹²
    assert mcnemar_exact_p(2, 10) == mcnemar_exact_p(10, 2)
    assert mcnemar_exact_p(7, 7) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0
    assert 0 < mcnemar_exact_p(600, 400) < 1e-8  # exact sums stay finite on a full-size test set


def test_the_bootstrap_interval_of_identical_arms_is_zero():
    same = [True, False, True, True, False] * 8
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0)


def test_a_clear_difference_has_an_interval_that_excludes_zero_and_is_reproducible():
    a = [True] * 50
    b = [True] * 10 + [False] * 40
    diff, low, high = paired_bootstrap(a, b)
    assert diff == pytest.approx(0.8)
    assert 0.6 < low < 0.8 < high <= 0.9
    assert paired_bootstrap(a, b) == (diff, low, high)


def verdicts(rights: list[bool], category: str, start: int = 0) -> dict[str, tuple[str, bool]]:
    return {f"s{start + i:03d}": (category, right) for i, right in enumerate(rights)}


def test_compare_paired_counts_discordant_samples_per_category_and_over_all_samples():
    a = {**verdicts([True] * 30, "simple"), **verdicts([True, False] * 5, "multiple", 30)}
    b = {**verdicts([False] * 30, "simple"), **verdicts([True, False] * 5, "multiple", 30)}
    rows = {r.row: r for r in compare_paired(a, b)}
    assert list(rows) == ["multiple", "simple", ALL_SAMPLES]
    assert (rows["simple"].b, rows["simple"].c, rows["simple"].real) == (30, 0, True)
    assert (rows["multiple"].b, rows["multiple"].c, rows["multiple"].p, rows["multiple"].real) == (0, 0, 1.0, False)
    assert rows[ALL_SAMPLES].n == 40 and rows[ALL_SAMPLES].difference == pytest.approx(0.75)
    said = comparison_sentence(list(rows.values()), "A", "B")
    assert "a real difference, A is better" in said and "Real on the rows: simple." in said


def test_a_small_difference_is_said_to_be_indistinguishable():
    a = verdicts([True] * 6 + [False] * 4, "simple")
    b = verdicts([True] * 5 + [False] * 5, "simple")
    said = comparison_sentence(compare_paired(a, b), "A", "B")
    assert "not distinguishable from no difference at this size" in said


def test_arms_scored_on_different_samples_are_paired_on_the_shared_ones_only():
    a = verdicts([True] * 4, "simple")
    b = verdicts([False] * 4, "simple", start=2)
    assert [r.n for r in compare_paired(a, b)] == [2, 2]
    assert compare_paired(a, verdicts([True], "simple", start=10)) == []


def toy_experiment(tmp_path, comparisons) -> dict:
    return {
        "title": "Toy paired statistics",
        "runs_dir": str(tmp_path / "runs"),
        "report": str(tmp_path / "docs" / "results.md"),
        "seeds": [0],
        "common": {**loop_plugins.TOY_CONFIG, "train_limit": 4},
        "runs": {"base": {"config": {"warmup": "none", "rounds": 0}},
                 "sft": {"config": {"eval_base": False, "rounds": 0}}},
        "arms": [{"name": "Base", "run": "base", "stage": "base.eval"},
                 {"name": "SFT", "run": "sft", "stage": "warmup.eval"}],
        "comparisons": comparisons,
    }


def write_verdicts(path, rows: dict[str, tuple[str, bool]]) -> None:
    path.write_text("".join(json.dumps({"sample_id": i, "category": c, "valid": v}) + "\n"
                            for i, (c, v) in rows.items()))


def test_the_report_has_interval_columns_and_a_paired_table_per_comparison(itool, tmp_path, write_experiment):
    path = write_experiment(toy_experiment(tmp_path, [["SFT", "Base"]]))
    assert itool("experiment", path).exit_code == 0
    # Verdicts of a larger test set: SFT fixes 12 of 20 'simple' samples and breaks 2 'irrelevance' ones.
    write_verdicts(tmp_path / "runs" / "base-s0" / "base.eval" / "verdicts.jsonl",
                   {**verdicts([False] * 20, "simple"), **verdicts([True] * 10, "irrelevance", 20)})
    write_verdicts(tmp_path / "runs" / "sft-s0" / "warmup.eval" / "verdicts.jsonl",
                   {**verdicts([True] * 12 + [False] * 8, "simple"),
                    **verdicts([False] * 2 + [True] * 8, "irrelevance", 20)})
    result = itool("experiment", path, "--report-only")
    assert result.exit_code == 0, result.output
    arms, report = (tmp_path / "docs" / "results.md").read_text().split("## Arms")[1].split("## Paired comparisons")
    assert "| row | n | Base (seed 0) | SFT (seed 0) |" in arms
    assert "| simple | 20 | 0.0 [0.0, 16.1] | 60.0 [38.7, 78.1] |" in arms
    assert "| all samples | 30 | 33.3 [19.2, 51.2] | 66.7 [48.8, 80.8] |" in arms
    assert "### SFT − Base" in report
    assert "| simple | 20 | 60.0 | 0.0 | +60.0 |" in report and "| 12 | 0 | 0.000488 |" in report
    assert "| irrelevance | 10 | 80.0 | 100.0 | -20.0 |" in report and "| 0 | 2 | 0.5 |" in report
    assert "SFT − Base on all 30 samples: +33.3 points" in report
    assert "a real difference, SFT is better. Real on the rows: simple." in report


def test_comparisons_must_name_arms(itool, tmp_path, write_experiment):
    result = itool("experiment", write_experiment(toy_experiment(tmp_path, [["SFT", "iTool"]])))
    assert result.exit_code == 2
    assert "comparisons name unknown arm 'iTool' (arms: Base, SFT)" in result.output
    assert "Traceback" not in result.output


def test_a_paired_aggregate_difference_is_zero_for_identical_arms_and_clear_for_a_real_gain():
    before = verdict_objects([False] * 40, "x") + verdict_objects([True] * 20, "y", 40)
    (same,) = summary_differences(before, before, summary_of, resamples=300)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    after = verdict_objects([True] * 30 + [False] * 10, "x") + verdict_objects([True] * 20, "y", 40)
    (gain,) = summary_differences(after, before, summary_of, resamples=300)
    assert gain.value == pytest.approx(0.375) and gain.low > 0.2
