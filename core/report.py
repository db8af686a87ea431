"""The run's final report: report.md (stage times, evaluation rows per stage) and curves.png."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from itool.rundir import RunDir, atomic_path, write_text


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


def write_report(run: RunDir) -> Path:
    state = run.state
    results = state["results"]
    evals = {stage: r["summary"] for stage, r in results.items() if stage.endswith(".eval") and r}
    rows = sorted({row for summary in evals.values() for row in summary})
    lines = [f"# Run report: {run.path.name}", "", "## Stages", "", "| stage | seconds | result |", "|---|---:|---|"]
    for stage in state["completed"]:
        result = results.get(stage) or {}
        brief = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in result.items() if k not in ("seconds", "summary"))
        lines.append(f"| {stage} | {result.get('seconds', 0):.1f} | {brief} |")
    lines.append(f"\nTotal: {sum((r or {}).get('seconds', 0) for r in results.values()):.1f} s\n")
    if evals:
        lines += ["## Evaluation (accuracy, %)", "", "| row | " + " | ".join(evals) + " |",
                  "|---|" + "---:|" * len(evals)]
        for row in rows:
            cells = [f"{100 * s[row]:.2f}" if row in s else "" for s in evals.values()]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        plot = _plot(run.path / "curves.png", evals, rows)
        lines += ["", f"![evaluation by stage]({plot.name})"]
    path = run.path / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _plot(path: Path, evals: dict[str, dict[str, float]], rows: list[str]) -> Path:
    stages = list(evals)
    with png_figure(path, (max(6, 1.2 * len(evals)), 4)) as ax:
        for row in rows:
            ax.plot(stages, [100 * evals[s].get(row, float("nan")) for s in stages], marker="o", label=row)
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Evaluation after each stage")
        ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    return path
