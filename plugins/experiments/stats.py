"""Paired statistics for the experiment report: per-arm accuracy with a 95% interval, and for two arms
scored on the same test samples the paired difference with a bootstrap interval and McNemar's exact test.

Pairing matters: the arms answer the same questions, so most of the sampling noise (which questions
were drawn) is shared and cancels in the per-sample difference. Pure functions over verdicts
(sample id -> (category, right or wrong)); no model, no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from itool.report import Summarize, SummaryRow, percentile_interval, stratified_draws, summary_bootstrap
from itool.schemas import Verdict

ALL_SAMPLES = "all samples"  # the unweighted share of samples, not BFCL's weighted overall

Verdicts = dict[str, tuple[str, bool]]  # sample id -> (category, valid)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under 'no difference' each discordant pair (one arm right, the
    other wrong) is a fair coin, so min(b, c) is Binomial(b + c, 1/2). Exact integer sums, any size."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(a: list[bool], b: list[bool], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a − b, lower, upper): percentile bootstrap over samples, each resample keeping pairs
    together. A fixed seed makes the report reproducible."""
    deltas = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if deltas.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):  # bounded memory on the full-size test set
        count = min(500, resamples - start)
        means[start:start + count] = deltas[rng.integers(0, deltas.size, (count, deltas.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(deltas.mean()), float(low), float(high)


def by_row(verdicts: Verdicts) -> dict[str, list[str]]:
    """Row -> sample ids: one row per category (sorted), then all samples."""
    rows: dict[str, list[str]] = {}
    for sample_id, (category, _) in sorted(verdicts.items()):
        rows.setdefault(category, []).append(sample_id)
    return {**dict(sorted(rows.items())), ALL_SAMPLES: sorted(verdicts)}


@dataclass(frozen=True)
class PairedRow:
    row: str
    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    low: float
    high: float
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p: float

    @property
    def real(self) -> bool:
        """Both tests agree that A and B differ: the interval excludes 0 and p < 0.05."""
        return (self.low > 0 or self.high < 0) and self.p < 0.05


def compare_paired(a: Verdicts, b: Verdicts, resamples: int = 2000, seed: int = 0) -> list[PairedRow]:
    """A against B per row, on the samples both arms were scored on (none: no rows)."""
    shared = {i: a[i] for i in a if i in b}
    if not shared:
        return []
    rows = []
    for row, ids in by_row(shared).items():
        right_a = [a[i][1] for i in ids]
        right_b = [b[i][1] for i in ids]
        diff, low, high = paired_bootstrap(right_a, right_b, resamples, seed)
        only_a = sum(x and not y for x, y in zip(right_a, right_b))
        only_b = sum(y and not x for x, y in zip(right_a, right_b))
        rows.append(PairedRow(row, len(ids), sum(right_a) / len(ids), sum(right_b) / len(ids), diff, low, high,
                              only_a, only_b, mcnemar_exact_p(only_a, only_b)))
    return rows


def comparison_table(rows: list[PairedRow], name_a: str, name_b: str) -> list[str]:
    lines = [f"| row | n | {name_a} | {name_b} | difference | 95% CI | b | c | McNemar p |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.row} | {r.n} | {100 * r.accuracy_a:.1f} | {100 * r.accuracy_b:.1f} | "
                     f"{100 * r.difference:+.1f} | [{100 * r.low:+.1f}, {100 * r.high:+.1f}] | {r.b} | {r.c} | "
                     f"{r.p:.3g} |")
    return lines


def comparison_sentence(rows: list[PairedRow], name_a: str, name_b: str) -> str:
    """In words: is the difference on all samples real, and on which category rows is it real."""
    overall = next(r for r in rows if r.row == ALL_SAMPLES)
    said = (f"{name_a} − {name_b} on all {overall.n} samples: {100 * overall.difference:+.1f} points "
            f"(95% CI [{100 * overall.low:+.1f}, {100 * overall.high:+.1f}], McNemar p = {overall.p:.3g}, "
            f"{overall.b} samples only {name_a} got right, {overall.c} only {name_b}): ")
    if overall.real:
        said += f"a real difference, {name_a if overall.difference > 0 else name_b} is better."
    else:
        said += "not distinguishable from no difference at this size."
    real = [r.row for r in rows if r.real and r.row != ALL_SAMPLES]
    said += (f" Real on the rows: {', '.join(real)}." if real else " No category row differs beyond its interval.")
    return said


def summary_differences(a: list[Verdict], b: list[Verdict], summarize: Summarize, resamples: int = 1000,
                        seed: int = 0) -> list[SummaryRow]:
    """A − B on every summary row, on the samples both were scored on, with a 95% paired stratified
    bootstrap interval (the same resampled samples for both arms)."""
    by_id = {v.sample_id: v for v in b}
    a = [v for v in a if v.sample_id in by_id]
    b = [by_id[v.sample_id] for v in a]
    if not a:
        return []
    draws = stratified_draws([v.category for v in a], resamples, seed)
    point_a, point_b = summarize(a), summarize(b)
    spread_a, spread_b = summary_bootstrap(a, summarize, draws), summary_bootstrap(b, summarize, draws)
    return [SummaryRow(row, point_a[row] - point_b[row], *percentile_interval(spread_a[row] - spread_b[row]))
            for row in point_a if row in point_b and row in spread_a and row in spread_b]
