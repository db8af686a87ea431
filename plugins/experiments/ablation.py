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
import hashlib
import os
import platform
import shlex
import statistics
import subprocess
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from itool import hookimpl
from itool.errors import ItoolError, describe_validation_error
from itool.plugins.experiments.stats import (
    ALL_SAMPLES, by_row, compare_paired, comparison_sentence, comparison_table, summary_differences)
from itool.plugins.experiments.stops import stops_table
from itool.report import Summarize, evaluator_summary, summary_intervals, wilson_interval
from itool.rundir import CONFIG_FILE, METRICS_FILE, STATE_FILE, RunDir, check_output_file, read_jsonl, write_text
from itool.schemas import Verdict


RESAMPLES = 2000  # bootstrap resamples per paired difference


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(
        default_factory=dict, description="Run config layer over the shared one; {seed} in its strings is the "
                                          "seed it runs with (e.g. another run of the same seed: itool-s{seed}).")
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


def read_experiment(path: Path, settings: tuple[str, ...] = ()) -> ExperimentConfig:
    """The experiment config file, with ``--set key.sub=value`` settings applied over it."""
    from itool.config import parse_option, read_config_file

    data = read_config_file(path)
    for text in settings:
        key, value = parse_option(text, "--set")
        *parents, last = key.split(".")
        node = data
        for part in parents:
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ItoolError(f"--set {key}: {part!r} is not a mapping in {path}")
            node = child
        node[last] = value
    try:
        return ExperimentConfig.model_validate(data)
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


def with_seed(value: Any, seed: int) -> Any:
    """``value`` with ``{seed}`` in every string replaced by ``seed`` (only that: other braces stay)."""
    if isinstance(value, str):
        return value.replace("{seed}", str(seed))
    if isinstance(value, dict):
        return {key: with_seed(item, seed) for key, item in value.items()}
    if isinstance(value, list):
        return [with_seed(item, seed) for item in value]
    return value


def run_layers(exp: ExperimentConfig, run: str, seed: int, fraction: float, train_size: int | None) -> list[dict]:
    spec = exp.runs[run]
    layers = [exp.common, with_seed(spec.config, seed), {"seed": seed, "runs_dir": str(exp.runs_dir),
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
        write_report(ctx.run, evaluator_summary(ctx))
    run = ctx.run
    del ctx
    gc.collect()  # one policy in memory at a time
    return run


def compare_dir(exp: ExperimentConfig) -> Path:
    return exp.runs_dir / "compare"


def compare_pairs(exp: ExperimentConfig) -> Path:
    return exp.runs_dir / run_name(exp.compare.run, exp.compare.seed) / exp.compare.pairs_stage / "pairs.jsonl"


def compare_ready(exp: ExperimentConfig) -> bool:
    """The comparison's pairs exist and are not empty (a run that made no pairs has nothing to compare)."""
    state = _state(exp.runs_dir / run_name(exp.compare.run, exp.compare.seed))
    return bool(state) and exp.compare.pairs_stage in state["completed"] and bool(read_jsonl(compare_pairs(exp)))


def ensure_compare(exp: ExperimentConfig, registry: Any) -> None:
    from itool.plugins.trainers.compare import compare_losses, read_pairs

    spec = exp.compare
    out = compare_dir(exp)
    pairs_path = compare_pairs(exp)
    # The pairs it trains on, by content: a source run redone since (itool redo) has other pairs.
    stamp, digest = exp.runs_dir / "compare.pairs.sha256", hashlib.sha256(pairs_path.read_bytes()).hexdigest()
    if out.is_dir() and any(out.iterdir()) and stamp.is_file() and stamp.read_text().strip() != digest:
        raise ItoolError(f"{out} was trained on other pairs than {pairs_path} holds now; move it away to "
                         "compare the losses on these")
    write_text(stamp, digest + "\n")
    if (out / "compare.json").is_file():
        return
    source = exp.runs_dir / run_name(spec.run, spec.seed)
    pairs = read_pairs(pairs_path)
    layers = [exp.common, with_seed(exp.runs[spec.run].config, spec.seed), {"seed": spec.seed}]
    compare_losses(registry, spec.losses, pairs_path, pairs, adapters_until(source, spec.start_stage), out, layers,
                   eval_start=spec.start_arm is None, start_label=f"{source.name} after {spec.start_stage}", resume=True)


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


def first_seed(exp: ExperimentConfig, *arms: ArmSpec) -> int | None:
    """The first seed (the experiment's seeds first, in order) whose runs of every one of ``arms`` have
    finished the arm's stage."""
    def finished(arm: ArmSpec, seed: int) -> bool:
        state = _state(exp.runs_dir / run_name(arm.run, seed))
        return bool(state) and arm.stage in state["completed"]

    seeds = dict.fromkeys([*exp.seeds, *(seed for arm in arms for seed in exp.seeds_of(arm.run))])
    return next((seed for seed in seeds if all(finished(arm, seed) for arm in arms)), None)


def verdict_list(exp: ExperimentConfig, arm: ArmSpec, seed: int) -> list[Verdict]:
    path = exp.runs_dir / run_name(arm.run, seed) / arm.stage / "verdicts.jsonl"
    return read_jsonl(path, Verdict) if path.is_file() else []


def summarizer(exp: ExperimentConfig, arm: ArmSpec, seed: int, registry: Any) -> Summarize | None:
    """The summary rows of a verdict list as the arm's evaluator computes them, with the run's options."""
    from itool.config import build_config, read_config_file
    from itool.context import RunContext

    config = build_config([read_config_file(exp.runs_dir / run_name(arm.run, seed) / CONFIG_FILE)])
    return evaluator_summary(RunContext(config, registry, run=None))


def headline_rows(summary: dict[str, float], verdicts: list[Verdict]) -> list[str]:
    """The evaluator's aggregate rows: its summary rows that are not per-category rows."""
    categories = {v.category for v in verdicts}
    return [row for row in summary if row not in categories]


def interval_text(value: float, low: float, high: float, signed: bool = False) -> str:
    form = "{:+.1f}" if signed else "{:.1f}"
    return f"{form.format(100 * value)} [{form.format(100 * low)}, {form.format(100 * high)}]"


def arm_rows(verdicts: list[Verdict], summarize: Summarize | None) -> dict[str, tuple[float, float, float]]:
    """row -> (accuracy, low, high): aggregates with a stratified bootstrap interval, categories and all
    samples with a Wilson interval."""
    rows: dict[str, tuple[float, float, float]] = {}
    if summarize is not None:
        intervals = summary_intervals(verdicts, summarize, RESAMPLES)
        summary = {r.row: r.value for r in intervals}
        for r in intervals:
            if r.row in headline_rows(summary, verdicts):
                rows[r.row] = (r.value, r.low, r.high)
    flat = {v.sample_id: (v.category, v.valid) for v in verdicts}
    for row, ids in by_row(flat).items():
        right = sum(flat[i][1] for i in ids)
        rows[row] = (right / len(ids), *wilson_interval(right, len(ids)))
    return rows


def arms_with_results(exp: ExperimentConfig, registry: Any) -> dict[str, tuple[int, list[Verdict], Summarize | None]]:
    """arm -> (seed, verdicts, summarize) for every arm that has finished on some seed (the first such)."""
    found = {}
    for arm in exp.arms:
        seed = first_seed(exp, arm)
        verdicts = verdict_list(exp, arm, seed) if seed is not None else []
        if verdicts:
            found[arm.name] = (seed, verdicts, summarizer(exp, arm, seed, registry))
    return found


def arms_table(results: dict[str, tuple[int, list[Verdict], Summarize | None]]) -> tuple[list[str], dict]:
    """Markdown table, one column per arm, cells ``accuracy [95% interval]``; and the numbers behind it."""
    numbers = {name: arm_rows(verdicts, summarize) for name, (_, verdicts, summarize) in results.items()}
    rows = [row for row in dict.fromkeys(row for found in numbers.values() for row in found)
            if any(found.get(row, (0.0, 0.0, 0.0)) != (0.0, 0.0, 0.0) for found in numbers.values())
            or row in {v.category for _, verdicts, _ in results.values() for v in verdicts} or row == ALL_SAMPLES]
    sizes = {row: max(sum(1 for v in verdicts if v.category == row) if row != ALL_SAMPLES else len(verdicts)
                      for _, verdicts, _ in results.values()) for row in rows}
    header = [f"{name} (seed {seed})" for name, (seed, _, _) in results.items()]
    lines = ["| row | n | " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(header)]
    for row in rows:
        cells = [interval_text(*numbers[name][row]) if row in numbers[name] else "" for name in results]
        lines.append(f"| {row} | {sizes[row] or ''} | " + " | ".join(cells) + " |")
    return lines, numbers


def comparison_lines(name_a: str, name_b: str, a: tuple, b: tuple) -> list[str]:
    """A − B paired on the shared samples: the aggregate rows with a paired stratified bootstrap
    interval, then categories and all samples with a bootstrap interval and McNemar's exact test."""
    (_, verdicts_a, summarize), (_, verdicts_b, _) = a, b
    lines: list[str] = []
    if summarize is not None:
        summary_a = summarize(verdicts_a)
        aggregates = headline_rows(summary_a, verdicts_a)
        shown = [d for d in summary_differences(verdicts_a, verdicts_b, summarize, RESAMPLES)
                 if d.row in aggregates and (d.value or d.low or d.high or summary_a[d.row])]
        if shown:
            lines += ["| aggregate row | difference [95% CI] | real |", "|---|---:|---|"]
            lines += [f"| {d.row} | {interval_text(d.value, d.low, d.high, signed=True)} | "
                      f"{'yes' if d.low > 0 or d.high < 0 else 'no'} |" for d in shown]
            real = [f"{d.row} ({100 * d.value:+.1f})" for d in shown if d.low > 0 or d.high < 0]
            lines += ["", f"Aggregate rows that differ beyond their interval: {', '.join(real) or 'none'}.", ""]
    flat_a = {v.sample_id: (v.category, v.valid) for v in verdicts_a}
    flat_b = {v.sample_id: (v.category, v.valid) for v in verdicts_b}
    rows = compare_paired(flat_a, flat_b, RESAMPLES)
    if not rows:
        return lines + ["The two arms share no test sample.", ""]
    return lines + [*comparison_table(rows, name_a, name_b), "", comparison_sentence(rows, name_a, name_b), ""]


def paired_statistics(exp: ExperimentConfig, results: dict[str, tuple]) -> list[str]:
    lines = ["## Paired comparisons", "",
             "Each comparison is A − B on the same test samples (one seed: the first both arms finished). "
             "Aggregate rows (BFCL's weighted rows, computed by the evaluator itself) get a 95% paired "
             f"bootstrap interval that resamples samples within each category ({RESAMPLES} resamples, seed 0). "
             f"Category rows and *{ALL_SAMPLES}* (the unweighted share answered right) get a percentile "
             "bootstrap interval and McNemar's exact two-sided p-value on the discordant samples (b: only A "
             "right, c: only B right); such a row is called real when its interval excludes 0 and p < 0.05.", ""]
    for name_a, name_b in exp.comparisons:
        lines += [f"### {name_a} − {name_b}", ""]
        if name_a not in results or name_b not in results:
            lines += ["Not available yet: an arm has not finished.", ""]
            continue
        lines += comparison_lines(name_a, name_b, results[name_a], results[name_b])
    return lines


def loss_comparisons(exp: ExperimentConfig, results: dict[str, tuple], out: Path) -> list[str]:
    """Each loss − the start arm, and each loss − the first loss, paired on the same samples."""
    losses = {}
    for loss in exp.compare.losses:
        path = out / loss / "eval" / "verdicts.jsonl"
        if path.is_file():
            start = results.get(exp.compare.start_arm) if exp.compare.start_arm else None
            summarize = start[2] if start else None
            losses[loss] = (exp.compare.seed, read_jsonl(path, Verdict), summarize)
    if not losses:
        return []
    lines = ["### Paired: each loss against the start and against the first loss", ""]
    first = exp.compare.losses[0]
    for loss, found in losses.items():
        if exp.compare.start_arm in results:
            lines += [f"#### {loss} − {exp.compare.start_arm}", "",
                      *comparison_lines(loss, exp.compare.start_arm, found, results[exp.compare.start_arm])]
        if loss != first and first in losses:
            lines += [f"#### {loss} − {first}", "", *comparison_lines(loss, first, found, losses[first])]
    return lines


def progress_lines(exp: ExperimentConfig, registry: Any) -> list[str]:
    """Where the experiment stands while it runs: the runs not yet complete, with their finished stages."""
    from itool.config import build_config, read_config_file
    from itool.context import RunContext
    from itool.loop import plan

    waiting = []
    for name, *_ in planned_runs(exp):
        state = _state(exp.runs_dir / name)
        if state is None:
            waiting.append(f"{name} (not started)")
            continue
        config = build_config([read_config_file(exp.runs_dir / name / CONFIG_FILE)])
        stages = [stage.name for stage in plan(RunContext(config, registry, run=None))]
        if not all(stage in state["completed"] for stage in stages):
            waiting.append(f"{name} ({len(state['completed'])} of {len(stages)} stages done)")
    return [f"In progress: {'; '.join(waiting)}. Continue with the regenerate command above."] if waiting else []


def seeds_table(exp: ExperimentConfig) -> list[str]:
    """Where arms ran on several seeds: the headline row per seed."""
    by_arm = {arm.name: arm_summaries(exp, arm) for arm in exp.arms}
    seeds = sorted({s for found in by_arm.values() for s in found})
    if len(seeds) < 2:
        return []
    rows = list(dict.fromkeys(row for found in by_arm.values() for summary in found.values() for row in summary))
    row = next((r for r in rows if r.lower() == "overall"), rows[0])
    lines = [f"### {row}, seed by seed", "", "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---:|" * len(seeds)]
    for name, found in by_arm.items():
        cells = [f"{100 * found[s][row]:.1f}" if s in found and row in found[s] else "" for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def compare_runs(exp: ExperimentConfig) -> dict[str, Path]:
    """The loss comparison's run directories (ordinary runs, one per loss), by label."""
    return {f"compare/{loss}": compare_dir(exp) / loss for loss in exp.compare.losses} if exp.compare else {}


def stage_times(exp: ExperimentConfig) -> list[str]:
    lines = ["| run | stage | mean s | seeds |", "|---|---|---:|---:|"]
    runs = {run: [exp.runs_dir / run_name(run, seed) for seed in exp.seeds_of(run)] for run in exp.runs}
    runs.update((label, [path]) for label, path in compare_runs(exp).items())
    overall = 0.0
    for label, paths in runs.items():
        times: dict[str, list[float]] = {}
        for state in filter(None, map(_state, paths)):
            for stage in state.get("completed", []):
                times.setdefault(stage, []).append(state["results"][stage].get("seconds", 0.0))
        for stage, values in times.items():
            lines.append(f"| {label} | {stage} | {statistics.fmean(values):.0f} | {len(values)} |")
        if times:
            total = sum(statistics.fmean(v) for v in times.values())
            lines.append(f"| {label} | **total** | **{total:.0f}** | |")
            overall += sum(sum(v) for v in times.values())
    if overall:
        lines.append(f"| all runs | **total, every seed** | **{overall:.0f}** ({overall / 3600:.1f} h) | |")
    return lines


def stop_lines(exp: ExperimentConfig) -> list[str]:
    """Where a long stage was stopped (a session's end, a kill) and what its resume kept."""
    paths = {name: exp.runs_dir / name for name, *_ in planned_runs(exp)} | compare_runs(exp)
    table = stops_table({name: read_jsonl(path / METRICS_FILE) for name, path in paths.items()
                         if (path / METRICS_FILE).is_file()})
    if not table:
        return []
    return ["## Stops and resumes", "",
            "Every attempt at a stage that stopped before it finished, read from the runs' `metrics.jsonl`: how "
            "far it got, what the next attempt continued from (the evaluation's or search's finished chunks, the "
            "training's last Trainer checkpoint) and the logged work it did again. The step or chunk in progress "
            "at the stop left no row; it is lost too.", "", *table, ""]


def eval_outputs(path: Path) -> dict[str, str]:
    return {v["sample_id"]: v["output"] for v in read_jsonl(path)} if path.is_file() else {}


def evaluation_before(exp: ExperimentConfig, name: str, run: str, seed: int, round_index: int) -> Path:
    """The evaluation the round's policy is compared with: the previous round's, the run's warm-up's, or
    (for a run that starts from another) the evaluation of the stage it started from."""
    path = exp.runs_dir / name
    if round_index > 1:
        return path / f"round{round_index - 1}.eval" / "verdicts.jsonl"
    source = exp.runs[run].source
    if source and not (path / "warmup.eval").is_dir():
        return exp.runs_dir / run_name(source[0], seed) / f"{source[1]}.eval" / "verdicts.jsonl"
    return path / ("warmup.eval" if (path / "warmup.eval").is_dir() else "base.eval") / "verdicts.jsonl"


def pair_values(path: Path) -> str:
    """chosen / rejected value means of the round's pairs (the reward the search gave each side)."""
    metas = read_jsonl(path) if path.is_file() else []
    chosen = [m["chosen_value"] for m in metas if m.get("chosen_value") is not None]
    rejected = [m["rejected_value"] for m in metas if m.get("rejected_value") is not None]
    if not chosen or not rejected:
        return ""
    return f"{statistics.fmean(chosen):.2f} / {statistics.fmean(rejected):.2f}"


def round_rows(exp: ExperimentConfig) -> list[dict[str, Any]]:
    """One record per finished round of every run: what the round had to work with and what it changed."""
    records = []
    for name, run, seed, fraction in planned_runs(exp):
        state = _state(exp.runs_dir / name)
        if not state or fraction != 1.0:
            continue
        results = state["results"]
        for index in range(1, 100):
            r = f"round{index}"
            if f"{r}.select" not in results:
                break
            summary = (results.get(f"{r}.eval") or {}).get("summary") or {}
            after = eval_outputs(exp.runs_dir / name / f"{r}.eval" / "verdicts.jsonl")
            before = eval_outputs(evaluation_before(exp, name, run, seed, index))
            records.append({
                "run": name, "round": index, "results": results, "summary": summary,
                "changed": f"{sum(before.get(i) != out for i, out in after.items())} of {len(after)}" if after and before else "",
                "values": pair_values(exp.runs_dir / name / f"{r}.pairs" / "pairs.meta.jsonl"),
            })
    return records


def rounds_table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | round | selected | searched | nodes | pairs kept | chosen / rejected value | train loss | "
             "train margin | overall | all samples | held-out answers changed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rec in records:
        results, r = rec["results"], f"round{rec['round']}"

        def get(stage: str, key: str, results=results) -> str:
            value = (results.get(f"{r}.{stage}") or {}).get(key, "")
            return f"{value:.3g}" if isinstance(value, float) else str(value)

        summary = rec["summary"]
        score = f"{100 * summary['overall']:.1f}" if "overall" in summary else ""
        accuracy = f"{100 * summary['accuracy']:.1f}" if "accuracy" in summary else ""
        lines.append(f"| {rec['run']} | {rec['round']} | {get('select', 'selected')} of {get('select', 'of')} | "
                     f"{get('search', 'trees')} | {get('search', 'nodes')} | {get('pairs', 'pairs')} | {rec['values']} | "
                     f"{get('train', 'loss')} | {get('train', 'reward_margin')} | {score} | {accuracy} | {rec['changed']} |")
    return lines


def plot_rounds(path: Path, exp: ExperimentConfig, rows: list[str]) -> bool:
    """Score by round (0 = the evaluation the rounds start from) for every run with two or more rounds."""
    from itool.report import png_figure

    series = {}
    for name, run, seed, fraction in planned_runs(exp):
        state = _state(exp.runs_dir / name)
        if not state or fraction != 1.0 or "round2.eval" not in state["results"]:
            continue
        evals = [("warmup.eval" if "warmup.eval" in state["results"] else "base.eval", 0)]
        evals += [(f"round{i}.eval", i) for i in range(1, 100) if f"round{i}.eval" in state["results"]]
        series[name] = [(i, state["results"][stage]["summary"]) for stage, i in evals if stage in state["results"]]
    if not series:
        return False
    with png_figure(path, (6, 4)) as ax:
        for name, points in series.items():
            for row in rows:
                xs = [i for i, summary in points if row in summary]
                ax.plot(xs, [100 * summary[row] for _, summary in points if row in summary], marker="o",
                        label=f"{name}: {row}")
        ax.set_xlabel("round (0: the warm-up)")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(sorted({i for points in series.values() for i, _ in points}))
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return True


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


def plot_arms(path: Path, numbers: dict[str, dict[str, tuple[float, float, float]]], rows: list[str]) -> None:
    """The aggregate rows, one bar per arm, whiskers at the 95% interval."""
    from itool.report import grouped_bars

    values = {name: {row: 100 * found[row][0] for row in rows if row in found} for name, found in numbers.items()}
    whiskers = {name: {row: (100 * (found[row][0] - found[row][1]), 100 * (found[row][2] - found[row][0]))
                       for row in rows if row in found} for name, found in numbers.items()}
    grouped_bars(path, values, rows, "Accuracy by arm", "accuracy (%), 95% interval", errors=whiskers)


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


def write_results(exp: ExperimentConfig, command: str, train_size: int | None) -> Path:
    """The report: every table is computed from the run directories, so it says what they hold."""
    figures = exp.report.with_suffix("")
    figures.mkdir(parents=True, exist_ok=True)
    from itool.cli import get_registry

    registry = get_registry()
    results = arms_with_results(exp, registry)
    table, numbers = arms_table(results)
    aggregates = [row for row in dict.fromkeys(
        row for _, verdicts, summarize in results.values() if summarize
        for row in headline_rows(summarize(verdicts), verdicts)) if any(row in found and found[row][0] for found in numbers.values())]
    lines = [f"# {exp.title}", "", exp.notes.strip(), "",
             f"Regenerate everything (runs that exist are reused): `itool experiment {command}`; "
             f"only the report: `itool experiment {command} --report-only`.", "",
             f"Hardware: {hardware()}. Code: commit {commit()}. Run directories: `{exp.runs_dir}/`.", "",
             "## Arms", "",
             "Accuracy in % on the same held-out samples [95% interval]. Aggregate rows (BFCL's weighted rows, "
             "first) have a stratified bootstrap interval (samples resampled within each category, "
             f"{RESAMPLES} resamples); category rows and *{ALL_SAMPLES}* (the unweighted share answered "
             "right) a Wilson score interval. n: samples in the row (blank for aggregates).", "",
             *(table if results else ["No arm has finished yet."]), "", *progress_lines(exp, registry), ""]
    if numbers and aggregates:
        plot_arms(figures / "arms.png", numbers, aggregates)
        lines += [f"![arms]({figures.name}/arms.png)", ""]
    lines += seeds_table(exp)
    records = round_rows(exp)
    lines += ["## Rounds", "",
              "Per round: samples selected (of the train samples), searched, search-tree nodes, preference pairs "
              "kept, the mean search value of chosen / rejected sides, the trainer's final loss and reward "
              "margin, the held-out score after the round, and how many held-out greedy answers changed against "
              "the evaluation before the round.", "", *rounds_table(records), ""]
    plotted = ("overall", "non_live", "live", "irrelevance_detection")  # when to call counts as much as how
    if plot_rounds(figures / "rounds.png", exp, [r for r in aggregates if r.lower() in plotted] or aggregates[:1]):
        lines += [f"![score by round]({figures.name}/rounds.png)", ""]
    lines += paired_statistics(exp, results)
    if exp.compare:
        out = compare_dir(exp)
        lines += ["## Loss comparison", ""]
        if (out / "compare.json").is_file():
            import json

            from itool.plugins.trainers.compare import plot, results_table, summary_rows

            compared = json.loads((out / "compare.json").read_text(encoding="utf-8"))
            if exp.compare.start_arm:
                start = arm_summaries(exp, next(a for a in exp.arms if a.name == exp.compare.start_arm),
                                      seeds=[exp.compare.seed]).get(exp.compare.seed)
                if start:
                    compared["eval"] = {f"start ({exp.compare.start_arm})": start, **compared["eval"]}
            plot(figures / "losses.png", compared["eval"], summary_rows(compared["eval"]))
            lines += [f"Every loss trains from `{compared['start']}` on the same {compared['n_pairs']} pairs "
                      f"(`{compared['pairs']}`), seed {compared['seed']}, and is evaluated on the same "
                      f"{compared['n_eval']} held-out samples (accuracy %).", "", results_table(compared), "",
                      f"![losses]({figures.name}/losses.png)", ""]
            lines += loss_comparisons(exp, results, out)
        else:
            made_none = compare_pairs(exp).is_file() and not read_jsonl(compare_pairs(exp))
            lines += [f"Not run: `{compare_pairs(exp)}` holds no pairs." if made_none else "Not run yet.", ""]
    if exp.scaling:
        row = exp.scaling.row or next((r for r in aggregates if r.lower() == "overall"), aggregates[0] if aggregates else "")
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
    lines += ["## Wall time per stage", "", *stage_times(exp), "", *stop_lines(exp)]
    write_text(exp.report, "\n".join(lines) + "\n")
    return exp.report


# -- the command ----------------------------------------------------------------------------------
@click.command("experiment")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--report-only", is_flag=True, help="Only rewrite the report from the runs that exist.")
@click.option("--dry-run", is_flag=True, help="List the runs the experiment needs and which exist, then stop.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Change a setting of the config (dotted path, YAML value; repeatable), e.g. "
                   "--set runs_dir=runs/gpu --set common.train_limit=null.")
def experiment(config_path: Path, report_only: bool, dry_run: bool, settings: tuple[str, ...]) -> None:
    """Run an experiment config (arms × seeds, loss comparison, data scaling) and write its report.

    \b
    itool experiment experiments/bfcl_half.yaml
    Runs go to the config's runs_dir (finished ones are reused, a stopped one continues), the report
    and its PNG plots to the config's report path.
    """
    from itool.cli import get_registry

    exp = read_experiment(config_path, settings)
    command = " ".join([str(config_path), *(f"--set {shlex.quote(text)}" for text in settings)])
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
        if exp.compare:
            trained = [loss for loss in exp.compare.losses
                       if "eval" in (_state(compare_dir(exp) / loss) or {}).get("completed", [])]
            click.echo(f"{'compare':28s} {len(trained)} of {len(exp.compare.losses)} losses done"
                       f"{' (' + ', '.join(trained) + ')' if trained else ''}; it runs after the arms of seed "
                       f"{exp.compare.seed}")
        return
    if not report_only:
        for index, (name, run, seed, fraction) in enumerate(todo):
            if exp.compare and (seed, fraction) != (exp.compare.seed, 1.0) and compare_ready(exp):
                ensure_compare(exp, registry)  # after the arms of its seed, before other seeds and the sweep
            click.echo(f"experiment: run {index + 1}/{len(todo)}: {name}", err=True)
            ensure_run(registry, run_layers(exp, run, seed, fraction, train_size))
            write_results(exp, command, train_size)
        if exp.compare and compare_ready(exp):
            ensure_compare(exp, registry)
    report = write_results(exp, command, train_size)
    click.echo(f"report: {report}", err=True)


@hookimpl
def register_commands(cli):
    cli.add_command(experiment)
