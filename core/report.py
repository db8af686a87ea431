"""The run's final report: report.md (stage times, evaluation rows per stage with 95% intervals) and
curves.png; the interval arithmetic the experiment report shares."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from itool.rundir import RunDir, atomic_path, read_jsonl, write_text
from itool.schemas import Verdict

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
Summarize = Callable[[list[Verdict]], dict[str, float]]  # an evaluator's summary rows of a verdict list


# -- intervals --------------------------------------------------------------------------------------
def wilson_interval(right: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike the normal approximation it stays inside [0, 1]
    and does not collapse to a point at 0/n or n/n, which small category rows often are."""
    if n == 0:
        return 0.0, 1.0
    share = right / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


Summarize = Callable[[list[Verdict]], dict[str, float]]


def stratified_draws(categories: list[str], resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n) sample indices, each row resampling every category within itself: the test subset
    is stratified by category, so each resample keeps its category sizes (and BFCL's weights)."""
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, len(categories)), dtype=np.int64)
    positions: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        positions.setdefault(category, []).append(index)
    for members in positions.values():
        members_arr = np.asarray(members)
        draws[:, members_arr] = members_arr[rng.integers(0, len(members), (resamples, len(members)))]
    return draws


def summary_bootstrap(verdicts: list[Verdict], summarize: Summarize, draws: np.ndarray) -> dict[str, np.ndarray]:
    """row -> the row's value on every resample (``draws`` index ``verdicts``)."""
    values: dict[str, list[float]] = {}
    for draw in draws:
        for row, value in summarize([verdicts[i] for i in draw]).items():
            values.setdefault(row, []).append(value)
    return {row: np.asarray(v) for row, v in values.items() if len(v) == len(draws)}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class SummaryRow:
    row: str
    value: float
    low: float
    high: float


def summary_intervals(verdicts: list[Verdict], summarize: Summarize, resamples: int = 1000,
                      seed: int = 0) -> list[SummaryRow]:
    """Every summary row of one arm with a 95% stratified-bootstrap interval."""
    point = summarize(verdicts)
    spread = summary_bootstrap(verdicts, summarize, stratified_draws([v.category for v in verdicts], resamples, seed))
    return [SummaryRow(row, value, *percentile_interval(spread[row])) for row, value in point.items() if row in spread]



# -- figures ----------------------------------------------------------------------------------------


@contextmanager
def png_figure(path: Path, figsize: tuple[float, float]) -> Iterator[Any]:
    """Axes of a new headless matplotlib figure, written atomically to ``path`` as a PNG when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


def grouped_bars(path: Path, columns: dict[str, dict[str, float]], rows: list[str], title: str, ylabel: str = "accuracy (%)",
                 errors: dict[str, dict[str, float | tuple[float, float]]] | None = None) -> None:
    """One group of bars per row, one bar per column (values already in the unit of ``ylabel``).
    ``errors``: whisker lengths per column and row, one number (both ways) or (down, up)."""
    width = 0.8 / max(1, len(columns))
    with png_figure(path, (max(6, 0.45 * len(rows) * max(1, len(columns))), 4.2)) as ax:
        for i, (name, values) in enumerate(columns.items()):
            xs = [r + (i - (len(columns) - 1) / 2) * width for r in range(len(rows))]
            yerr = None
            if errors:
                spans = [(errors.get(name) or {}).get(row, 0.0) for row in rows]
                yerr = [[s[0] if isinstance(s, tuple) else s for s in spans],
                        [s[1] if isinstance(s, tuple) else s for s in spans]]
            ax.bar(xs, [values.get(row, float("nan")) for row in rows], width, yerr=yerr, capsize=2, label=name)
        ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)


def evaluator_summary(ctx: Any) -> Summarize | None:
    """The configured evaluator's summary rows of a verdict list (its ``summarize=`` registration), if it has one."""
    evaluator, opts = ctx.component("evaluator")
    summarize = evaluator.attrs.get("summarize")
    return None if summarize is None else (lambda verdicts: summarize(verdicts, opts))


def category_counts(verdicts: Iterable[Verdict]) -> dict[str, tuple[int, int]]:
    """category -> (valid, total), in the order the categories first appear."""
    counts: dict[str, tuple[int, int]] = {}
    for v in verdicts:
        valid, total = counts.get(v.category, (0, 0))
        counts[v.category] = (valid + v.valid, total + 1)
    return counts


def stage_intervals(verdicts: list[Verdict], summarize: Summarize | None) -> dict[str, tuple[float, float]]:
    """row -> 95% interval: category rows Wilson, aggregate rows a stratified bootstrap (with ``summarize``)."""
    found: dict[str, tuple[float, float]] = {}
    if summarize is not None and verdicts:
        found.update({r.row: (r.low, r.high) for r in summary_intervals(verdicts, summarize)})
    found.update({category: wilson_interval(right, n) for category, (right, n) in category_counts(verdicts).items()})
    return found


def size_sentence(n: int, categories: int) -> str:
    """What an evaluation of this size can and cannot show, in numbers."""
    low, high = wilson_interval(n // 2, n)
    per_category = max(1, n // max(1, categories))
    low_c, high_c = wilson_interval(per_category // 2, per_category)
    return (f"{n} held-out samples: an accuracy near 50% is known to about ±{50 * (high - low):.0f} points (95%), "
            f"a category row of {per_category} samples to about ±{50 * (high_c - low_c):.0f}. Differences between "
            "stages smaller than that are noise at this size: the run shows that every stage works and how the "
            "answers move, not whether a stage helps. `itool experiment experiments/bfcl_cpu.yaml` is the size "
            "that can tell (paired tests on 417 samples).")


def write_report(run: RunDir, summarize: Summarize | None = None) -> Path:
    """report.md and curves.png; with the evaluator's ``summarize``, aggregate rows get intervals too."""
    state = run.state
    results = state["results"]
    evals = {stage: r["summary"] for stage, r in results.items() if stage.endswith(".eval") and r}
    verdicts = {stage: read_jsonl(run.path / stage / "verdicts.jsonl", Verdict)
                for stage in evals if (run.path / stage / "verdicts.jsonl").is_file()}
    intervals = {stage: stage_intervals(found, summarize) for stage, found in verdicts.items()}
    categories = {v.category for found in verdicts.values() for v in found}
    rows = list(dict.fromkeys(row for summary in evals.values() for row in summary))
    aggregates = [row for row in rows if row not in categories and any(s.get(row) for s in evals.values())]
    rows = aggregates + sorted(row for row in rows if row in categories)
    lines = [f"# Run report: {run.path.name}", "", "## Stages", "", "| stage | seconds | result |", "|---|---:|---|"]
    for stage in state["completed"]:
        result = results.get(stage) or {}
        brief = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in result.items() if k not in ("seconds", "summary"))
        lines.append(f"| {stage} | {result.get('seconds', 0):.1f} | {brief} |")
    lines.append(f"\nTotal: {sum((r or {}).get('seconds', 0) for r in results.values()):.1f} s\n")
    if evals:
        lines += ["## Evaluation (accuracy, % [95% interval])", "", "| row | " + " | ".join(evals) + " |",
                  "|---|" + "---:|" * len(evals)]
        for row in rows:
            cells = []
            for stage, summary in evals.items():
                span = intervals.get(stage, {}).get(row)
                value = f"{100 * summary[row]:.1f}" if row in summary else ""
                cells.append(f"{value} [{100 * span[0]:.1f}, {100 * span[1]:.1f}]" if value and span else value)
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        if verdicts:
            n = max(len(found) for found in verdicts.values())
            lines += ["", size_sentence(n, len(categories))]
        plot = _plot(run.path / "curves.png", evals, aggregates or rows, intervals)
        lines += ["", f"![evaluation by stage]({plot.name})"]
    path = run.path / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _plot(path: Path, evals: dict[str, dict[str, float]], rows: list[str],
          intervals: dict[str, dict[str, tuple[float, float]]]) -> Path:
    """The summary rows by stage, whiskers at their 95% interval where known."""
    stages = list(evals)
    with png_figure(path, (max(6, 1.2 * len(evals)), 4)) as ax:
        for row in rows:
            values = [100 * evals[s].get(row, float("nan")) for s in stages]
            spans = [intervals.get(s, {}).get(row) for s in stages]
            down = [v - 100 * span[0] if span else 0.0 for v, span in zip(values, spans)]
            up = [100 * span[1] - v if span else 0.0 for v, span in zip(values, spans)]
            ax.errorbar(stages, values, yerr=[down, up], marker="o", capsize=3, label=row)
        ax.set_ylabel("accuracy (%), 95% interval")
        ax.set_title("Evaluation after each stage")
        ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    return path
