"""Command ``itool compare``: several preference losses, one start, one set of pairs, one held-out set.

Every loss gets its own run directory under ``--out`` (config.yaml, metrics.jsonl, a ``train`` and an
``eval`` stage, its adapter), built from the same config apart from the loss, so the runs differ in
nothing else: same starting weights (base model plus the optional ``--adapter``), same pairs, same
seed, same evaluation samples (``stable_subset`` of the test split) and the configured evaluator.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from itool import hookimpl
from itool.config import read_config_file
from itool.errors import ItoolError
from itool.rundir import CONFIG_FILE, MADE_BY_ITOOL, STATE_FILE, RunDir, made_by_itool, read_jsonl, write_json, write_text
from itool.schemas import PreferencePair

START = "start"
TRAIN_ROWS = ("loss", "reward_margin", "accuracy", "seconds")  # trainer results shown, when a trainer reports them


def parse_losses(text: str, registry: Any) -> list[str]:
    """The comma-separated loss names, each checked against the registry (one line naming a bad one)."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ItoolError("--losses: give at least one loss name, e.g. --losses simpo,dpo")
    if START in names:
        raise ItoolError(f"--losses: {START!r} is the name of the starting-point column; it cannot be a loss")
    for name in names:
        registry.get("loss", name)
    return names


def read_pairs(path: Path) -> list[PreferencePair]:
    """Pairs in TRL's preference format (``prompt``, ``chosen``, ``rejected`` per line)."""
    if not path.is_file():
        raise ItoolError(f"--pairs: file not found: {path}")
    try:
        rows = read_jsonl(path)
        pairs = [PreferencePair.model_validate(row) for row in rows]
    except (ValueError, ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ItoolError(f"--pairs {path}: not TRL preference JSONL (prompt, chosen, rejected): {first}") from None
    if not pairs:
        raise ItoolError(f"--pairs {path}: no pairs in the file")
    return pairs


def start_point(start: Path | None) -> tuple[list[Path], str | None]:
    """The adapters that make the starting point (a run directory's, in order, or one adapter folder),
    and for a run directory the model it was trained from."""
    if start is None:
        return [], None
    if (start / STATE_FILE).is_file():
        run = RunDir.open(start)
        return run.adapters, read_config_file(run.path / CONFIG_FILE).get("model")
    if not start.is_dir():
        raise ItoolError(f"--adapter: no such adapter folder or run directory: {start}")
    return [start], None


def summary_rows(summaries: dict[str, dict[str, float]]) -> list[str]:
    """The evaluator's rows in the order it reports them."""
    return list(dict.fromkeys(row for summary in summaries.values() for row in summary))


def results_table(results: dict[str, Any]) -> str:
    """The markdown table: evaluation rows (accuracy %), then the trainers' final numbers, one column per loss."""
    columns = list(results["eval"])
    rows = summary_rows(results["eval"])
    lines = ["| row | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = [f"{100 * results['eval'][c][row]:.2f}" if row in results["eval"][c] else "" for c in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for key in TRAIN_ROWS:
        values = {c: results["train"].get(c, {}).get(key) for c in columns}
        if any(isinstance(v, (int, float)) for v in values.values()):
            cells = [f"{v:.4g}" if isinstance(v, (int, float)) else "" for v in values.values()]
            lines.append(f"| train {key} (final) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    """compare.json, compare.md and compare.png."""
    table = results_table(results)
    write_json(out / "compare.json", results)
    header = (f"# Loss comparison\n\npairs: `{results['pairs']}` ({results['n_pairs']}), seed {results['seed']}, "
              f"start: {results['start'] or 'base model'}; evaluation accuracy in %, on the same "
              f"{results['n_eval']} held-out samples.\n\n")
    write_text(out / "compare.md", header + table + "\n\n![evaluation by loss](compare.png)\n")
    plot(out / "compare.png", results["eval"], summary_rows(results["eval"]))


def plot(path: Path, summaries: dict[str, dict[str, float]], rows: list[str]) -> None:
    from itool.report import grouped_bars

    grouped_bars(path, {c: {r: 100 * v for r, v in s.items()} for c, s in summaries.items()}, rows,
                 "Evaluation after training with each loss")


def compare_losses(registry: Any, names: list[str], pairs_path: Path, pairs: list[PreferencePair], adapters: list[Path],
                   out: Path, layers: list[dict[str, Any]], *, eval_start: bool = True,
                   start_label: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Train every loss in ``names`` from the same start on ``pairs``, evaluate each; write and return
    the results. ``layers`` are config layers shared by every loss (model, dataset, evaluator, trainer).
    ``resume``: ``out`` holds an interrupted comparison made by itool; finished losses are kept and a
    stopped one continues inside its stage (hours of CPU per loss at the experiment's size)."""
    from itool.loop import Stage, evaluate, run_stage
    from itool.session import plan_session, resume_session, start_session

    resuming = resume and made_by_itool(out)
    if not resuming and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ItoolError(f"--out {out} already exists and is not empty; choose another --out")
    columns = ([START] if eval_start else []) + names
    shared = [*layers, {"runs_dir": str(out), "eval_base": False, "adapters": [str(a) for a in adapters]}]
    made = {c for c in columns if resuming and (out / c / STATE_FILE).is_file()}
    # Every config is built and every component checked before anything is written or trained.
    planned = {c: plan_session(registry, [*shared, {"name": c, **({} if c == START else {"loss": c})}])
               for c in columns if c not in made}
    sessions = {c: (lambda c=c: resume_session(registry, out / c)) if c in made else (lambda c=c: start_session(planned[c]))
                for c in columns}
    results: dict[str, Any] = {"losses": names, "pairs": str(pairs_path), "n_pairs": len(pairs),
                               "start": start_label, "seed": None, "eval": {}, "train": {}}
    out.mkdir(parents=True, exist_ok=True)
    (out / MADE_BY_ITOOL).touch()  # an interrupted comparison may be continued by whoever made it (itool experiment)
    for column in columns:
        ctx = sessions[column]()  # one policy in memory at a time
        results["seed"] = ctx.config.seed
        if column != START:
            trainer, trainer_options = ctx.component("trainer")
            if not ctx.run.is_done("train"):
                run_stage(ctx, Stage("train", lambda c: trainer.obj(c, pairs, trainer_options)))
            results["train"][column] = ctx.run.result("train")
        if not ctx.run.is_done("eval"):
            run_stage(ctx, Stage("eval", evaluate))
        results["eval"][column] = ctx.run.result("eval")["summary"]
        results["n_eval"] = ctx.run.result("eval")["n"]
        del ctx
    write_outputs(out, results)
    return results


@click.command("compare")
@click.option("--losses", required=True, help="Comma-separated loss names, e.g. simpo,dpo,orpo,ipo (any registered loss).")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(path_type=Path),
              help="Preference pairs, TRL format JSONL (e.g. runs/<run>/round1.pairs/pairs.jsonl).")
@click.option("--adapter", "start", type=click.Path(path_type=Path),
              help="Start from the model plus this PEFT adapter, or plus all adapters of this run directory.")
@click.option("--seed", type=int, help="Seed shared by every loss (default: the config's, 0).")
@click.option("--eval-limit", type=int, help="Evaluate on at most N held-out samples (the same for every loss).")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default: runs/compare-<timestamp>).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML/TOML config: model, dataset, evaluator, trainer, loss options.")
@click.option("--model", help="Model alias, local path or hub id (default: the --adapter run's, else the config's).")
@click.option("--trainer-opt", "trainer_opts", multiple=True, metavar="KEY=VALUE", help="Trainer option (repeatable).")
@click.option("--eval-start/--no-eval-start", default=True, help="Also evaluate the starting point (column 'start').")
def compare(losses: str, pairs_path: Path, start: Path | None, seed: int | None, eval_limit: int | None,
            out: Path | None, config_file: Path | None, model: str | None, trainer_opts: tuple[str, ...],
            eval_start: bool) -> None:
    """Train each loss from the same start on the same pairs, evaluate each on the same held-out set.

    \b
    itool compare --losses simpo,dpo,orpo,ipo --pairs runs/x/round1.pairs/pairs.jsonl --eval-limit 64
    Writes <out>/compare.md, compare.json, compare.png and one run directory per loss.
    """
    from rich.console import Console
    from rich.markdown import Markdown

    from itool.cli import get_registry
    from itool.config import parse_option

    registry = get_registry()
    names = parse_losses(losses, registry)
    pairs = read_pairs(pairs_path)
    adapters, start_model = start_point(start)
    out = out or Path("runs") / datetime.now().strftime("compare-%Y%m%d-%H%M%S")
    flags: dict[str, Any] = {}
    for key, value in (("seed", seed), ("eval_limit", eval_limit), ("model", model or start_model)):
        if value is not None:
            flags[key] = value
    if trainer_opts:
        flags["trainer"] = {"options": dict(parse_option(o, "--trainer-opt") for o in trainer_opts)}
    base = read_config_file(config_file) if config_file else {}
    results = compare_losses(registry, names, pairs_path, pairs, adapters, out, [base, flags], eval_start=eval_start,
                             start_label=str(start) if start else None)
    Console().print(Markdown(results_table(results)))
    click.echo(f"comparison: {out / 'compare.md'}", err=True)


@hookimpl
def register_commands(cli):
    cli.add_command(compare)
