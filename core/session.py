"""How every command that runs stages gets its context, written once: config from layers → context (every
component resolved) → early checks → run directory with its config.yaml.

Nothing is written until every check has passed, so a bad setting leaves no run directory behind to
block the name or to be resumed with the same mistake.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from pathlib import Path
from typing import Any

from itool.config import build_config, changed_keys, config_data, read_config_file
from itool.context import RunContext, quantize_argument
from itool.errors import ItoolError
from itool.processes import on_main
from itool.registry import Registry
from itool.rundir import CONFIG_FILE, RunDir


def runs_on_cpu(device: str) -> bool:
    """Whether a run on ``device`` ("auto", "cpu", "cuda[:N]") computes on the CPU."""
    import torch

    return device == "cpu" or not torch.cuda.is_available()


def check_quantize(ctx: RunContext) -> None:
    """``quantize`` needs CUDA (bitsandbytes quantises on the GPU only) and a loader that takes it."""
    config = ctx.config
    if config.quantize == "none":
        return
    if runs_on_cpu(config.device):
        where = "this run's device is the CPU" if config.device == "cpu" else "this machine has no CUDA GPU"
        raise ItoolError(f"quantize {config.quantize} needs a CUDA GPU (bitsandbytes) and {where}; "
                         "train a plain LoRA with quantize none")
    loader = ctx.resolved["loader"][0]
    if "quantize" not in inspect.signature(loader.obj).parameters:
        raise ItoolError(f"quantize {config.quantize}: model loader {loader.name!r} cannot load a quantised model "
                         "(it takes no quantize argument)")


def check_components(ctx: RunContext) -> None:
    """Call each configured component's ``check`` (registered with ``check=``): device, dtype, model and
    data files are verified without loading weights or training anything."""
    config = ctx.config
    check_quantize(ctx)
    for found in ctx.resolved.values():
        if found is None or found[0].attrs.get("check") is None:
            continue
        component, opts = found
        check = component.attrs["check"]
        try:
            if component.kind == "model":
                check(config.model, opts, device=config.device, dtype=config.dtype, **quantize_argument(config))
            else:
                check(opts)
        except ItoolError:
            raise
        except Exception as exc:  # a plugin's check that crashes still gets one line
            raise ItoolError(f"{component.kind} {component.name!r}: {type(exc).__name__}: {exc}") from None


def plan_session(registry: Registry, layers: list[dict[str, Any]], *,
                 context: type[RunContext] = RunContext) -> RunContext:
    """A context for a new run, every setting checked and nothing written (``ctx.run`` is None)."""
    config = build_config(layers)
    if config.name is None:
        config.name = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    ctx = context(config, registry, run=None)
    RunDir.check_new(config.runs_dir, config.name)
    check_components(ctx)
    return ctx


def start_session(ctx: RunContext) -> RunContext:
    """Create the planned run's directory, with its config.yaml (also recorded in state.json). In a run
    of several processes the main one creates it, once every process has checked the plan."""
    path = on_main(lambda: RunDir.create(ctx.config.runs_dir, ctx.config.name, config_data(ctx.config)).path)
    ctx.run = RunDir(path)
    return ctx


def new_session(registry: Registry, layers: list[dict[str, Any]], *,
                context: type[RunContext] = RunContext) -> RunContext:
    """A new run, checked and then created. Commands with checks of their own call :func:`plan_session`,
    check, then :func:`start_session`."""
    return start_session(plan_session(registry, layers, context=context))


def resume_session(registry: Registry, path: Path, *, context: type[RunContext] = RunContext) -> RunContext:
    """The context of an existing run, with the config it started with.

    A config.yaml edited since the run started is refused: its finished stages were made with the old
    settings, and continuing would mix the two without saying so."""
    run = RunDir.open(path)
    saved = read_config_file(run.path / CONFIG_FILE)
    started_with = run.started_with
    if started_with is not None and saved != started_with:
        changed = ", ".join(changed_keys(started_with, saved))
        raise ItoolError(f"{run.path / CONFIG_FILE} was edited after the run started (changed: {changed}); "
                         f"undo the edit, or start a new run: --config {run.path / CONFIG_FILE} --name NEW")
    ctx = context(build_config([saved]), registry, run)
    check_components(ctx)
    return ctx
