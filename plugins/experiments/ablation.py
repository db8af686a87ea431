"""Command ``itool experiment``: an ablation (arms × seeds), a loss comparison and a data-scaling sweep,
from one config file, ending in a markdown report with PNG plots.

An experiment is made of ordinary itool runs, one run directory each, so an interrupted experiment
continues where it stopped and a finished one only rewrites the report. *Runs* are config layers over
a shared one, repeated over seeds; *arms* (the table's columns) each read one evaluation stage of one
run: e.g. the Warm-up and iTool arms are the ``warmup.eval`` and ``round1.eval`` stages of the same
run. A run may start from another run's adapters (same seed): best-of-n starts from iTool's warm-up.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from itool import hookimpl
from itool.errors import ItoolError, describe_validation_error
from itool.plugins.experiments.stats import (
    ALL_SAMPLES, Verdicts, accuracy_table, compare_paired, comparison_sentence, comparison_table)
from itool.rundir import CONFIG_FILE, STATE_FILE, RunDir, check_output_file, made_by_itool, read_jsonl, write_text


RESAMPLES = 2000  # bootstrap resamples per paired difference


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict, description="Run config layer over the shared one.")
    seeds: list[int] | None = Field(None, description="Seeds of this run (default: the experiment's).")
    start_from: str | None = Field(
        None, description="RUN:STAGE: start from that run's adapters (same seed) up to and including STAGE.")

    @property
    def source(self) -> tuple[str, str] | None:
        """(run, stage) of ``start_from``."""
        if not self.start_from:
            return None
        run, _, stage = self.start_from.partition(":")
        return run, stage


class ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    run: str
    stage: str = Field(description="The evaluation stage of the run that is this arm's result.")


class CompareSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="Run whose pairs every loss trains on.")
    pairs_stage: str = "round1.pairs"
    start_stage: str = Field("warmup", description="Every loss starts from the run's adapters up to this stage.")
    start_arm: str | None = Field(None, description="Arm whose evaluation is the 'start' column (no re-evaluation).")
    losses: list[str] = ["simpo", "dpo", "orpo", "ipo"]
    seed: int = 0


class ScalingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        description="Shares of the train data, each in (0, 1]; 1.0 reuses the main runs.")
    arms: list[str]
    seeds: list[int] = [0]
    row: str | None = Field(None, description="Evaluation row plotted (default: 'overall', else the evaluator's first).")


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    runs_dir: Path
    report: Path = Field(description="Markdown report; its plots go to a folder named after it.")
    seeds: list[int] = Field(min_length=1)
    common: dict[str, Any] = Field(default_factory=dict, description="Run config layer shared by every run.")
    runs: dict[str, RunSpec]
    arms: list[ArmSpec] = Field(min_length=1)
    compare: CompareSpec | None = None
    scaling: ScalingSpec | None = None
    comparisons: list[tuple[str, str]] = Field(
        default_factory=list, description="Pairs [A, B] of arm names: A − B paired on the same test samples.")
    notes: str = Field("", description="Text placed under the title (how the sizes were scaled, and why).")
    discussion: str = Field("", description="Text placed after the tables: what the numbers say and what was tried.")

    @model_validator(mode="after")
    def _names_exist(self) -> "ExperimentConfig":
        arms = {a.name: a for a in self.arms}
        for arm in self.arms:
            if arm.run not in self.runs:
                raise ValueError(f"arm {arm.name!r} names unknown run {arm.run!r}")
        for name, spec in self.runs.items():
            seen, run = {name}, spec
            while run.source:
                source = run.source[0]
                if source not in self.runs:
                    raise ValueError(f"run {name!r}: start_from names unknown run {run.start_from!r}")
                if source in seen:
                    raise ValueError(f"run {name!r}: start_from goes round in a circle through {source!r}")
                seen.add(source)
                run = self.runs[source]
        if self.compare and self.compare.run not in self.runs:
            raise ValueError(f"compare names unknown run {self.compare.run!r}")
        if self.compare and self.compare.seed not in self.seeds_of(self.compare.run):
            raise ValueError(f"compare.seed {self.compare.seed} is not a seed of run {self.compare.run!r}")
        if self.compare and self.compare.start_arm and self.compare.start_arm not in arms:
            raise ValueError(f"compare.start_arm names unknown arm {self.compare.start_arm!r}")
        for pair in self.comparisons:
            for name in pair:
                if name not in arms:
                    raise ValueError(f"comparisons name unknown arm {name!r} (arms: {', '.join(arms)})")
        for name in self.scaling.arms if self.scaling else []:
            if name not in arms:
                raise ValueError(f"scaling names unknown arm {name!r}")
            if self.runs[arms[name].run].start_from:
                raise ValueError(f"scaling arm {name!r}: runs that start from another run cannot be scaled")
        return self

    def seeds_of(self, run: str) -> list[int]:
        return self.runs[run].seeds or self.seeds


def read_experiment(path: Path) -> ExperimentConfig:
    from itool.config import read_config_file

    try:
        return ExperimentConfig.model_validate(read_config_file(path))
    except ValidationError as exc:
        raise ItoolError(f"{path}: {describe_validation_error(exc)}") from None


# -- the runs -------------------------------------------------------------------------------------
def run_name(run: str, seed: int, fraction: float = 1.0) -> str:
    return f"{run}-s{seed}" if fraction == 1.0 else f"{run}-p{round(100 * fraction)}-s{seed}"


def adapters_until(run_dir: Path, stage: str) -> list[Path]:
    """The run's adapters of the stages up to and including ``stage``, in the order they were made."""
    run = RunDir.open(run_dir)
    if not run.is_done(stage):
        raise ItoolError(f"{run_dir}: stage {stage} is not complete, so nothing can start from it")
    kept: list[Path] = []
    for adapter in run.adapters:
        kept.append(adapter)
        if adapter.relative_to(run.path).parts[0] == stage:
            break
    return kept


def planned_runs(exp: ExperimentConfig) -> list[tuple[str, str, int, float]]:
    """(run directory name, run, seed, fraction) in the order they run: seed by seed, so the first
    seed of every arm exists early; then the scaling sweep."""
    def depth(run: str) -> int:  # a run that starts from another goes after it
        source = exp.runs[run].source
        return 0 if source is None else 1 + depth(source[0])

    runs = sorted(exp.runs, key=depth)
    order: list[tuple[str, str, int, float]] = []
    for seed in sorted({s for run in exp.runs for s in exp.seeds_of(run)}, key=exp.seeds.index):
        order += [(run_name(run, seed), run, seed, 1.0) for run in runs if seed in exp.seeds_of(run)]
    if exp.scaling:
        arm_runs = list(dict.fromkeys(a.run for a in exp.arms if a.name in exp.scaling.arms))
        for fraction in sorted(f for f in exp.scaling.fractions if f < 1.0):
            for seed in exp.scaling.seeds:
                order += [(run_name(run, seed, fraction), run, seed, fraction) for run in arm_runs]
    return list(dict.fromkeys(order))


def run_layers(exp: ExperimentConfig, run: str, seed: int, fraction: float, train_size: int | None) -> list[dict]:
    spec = exp.runs[run]
    layers = [exp.common, spec.config, {"seed": seed, "runs_dir": str(exp.runs_dir),
                                        "name": run_name(run, seed, fraction)}]
    if fraction < 1.0:
        if train_size is None:
            raise ItoolError("scaling needs the train split's size: set common.train_limit")
        layers.append({"train_limit": max(1, round(fraction * train_size))})
    if spec.source:
        source, stage = spec.source
        layers.append({"adapters": [str(a) for a in adapters_until(exp.runs_dir / run_name(source, seed), stage)]})
    return layers


def ensure_run(registry: Any, layers: list[dict[str, Any]]) -> RunDir:
    """Run (or finish) the run these layers describe; a finished one is left as it is."""
    from itool.config import build_config, changed_keys, config_data, read_config_file
    from itool.loop import plan, run_loop
    from itool.report import write_report
    from itool.session import new_session, resume_session

    config = build_config(layers)
    path = config.runs_dir / config.name
    if (path / STATE_FILE).is_file():
        saved = config_data(build_config([read_config_file(path / CONFIG_FILE)]))
        changed = changed_keys(saved, config_data(config))
        if changed:
            raise ItoolError(f"{path} was run with other settings ({', '.join(changed)}); move it away or change runs_dir")
        ctx = resume_session(registry, path)
    else:
        ctx = new_session(registry, layers)
    if not all(ctx.run.is_done(stage.name) for stage in plan(ctx)):
        run_loop(ctx)
        write_report(ctx.run)
    run = ctx.run
    del ctx
    gc.collect()  # one policy in memory at a time
    return run


def compare_pairs(exp: ExperimentConfig) -> Path:
    return exp.runs_dir / run_name(exp.compare.run, exp.compare.seed) / exp.compare.pairs_stage / "pairs.jsonl"


def compare_ready(exp: ExperimentConfig) -> bool:
    """The comparison's pairs exist and are not empty (a run that made no pairs has nothing to compare)."""
    state = _state(exp.runs_dir / run_name(exp.compare.run, exp.compare.seed))
    return bool(state) and exp.compare.pairs_stage in state["completed"] and bool(read_jsonl(compare_pairs(exp)))


def ensure_compare(exp: ExperimentConfig, registry: Any) -> None:
    from itool.plugins.trainers.compare import compare_losses, read_pairs

    spec = exp.compare
    out = exp.runs_dir / "compare"
    if (out / "compare.json").is_file():
        return
    if made_by_itool(out):  # an interrupted comparison: its finished losses are redone with the rest
        import shutil

        shutil.rmtree(out)
    source = exp.runs_dir / run_name(spec.run, spec.seed)
    pairs_path = compare_pairs(exp)
    pairs = read_pairs(pairs_path)
    layers = [exp.common, exp.runs[spec.run].config, {"seed": spec.seed}]
    compare_losses(registry, spec.losses, pairs_path, pairs, adapters_until(source, spec.start_stage), out, layers,
                   eval_start=spec.start_arm is None, start_label=f"{source.name} after {spec.start_stage}")


def train_size_of(exp: ExperimentConfig, registry: Any) -> int | None:
    from itool.config import build_config
    from itool.session import plan_session

    config = build_config([exp.common])
    if config.train_limit is not None:
        return config.train_limit
    return len(plan_session(registry, [exp.common]).samples("train")) if exp.scaling else None


# -- the report -----------------------------------------------------------------------------------
def _state(path: Path) -> dict[str, Any] | None:
    return RunDir.open(path).state if (path / STATE_FILE).is_file() and (path / CONFIG_FILE).is_file() else None


def arm_summaries(exp: ExperimentConfig, arm: ArmSpec, fraction: float = 1.0,
                  seeds: list[int] | None = None) -> dict[int, dict[str, float]]:
    """seed -> evaluation summary of the arm, for the seeds whose run has finished that stage."""
    found = {}
    for seed in seeds or exp.seeds_of(arm.run):
        state = _state(exp.runs_dir / run_name(arm.run, seed, fraction))
        if state and arm.stage in state["completed"]:
            found[seed] = state["results"][arm.stage]["summary"]
    return found


def arm_verdicts(exp: ExperimentConfig, arm: ArmSpec, seed: int) -> Verdicts:
    """sample id -> (category, valid): the per-sample verdicts of the arm's run of that seed (none if
    the stage kept no verdict file)."""
    path = exp.runs_dir / run_name(arm.run, seed) / arm.stage / "verdicts.jsonl"
    if not path.is_file():
        return {}
    return {v["sample_id"]: (v["category"], bool(v["valid"])) for v in read_jsonl(path)}


def first_seed(exp: ExperimentConfig, *arms: ArmSpec) -> int | None:
    """The first seed (the experiment's seeds first, in order) whose runs of every one of ``arms`` have
    finished the arm's stage."""
    def finished(arm: ArmSpec, seed: int) -> bool:
        state = _state(exp.runs_dir / run_name(arm.run, seed))
        return bool(state) and arm.stage in state["completed"]

    seeds = dict.fromkeys([*exp.seeds, *(seed for arm in arms for seed in exp.seeds_of(arm.run))])
    return next((seed for seed in seeds if all(finished(arm, seed) for arm in arms)), None)


def paired_statistics(exp: ExperimentConfig) -> list[str]:
    """Per-sample statistics from the verdicts of one seed per arm: accuracy with Wilson intervals, and
    each configured comparison paired on the same test samples."""
    lines = ["## Paired statistics", "",
             "From the per-sample verdicts of one seed: the first seed of the experiment that the arm (for a "
             "comparison: both arms) has finished, named in each header. Rows are the evaluator's categories "
             f"and *{ALL_SAMPLES}*, the unweighted share of samples answered right (not BFCL's weighted "
             "overall). Intervals are 95%: Wilson score intervals for one arm's accuracy; for a difference, a "
             f"percentile bootstrap over samples (pairs kept together, {RESAMPLES} resamples, seed 0), with "
             "McNemar's exact two-sided p-value on the discordant samples (b: only A right, c: only B right). "
             "A difference is called real when its interval excludes 0 and p < 0.05.", ""]
    columns: dict[str, Verdicts] = {}
    for arm in exp.arms:
        seed = first_seed(exp, arm)
        verdicts = arm_verdicts(exp, arm, seed) if seed is not None else {}
        if verdicts:
            columns[f"{arm.name} (seed {seed})"] = verdicts
    if not columns:
        return lines + ["No arm has finished yet.", ""]
    lines += ["Accuracy in % [95% Wilson interval].", "", *accuracy_table(columns), ""]
    arms = {a.name: a for a in exp.arms}
    for name_a, name_b in exp.comparisons:
        lines += [f"### {name_a} − {name_b}", ""]
        seed = first_seed(exp, arms[name_a], arms[name_b])
        if seed is None:
            lines += ["Not available yet: the two arms share no finished seed.", ""]
            continue
        a, b = arm_verdicts(exp, arms[name_a], seed), arm_verdicts(exp, arms[name_b], seed)
        rows = compare_paired(a, b, RESAMPLES)
        if not rows:
            lines += [f"Seed {seed}: the two arms share no test sample.", ""]
            continue
        lines += [f"Seed {seed}, accuracy and difference in %.", "", *comparison_table(rows, name_a, name_b), "",
                  comparison_sentence(rows, name_a, name_b), ""]
    return lines


def mean_spread(values: list[float]) -> str:
    """``mean ± sd`` in percent (sample standard deviation over seeds); the mean alone for one seed."""
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def ablation_table(exp: ExperimentConfig) -> tuple[str, dict[str, dict[int, dict[str, float]]]]:
    by_arm = {arm.name: arm_summaries(exp, arm) for arm in exp.arms}
    rows = list(dict.fromkeys(row for seeds in by_arm.values() for summary in seeds.values() for row in summary))
    header = [f"{name} (n={len(seeds)})" for name, seeds in by_arm.items()]
    lines = ["| row | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for row in rows:
        cells = [mean_spread([s[row] for s in seeds.values() if row in s]) for seeds in by_arm.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines), by_arm


def paired_lines(by_arm: dict[str, dict[int, dict[str, float]]], row: str) -> list[str]:
    """A table of each arm's ``row``, one column per seed."""
    names = list(by_arm)
    seeds = sorted({s for found in by_arm.values() for s in found})
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for name in names:
        cells = [f"{100 * by_arm[name][s][row]:.1f}" if s in by_arm[name] and row in by_arm[name][s] else ""
                 for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def difference(by_arm: dict[str, dict[int, dict[str, float]]], a: str, b: str, row: str) -> str | None:
    """``a − b`` on ``row`` over the seeds both have: per seed, the mean and how many seeds favour ``a``."""
    seeds = [s for s in by_arm.get(a, {}) if s in by_arm.get(b, {}) and row in by_arm[a][s] and row in by_arm[b][s]]
    if not seeds:
        return None
    deltas = [100 * (by_arm[a][s][row] - by_arm[b][s][row]) for s in sorted(seeds)]
    better = sum(d > 0 for d in deltas)
    same = sum(d == 0 for d in deltas)
    return (f"{a} − {b} ({row}): mean {statistics.fmean(deltas):+.1f} points over {len(deltas)} seed(s) "
            f"({', '.join(f'{d:+.1f}' for d in deltas)}); {a} higher in {better}, equal in {same}.")


def stage_times(exp: ExperimentConfig) -> list[str]:
    lines = ["| run | stage | mean s | seeds |", "|---|---|---:|---:|"]
    for run in exp.runs:
        times: dict[str, list[float]] = {}
        for seed in exp.seeds_of(run):
            state = _state(exp.runs_dir / run_name(run, seed))
            for stage in (state or {}).get("completed", []):
                times.setdefault(stage, []).append(state["results"][stage].get("seconds", 0.0))
        for stage, values in times.items():
            lines.append(f"| {run} | {stage} | {statistics.fmean(values):.0f} | {len(values)} |")
        if times:
            total = sum(statistics.fmean(v) for v in times.values())
            lines.append(f"| {run} | **total** | **{total:.0f}** | |")
    return lines


def changed_answers(exp: ExperimentConfig, name: str, run: str, seed: int) -> str:
    """How many held-out answers the round changed: ``round1.eval`` against the evaluation just before it
    (the run's ``warmup.eval``, or that of the run it started from). Accuracy can stay put while answers move."""
    after = exp.runs_dir / name / "round1.eval" / "verdicts.jsonl"
    before = exp.runs_dir / name / "warmup.eval" / "verdicts.jsonl"
    source = exp.runs[run].source
    if source and not before.is_file():
        before = exp.runs_dir / run_name(source[0], seed) / f"{source[1]}.eval" / "verdicts.jsonl"
    if not (after.is_file() and before.is_file()):
        return ""
    old = {v["sample_id"]: v["output"] for v in read_jsonl(before)}
    new = {v["sample_id"]: v["output"] for v in read_jsonl(after)}
    return f"{sum(old.get(i) != out for i, out in new.items())} of {len(new)}"


def run_facts(exp: ExperimentConfig) -> list[str]:
    """Per finished round: the counts that explain its result (selected, nodes, pairs, training, answers changed)."""
    lines = ["| run | selected | search nodes | pairs | train loss | train margin | held-out answers changed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, run, seed, _ in planned_runs(exp):
        state = _state(exp.runs_dir / name)
        if not state or "round1.select" not in state["results"]:
            continue
        results = state["results"]

        def get(stage: str, key: str, results=results) -> str:
            value = (results.get(stage) or {}).get(key, "")
            return f"{value:.3g}" if isinstance(value, float) else str(value)

        lines.append(f"| {name} | {get('round1.select', 'selected')} of {get('round1.select', 'of')} | "
                     f"{get('round1.search', 'nodes')} | {get('round1.pairs', 'pairs')} | {get('round1.train', 'loss')} | "
                     f"{get('round1.train', 'reward_margin')} | {changed_answers(exp, name, run, seed)} |")
    return lines


def scaling_points(exp: ExperimentConfig, row: str) -> dict[str, list[tuple[float, float, int]]]:
    """arm -> (fraction, mean of ``row`` over seeds, number of seeds) for each fraction that has results."""
    spec, arms = exp.scaling, {a.name: a for a in exp.arms}
    points: dict[str, list[tuple[float, float, int]]] = {}
    for name in spec.arms:
        for fraction in sorted(spec.fractions):
            found = arm_summaries(exp, arms[name], fraction, spec.seeds)
            values = [s[row] for s in found.values() if row in s]
            if values:
                points.setdefault(name, []).append((fraction, statistics.fmean(values), len(values)))
    return points


def plot_arms(path: Path, by_arm: dict[str, dict[int, dict[str, float]]], rows: list[str]) -> None:
    from itool.report import grouped_bars

    means: dict[str, dict[str, float]] = {}
    spreads: dict[str, dict[str, float]] = {}
    for name, seeds in by_arm.items():
        if not seeds:
            continue
        label = f"{name} (n={len(seeds)})"
        values = {row: [100 * s[row] for s in seeds.values() if row in s] for row in rows}
        means[label] = {row: statistics.fmean(v) for row, v in values.items() if v}
        spreads[label] = {row: statistics.stdev(v) for row, v in values.items() if len(v) > 1}
    grouped_bars(path, means, rows, "Accuracy by arm", "accuracy (%), mean ± sd over seeds", errors=spreads)


def plot_scaling(path: Path, points: dict[str, list[tuple[float, float, int]]], row: str, train_size: int | None) -> None:
    from itool.report import png_figure

    with png_figure(path, (6, 4)) as ax:
        for name, series in points.items():
            ax.plot([100 * f for f, _, _ in series], [100 * v for _, v, _ in series], marker="o", label=name)
        ax.set_xlabel(f"share of the training data (%{f' of {train_size} samples' if train_size else ''})")
        ax.set_ylabel(f"{row} accuracy (%)")
        ax.legend()
        ax.grid(alpha=0.3)


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, GPU: {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_results(exp: ExperimentConfig, config_path: Path, train_size: int | None) -> Path:
    """The report: every table is computed from the run directories, so it says what they hold."""
    figures = exp.report.with_suffix("")
    figures.mkdir(parents=True, exist_ok=True)
    table, by_arm = ablation_table(exp)
    rows = list(dict.fromkeys(row for seeds in by_arm.values() for s in seeds.values() for row in s))
    headline = next((r for r in rows if r.lower() == "overall"), rows[0] if rows else "")
    lines = [f"# {exp.title}", "", exp.notes.strip(), "",
             f"Regenerate everything (runs that exist are reused): `itool experiment {config_path}`; "
             f"only the report: `itool experiment {config_path} --report-only`.", "",
             f"Hardware: {hardware()}. Code: commit {commit()}. Run directories: `{exp.runs_dir}/`.", "",
             "## Ablation", "",
             "Accuracy in % on the same held-out samples, mean ± sample standard deviation over seeds "
             "(n = number of seeds).", "", table, ""]
    if by_arm and rows:
        plot_arms(figures / "ablation.png", by_arm, rows)
        lines += [f"![ablation]({figures.name}/ablation.png)", "", f"### {headline}, seed by seed", "",
                  *paired_lines(by_arm, headline), ""]
        names = list(by_arm)
        for a, b in zip(names[1:], names[:-1]):
            said = difference(by_arm, a, b, headline)
            if said:
                lines.append(f"- {said}")
        lines.append("")
    lines += ["### What the reinforcement rounds had to work with", "", *run_facts(exp), ""]
    lines += paired_statistics(exp)
    if exp.compare:
        out = exp.runs_dir / "compare"
        lines += ["## Loss comparison", ""]
        if (out / "compare.json").is_file():
            import json

            from itool.plugins.trainers.compare import plot, results_table, summary_rows

            results = json.loads((out / "compare.json").read_text(encoding="utf-8"))
            if exp.compare.start_arm:
                start = arm_summaries(exp, next(a for a in exp.arms if a.name == exp.compare.start_arm),
                                      seeds=[exp.compare.seed]).get(exp.compare.seed)
                if start:
                    results["eval"] = {f"start ({exp.compare.start_arm})": start, **results["eval"]}
            plot(figures / "losses.png", results["eval"], summary_rows(results["eval"]))
            lines += [f"Every loss trains from `{results['start']}` on the same {results['n_pairs']} pairs "
                      f"(`{results['pairs']}`), seed {results['seed']}, and is evaluated on the same "
                      f"{results['n_eval']} held-out samples (accuracy %).", "", results_table(results), "",
                      f"![losses]({figures.name}/losses.png)", ""]
        else:
            made_none = compare_pairs(exp).is_file() and not read_jsonl(compare_pairs(exp))
            lines += [f"Not run: `{compare_pairs(exp)}` holds no pairs." if made_none else "Not run yet.", ""]
    if exp.scaling:
        row = exp.scaling.row or headline
        points = scaling_points(exp, row)
        lines += ["## Data scaling", "", f"{row} accuracy (%) against the share of the training data "
                  f"(seeds {exp.scaling.seeds}; 100% is the ablation's runs of those seeds).", "",
                  "| arm | " + " | ".join(f"{round(100 * f)}%" for f in sorted(exp.scaling.fractions)) + " |",
                  "|---|" + "---:|" * len(exp.scaling.fractions)]
        for name in exp.scaling.arms:
            found = {f: v for f, v, _ in points.get(name, [])}
            lines.append(f"| {name} | " + " | ".join(f"{100 * found[f]:.1f}" if f in found else "–"
                                                     for f in sorted(exp.scaling.fractions)) + " |")
        if points:
            plot_scaling(figures / "scaling.png", points, row, train_size)
            lines += ["", f"![scaling]({figures.name}/scaling.png)"]
        lines.append("")
    if exp.discussion.strip():
        lines += ["## Discussion", "", exp.discussion.strip(), ""]
    lines += ["## Wall time per stage", "", *stage_times(exp), ""]
    write_text(exp.report, "\n".join(lines) + "\n")
    return exp.report


# -- the command ----------------------------------------------------------------------------------
@click.command("experiment")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--report-only", is_flag=True, help="Only rewrite the report from the runs that exist.")
@click.option("--dry-run", is_flag=True, help="List the runs the experiment needs and which exist, then stop.")
def experiment(config_path: Path, report_only: bool, dry_run: bool) -> None:
    """Run an experiment config (arms × seeds, loss comparison, data scaling) and write its report.

    \b
    itool experiment experiments/bfcl_half.yaml
    Runs go to the config's runs_dir (finished ones are reused, a stopped one continues), the report
    and its PNG plots to the config's report path.
    """
    from itool.cli import get_registry

    exp = read_experiment(config_path)
    check_output_file(exp.report, f"{config_path}: report")  # before hours of runs, not after
    check_output_file(exp.report.with_suffix("") / "ablation.png", f"{config_path}: report figures")
    registry = get_registry()
    train_size = train_size_of(exp, registry)
    todo = planned_runs(exp)
    if dry_run:
        for name, *_ in todo:
            state = _state(exp.runs_dir / name)
            click.echo(f"{name:28s} {'exists' if state else 'to run'}"
                       f"{'' if not state else ' (' + ', '.join(state['completed']) + ')'}")
        return
    if not report_only:
        for index, (name, run, seed, fraction) in enumerate(todo):
            if exp.compare and compare_ready(exp):
                ensure_compare(exp, registry)  # as soon as its pairs exist: before the other seeds
            click.echo(f"experiment: run {index + 1}/{len(todo)}: {name}", err=True)
            ensure_run(registry, run_layers(exp, run, seed, fraction, train_size))
            write_results(exp, config_path, train_size)
        if exp.compare and compare_ready(exp):
            ensure_compare(exp, registry)
    report = write_results(exp, config_path, train_size)
    click.echo(f"report: {report}", err=True)


@hookimpl
def register_commands(cli):
    cli.add_command(experiment)
