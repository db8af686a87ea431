"""``itool eval``: evaluate a model on BFCL outside a training run.

It builds an ordinary run config and context and runs the loop's own eval stage
(``itool.loop.evaluate``) on the chosen samples, so scores match those of ``itool run``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from itool import hookimpl
from itool.config import parse_option
from itool.context import RunContext
from itool.errors import ItoolError
from itool.rundir import read_jsonl, write_text
from itool.schemas import Verdict

STAGE = "eval"
DEV_SIZE = 100  # the dev slice `--split dev` reads: the experiments' (dev_size: 100)


def summary_rows(verdicts: list[Any], summary: dict[str, float]) -> list[tuple[str, str, str]]:
    """(row, samples, accuracy %) for the table: aggregate rows, then categories."""
    from itool.plugins.evaluators.summary import category_counts

    counts = category_counts(verdicts)
    rows = []
    for name, value in summary.items():
        n = f"{counts[name][1]}" if name in counts else ""
        rows.append((name, n, f"{100 * value:.1f}"))
    return rows


def write_markdown(path: Path, model: str, rows: list[tuple[str, str, str]]) -> None:
    lines = [f"# BFCL evaluation of `{model}`", "", "| row | samples | accuracy % |", "|---|---:|---:|"]
    lines += [f"| {r} | {n} | {a} |" for r, n, a in rows]
    write_text(path, "\n".join(lines) + "\n")


def write_chart(path: Path, model: str, summary: dict[str, float]) -> None:
    from itool.report import png_figure

    names = list(summary)
    with png_figure(path, (max(6.0, 0.45 * len(names)), 4.0)) as ax:
        ax.bar(names, [100 * summary[n] for n in names], color="tab:blue")
        ax.set_ylabel("accuracy %")
        ax.set_ylim(0, 100)
        ax.set_title(f"BFCL: {model}")
        ax.tick_params(axis="x", labelrotation=60)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


@click.command("eval")
@click.option("--model", default=None, help="Model alias, local path or hub id (default: smollm2-135m-instruct).")
@click.option("--categories", default=None, help="Comma-separated BFCL categories or groups (default: the dataset's).")
@click.option("--limit", type=int, default=None, help="At most N samples per category, chosen by id hash.")
@click.option("--split", type=click.Choice(["test", "dev", "all"]), default="test", show_default=True,
              help="BFCL-half test split; the dev slice (the first 100 train-half samples by id hash, which "
                   "runs with --dataset-opt dev_size=100 never train on: for choosing settings); or every entry.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path),
              help="Evaluate the model plus this PEFT adapter, e.g. runs/NAME/warmup/adapter "
                   "(repeatable, merged in order).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: runs/eval-<timestamp>).")
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--dtype", default=None, help="auto, bfloat16 or float32.")
@click.option("--backend", default=None, help="Generation backend (default: transformers; openai for a served model).")
@click.option("--backend-opt", "backend_opts", multiple=True, metavar="KEY=VALUE",
              help="Backend option (repeatable; see `itool plugins backend NAME`).")
@click.option("--evaluator-opt", "evaluator_opts", multiple=True, metavar="KEY=VALUE",
              help="Evaluator option (repeatable; see `itool plugins evaluator bfcl`).")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue an interrupted evaluation in this folder (with its saved settings; give no others).")
def eval_command(model: str | None, categories: str | None, limit: int | None, split: str,
                 adapters: tuple[Path, ...], out: Path | None, device: str | None, dtype: str | None,
                 evaluator_opts: tuple[str, ...], backend: str | None, backend_opts: tuple[str, ...],
                 resume: Path | None) -> None:
    """Evaluate a model on BFCL: per-sample verdicts, a summary table (BFCL v4 rows) and a chart.

    Verdicts are kept in chunks of samples as they are made: an interrupted evaluation continues with
    `itool eval --resume FOLDER`, doing only the samples that are missing."""
    from rich.console import Console
    from rich.table import Table

    from itool.cli import get_registry
    from itool.loop import Stage, evaluate, run_stage
    from itool.session import resume_session

    registry = get_registry()
    if resume is not None:
        command = click.get_current_context()
        if any(command.get_parameter_source(name) is ParameterSource.COMMANDLINE
               for name in command.params if name != "resume"):
            raise ItoolError("--resume continues with the evaluation's saved settings; give no other options")
        ctx = resume_session(registry, resume)
    else:
        ctx = new_evaluation(registry, model, categories, limit, split, adapters, out, device, dtype,
                             evaluator_opts, backend, backend_opts)
    ctx.continue_with = "itool eval --resume"
    config = ctx.config
    if not ctx.run.is_done(STAGE):
        run_stage(ctx, Stage(STAGE, evaluate))
    stage_dir = ctx.run.path / STAGE
    verdicts = read_jsonl(stage_dir / "verdicts.jsonl", Verdict)
    summary = json.loads((stage_dir / "summary.json").read_text(encoding="utf-8"))
    rows = summary_rows(verdicts, summary)
    evaluated = " + ".join([config.model, *(str(a) for a in config.adapters)])
    table = Table("row", "samples", "accuracy %", title=f"BFCL — {evaluated} ({len(verdicts)} samples)")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    write_markdown(stage_dir / "summary.md", evaluated, rows)
    write_chart(stage_dir / "summary.png", evaluated, summary)
    click.echo(f"verdicts: {stage_dir / 'verdicts.jsonl'}\nsummary: {stage_dir / 'summary.md'}\n"
               f"chart: {stage_dir / 'summary.png'}", err=True)


def new_evaluation(registry: Any, model: str | None, categories: str | None, limit: int | None, split: str,
                   adapters: tuple[Path, ...], out: Path | None, device: str | None, dtype: str | None,
                   evaluator_opts: tuple[str, ...], backend: str | None, backend_opts: tuple[str, ...]) -> RunContext:
    """The run of a new ``itool eval``: the samples are the dataset's test split, cut per category by
    the dataset itself, so that the saved config names them and ``--resume`` finds the same ones."""
    from itool.session import plan_session, start_session

    if limit is not None and limit < 1:
        raise ItoolError("--limit must be at least 1")
    out = (out or Path("runs") / datetime.now().strftime("eval-%Y%m%d-%H%M%S")).resolve()
    dataset_options: dict[str, Any] = {"split_mode": "all" if split == "all" else "half", "test_per_category": limit}
    if split == "dev":
        if limit is not None:
            raise ItoolError("--limit cuts the test split; the dev slice is evaluated whole")
        if categories:  # the slice is the first train-half samples of the categories loaded
            raise ItoolError("--split dev is the dev slice of the default categories; give no --categories")
        dataset_options.update(dev_size=DEV_SIZE, heldout="dev")
    if categories:
        dataset_options["categories"] = [c.strip() for c in categories.split(",") if c.strip()]
    layer: dict[str, Any] = {
        "runs_dir": str(out.parent), "name": out.name, "eval_limit": None, "warmup": "none",
        "rounds": 0,  # one evaluation, nothing trained: any backend serves it, a fixed server's too
        "dataset": {"name": "bfcl", "options": dataset_options},
        "evaluator": {"name": "bfcl", "options": dict(parse_option(o, "--evaluator-opt") for o in evaluator_opts)},
    }
    layer.update({k: v for k, v in {"model": model, "device": device, "dtype": dtype}.items() if v is not None})
    if adapters:
        layer["adapters"] = [str(path.resolve()) for path in adapters]
    if backend or backend_opts:
        layer["backend"] = {**({"name": backend} if backend else {}),
                            "options": dict(parse_option(o, "--backend-opt") for o in backend_opts)}
    ctx = plan_session(registry, [layer])
    if not ctx.samples("test"):
        raise ItoolError("no samples to evaluate (check --categories)")
    return start_session(ctx)


@hookimpl
def register_commands(cli):
    cli.add_command(eval_command)
