"""The ``itool`` command line. Plugins add commands through the ``register_commands`` hook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from itool import __version__
from itool.config import COMPONENT_FIELDS, RunConfig, parse_option, preset_names, read_config_file, read_preset
from itool.errors import ItoolError
from itool import processes
from itool.loop import StageFailed, check_stop_after, run_loop
from itool.registry import Registry
from itool.rundir import RunDir
from itool.session import plan_session, resume_session, runs_on_cpu, start_session


class UserError(click.ClickException):
    exit_code = 2


class Failed(click.ClickException):
    exit_code = 1


class ItoolGroup(click.Group):
    """Turns ``ItoolError`` and a command's bad flags into one line on stderr and exit code 2 (1 when a
    stage crashed), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StageFailed as exc:
            raise Failed(str(exc)) from None
        except ItoolError as exc:
            raise UserError(str(exc)) from None
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else ctx.command_path
            raise UserError(f"{exc.format_message()} (see: {command} --help)") from None


_registry: Registry | None = None


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


@click.group(cls=ItoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="itool")
def cli() -> None:
    """Iterative reinforced fine-tuning of tool-using LLMs.

    \b
    Start with the defaults (SmolLM2-135M-Instruct on BFCL-half):
      itool run --search puct --loss simpo
    See what is installed:
      itool plugins
    """


# -- itool run ---------------------------------------------------------------------------------
def component_options(func):
    """``--<slot> NAME`` and ``--<slot>-opt KEY=VALUE`` for every component slot of the config."""
    for field, kind in reversed(COMPONENT_FIELDS.items()):
        default = RunConfig.model_fields[field].default
        flag = field.replace("_", "-")
        func = click.option(
            f"--{flag}-opt", f"{field}_opts", multiple=True, metavar="KEY=VALUE",
            help=f"Set an option of the {kind} (repeatable; see `itool plugins {kind} NAME`).",
        )(func)
        func = click.option(
            f"--{flag}", field, metavar="NAME",
            help=f"Which {kind} to use (default: {default.name if default else 'none'}).",
        )(func)
    return func


def flags_layer(params: dict[str, Any]) -> dict[str, Any]:
    """The config layer made of the flags the user actually gave."""
    layer: dict[str, Any] = {}
    for key in ("name", "runs_dir", "seed", "model", "device", "dtype", "quantize", "rounds", "train_limit", "eval_limit",
                "eval_base"):
        if params.get(key) is not None:
            layer[key] = params[key]
    if params.get("adapters"):
        layer["adapters"] = [str(path) for path in params["adapters"]]
    for field in COMPONENT_FIELDS:
        if params.get(field):
            layer[field] = params[field]
        opts = dict(parse_option(o, f"--{field}-opt") for o in params.get(f"{field}_opts") or ())
        if opts:
            layer[field] = {**({"name": params[field]} if params.get(field) else {}), "options": opts}
    return layer


@cli.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML or TOML config file.")
@click.option("--preset", help=f"Named settings applied before the config file ({', '.join(preset_names()) or 'none'}).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this directory.")
@click.option("--stop-after", metavar="STAGE", help="Stop after this stage (e.g. round1.search).")
@click.option("--name", help="Run name (default: run-<timestamp>).")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Where run directories go (default: runs).")
@click.option("--model", help="Model alias, local path or hub id (default: smollm2-135m-instruct).")
@click.option("--seed", type=int, help="Random seed (default: 0).")
@click.option("--rounds", type=int, help="Reinforcement rounds (default: 1).")
@click.option("--train-limit", type=int, help="Use at most N train samples.")
@click.option("--eval-limit", type=int, help="Evaluate on at most N test samples.")
@click.option("--eval-base/--no-eval-base", default=None, help="Evaluate the untrained model first.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path),
              help="Start from the model plus this PEFT adapter (repeatable, merged in order).")
@click.option("--device", help="auto, cpu or cuda[:N].")
@click.option("--dtype", help="auto, bfloat16 or float32.")
@click.option("--quantize", type=click.Choice(["none", "4bit", "8bit"]),
              help="Load the model quantised (bitsandbytes, CUDA only) and train LoRA on it: 4bit is QLoRA.")
@click.option("--processes", "processes_wanted", type=click.IntRange(min=1), metavar="N",
              help="Train data-parallel in N processes (starts them through accelerate; the same as "
                   "`accelerate launch --multi_gpu --num_processes N -m itool run ...`).")
@component_options
def run(config_file: Path | None, preset: str | None, resume: Path | None, stop_after: str | None,
        processes_wanted: int | None = None, **params: Any) -> None:
    """Run the iTool loop: warm-up, then rounds of select → search → pairs → train → evaluate.

    Settings come from the defaults, then --preset, then --config, then the flags. Every stage writes
    into runs/<name>/, and an interrupted run continues with --resume runs/<name>.
    """
    from itool.report import evaluator_summary, write_report  # matplotlib: imported only when a run happens

    registry = get_registry()
    if resume is not None:
        if config_file or preset or flags_layer(params):
            raise ItoolError("--resume continues with the run's saved config; give no other settings")
        ctx = resume_session(registry, resume)
    else:
        layers = [read_preset(preset) if preset else {}, read_config_file(config_file) if config_file else {}]
        ctx = plan_session(registry, [*layers, flags_layer(params)])
        check_stop_after(ctx, stop_after)
    if processes_wanted is not None and processes_wanted != processes.count():
        if processes.several():
            raise ItoolError(f"--processes {processes_wanted}: this run was started in {processes.count()} processes")
        sys.exit(launch(processes_wanted))  # every setting was checked above, before any process starts
    processes.join(cpu=runs_on_cpu(ctx.config.device))
    if resume is None:
        start_session(ctx)
    if processes.is_main():
        click.echo(f"run directory: {ctx.run.path}", err=True)
    run_loop(ctx, stop_after=stop_after)
    if processes.is_main():
        click.echo(f"report: {write_report(ctx.run, evaluator_summary(ctx))}", err=True)


def launch(count: int) -> int:
    """This very command in ``count`` processes, through accelerate's launcher (torchrun underneath:
    ``--multi_gpu`` names that launcher; each process trains on the CPU when the run's device is the
    CPU, with gloo). Returns the launcher's exit code."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(count),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "itool", *sys.argv[1:]]
    return subprocess.run(command).returncode


# -- itool redo --------------------------------------------------------------------------------
@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.argument("stage")
def redo(run_dir: Path, stage: str) -> None:
    """Take STAGE and every later stage of a run back, so that they run again (after a fix to a plugin).

    \b
    itool redo runs/my-run round1.search
    Nothing is deleted: their folders, results and metrics move to RUN/discarded/<time>/. Continue
    with `itool run --resume RUN` (or `itool experiment CONFIG` for a run of an experiment).
    """
    out = RunDir.open(run_dir).discard_from(stage)
    click.echo(f"moved {stage} and the stages after it to {out}; continue with itool run --resume {run_dir}",
               err=True)


# -- itool plugins -----------------------------------------------------------------------------
@cli.command()
@click.argument("kind", required=False)
@click.argument("name", required=False)
def plugins(kind: str | None, name: str | None) -> None:
    """List the installed components by kind, or show one component's options.

    \b
    itool plugins               every component
    itool plugins loss          the losses
    itool plugins loss simpo    simpo's options
    """
    registry = get_registry()
    console = Console()
    if kind and name:
        component = registry.get(kind, name)
        console.print(f"[bold]{kind} {name}[/bold] ({component.package}): {escape(component.description)}")
        table = Table("option", "type", "default", "description")
        for field_name, field in component.options.model_fields.items():
            annotation = getattr(field.annotation, "__name__", str(field.annotation))
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            table.add_row(field_name, escape(annotation), escape(default), escape(field.description or ""))
        console.print(table if component.options.model_fields else "no options")
        return
    table = Table("kind", "name", "package", "description")
    for component in registry.components(kind):
        table.add_row(component.kind, component.name, component.package, escape(component.description))
    console.print(table)
    for failure in registry.failures:
        console.print(f"[red]plugin {escape(failure.package)} failed to load:[/red] {escape(failure.error)}")


def main() -> None:
    registry = get_registry()
    registry.add_commands(cli)
    cli.main(prog_name="itool")


if __name__ == "__main__":
    main()
