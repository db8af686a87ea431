"""``itool annotate`` and the dataset ``paths`` that reads its output back.

``itool annotate --search dfsdt --env bfcl-multiturn --out paths.jsonl [--limit N] [--model X]`` runs an
agent search (``dfsdt`` or ``react``) over BFCL multi-turn entries and writes every solution path that
passes the ground-truth check as one ``Sample`` JSON line: the whole conversation (user turns,
assistant messages with ``tool_calls``, ``tool`` results, the final answers) in ``messages``. It prints
the pass rate (paths whose backend state and results match the ground truth's) and logs it to the run
directory's ``metrics.jsonl``, beside ``annotate/trees.jsonl`` (for ``itool tree render``).

Dataset ``paths`` (``--dataset paths --dataset-opt path=paths.jsonl``) turns each path into training
samples, one per assistant message: the conversation before it as ``messages`` and its calls as
``answer`` (a final answer is a no-call sample), so the warm-up trains on every step of a path.
Paths are split into train/test by a hash of the path id, so a path's steps stay together.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import Field

from itool import hookimpl
from itool.config import parse_option
from itool.context import stable_subset
from itool.errors import ItoolError
from itool.plugins.datasets._common import FileDataset, FileDatasetOptions, Malformed, json_records
from itool.plugins.searches.agent import World, solution_messages
from itool.rundir import check_output_file, write_jsonl
from itool.schemas import Sample

STAGE = "annotate"


def path_samples(trees, samples: list[Sample], world: World) -> list[Sample]:
    """The passing solution paths as Samples holding the whole conversation."""
    by_id = {s.id: s for s in samples}
    paths = []
    for tree in trees:
        if not tree.meta.get("passed"):
            continue
        sample = by_id[tree.sample_id]
        paths.append(Sample(
            id=f"{sample.id}.{tree.meta['search']}", category=sample.category, messages=solution_messages(tree),
            tools=world.tools(sample, tree.meta["turns"] - 1),
            meta={"source": sample.id, "search": tree.meta["search"], "queries": tree.meta["queries"]}))
    return paths


@click.command("annotate")
@click.option("--search", default="dfsdt", show_default=True, help="Agent search: dfsdt or react.")
@click.option("--env", "environment", default="bfcl-multiturn", show_default=True, help="Tool environment.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSONL file of solution paths.")
@click.option("--limit", type=int, default=None, help="At most N entries, chosen by id hash.")
@click.option("--model", default=None, help="Model alias, local path or hub id (default: smollm2-135m-instruct).")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="train", show_default=True,
              help="Which BFCL-half split to annotate.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Where trees and metrics go (default: runs/annotate-<timestamp>).")
@click.option("--search-opt", "search_opts", multiple=True, metavar="KEY=VALUE", help="Search option (repeatable).")
@click.option("--dataset-opt", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="Option of the bfcl dataset (default categories=[multi_turn_base]).")
@click.option("--backend", default=None, help="Generation backend (default: transformers; openai for a served model).")
@click.option("--backend-opt", "backend_opts", multiple=True, metavar="KEY=VALUE",
              help="Backend option (repeatable; see `itool plugins backend NAME`).")
@click.option("--seed", type=int, default=None, help="Random seed (default: 0).")
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--dtype", default=None, help="auto, bfloat16 or float32.")
def annotate_command(search: str, environment: str, out: Path, limit: int | None, model: str | None, split: str,
                     run_dir: Path | None, search_opts: tuple[str, ...], dataset_opts: tuple[str, ...],
                     seed: int | None, device: str | None, dtype: str | None, backend: str | None,
                     backend_opts: tuple[str, ...]) -> None:
    """Annotate tool-use paths with an agent search (DFSDT) in an executable environment."""
    from itool.cli import get_registry
    from itool.session import plan_session, start_session

    if limit is not None and limit < 1:
        raise ItoolError("--limit must be at least 1")
    check_output_file(out)
    run_dir = (run_dir or Path("runs") / datetime.now().strftime("annotate-%Y%m%d-%H%M%S")).resolve()
    search_options = {**dict(parse_option(o, "--search-opt") for o in search_opts), "environment": environment}
    layer: dict[str, Any] = {
        "runs_dir": str(run_dir.parent), "name": run_dir.name, "train_limit": None, "eval_limit": None, "warmup": "none",
        "rounds": 0,  # a search alone: no rounds, so no pair builder has to read its trees
        "search": {"name": search, "options": search_options},
        "dataset": {"name": "bfcl", "options": {"categories": ["multi_turn_base"],
                                                **dict(parse_option(o, "--dataset-opt") for o in dataset_opts)}},
    }
    layer.update({k: v for k, v in {"model": model, "device": device, "dtype": dtype, "seed": seed}.items() if v is not None})
    if backend or backend_opts:
        layer["backend"] = {**({"name": backend} if backend else {}),
                            "options": dict(parse_option(o, "--backend-opt") for o in backend_opts)}
    registry = get_registry()
    if "environment" not in registry.get("search", search).options.model_fields:
        raise ItoolError(f"search {search!r} does not run tools in an environment; use dfsdt or react")
    ctx = plan_session(registry, [layer])
    searcher, opts = ctx.component("search")
    world = World.resolve(ctx, environment, opts.environment_options)
    dataset, data_opts = ctx.component("dataset")
    samples = stable_subset(dataset.obj(split, data_opts), limit)
    if not samples:
        raise ItoolError("no entries to annotate (check --dataset-opt categories and --split)")
    start_session(ctx)
    ctx.stage = STAGE
    trees = searcher.obj(ctx, samples, opts)
    write_jsonl(ctx.stage_dir / "trees.jsonl", trees)
    paths = path_samples(trees, samples, world)
    write_jsonl(out, paths)
    passed = sum(bool(t.meta.get("passed")) for t in trees)
    rate = passed / len(trees)
    ctx.log("pass_rate", search=search, environment=environment, entries=len(trees), passed=passed, pass_rate=rate,
            solved=sum(bool(t.meta.get("solved")) for t in trees), queries=sum(t.meta["queries"] for t in trees))
    click.echo(f"{search}: pass rate {passed}/{len(trees)} = {100 * rate:.1f}%")
    click.echo(f"paths: {out} ({len(paths)})\ntrees: {ctx.stage_dir / 'trees.jsonl'}\n"
               f"metrics: {ctx.run.path / 'metrics.jsonl'}", err=True)


# -- dataset `paths` ----------------------------------------------------------------------------
class PathsOptions(FileDatasetOptions):
    path: Path | None = Field(None, description="JSONL written by `itool annotate --out`.")


def step_samples(path: Sample) -> list[Sample]:
    """One sample per assistant message of a path: what came before it, and its calls as the answer."""
    steps = []
    for i, message in enumerate(path.messages):
        if message.role != "assistant":
            continue
        meta = {**path.meta, "path": path.id}
        if not message.tool_calls:
            meta["final_answer"] = message.content
        steps.append(Sample(id=f"{path.id}.{i}", category=path.category, messages=path.messages[:i],
                            tools=path.tools, answer=message.tool_calls or [], meta=meta))
    return steps


def path_steps(index: int, record: Any) -> list[Sample]:
    try:
        path = Sample.model_validate(record)
    except ValueError:
        raise Malformed("not a Sample record") from None
    return step_samples(path)


PATHS = FileDataset("paths", json_records, path_steps, split_key=lambda step: step.meta["path"])  # a path's steps stay together


def load_paths(split: str, opts: PathsOptions) -> list[Sample]:
    """Solution paths from `itool annotate`, one training sample per assistant step."""
    return PATHS.load(split, opts)


@hookimpl
def register_datasets(register):
    register("paths", load_paths, options=PathsOptions, check=PATHS.check)


@hookimpl
def register_commands(cli):
    cli.add_command(annotate_command)
