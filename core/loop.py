"""The iTool loop: [evaluate base] → warm-up → evaluate → R × (select → search → pairs → train → evaluate).

Each stage calls the component configured for it, writes its outputs into its own folder and is then
marked complete in the state file. A resumed run skips completed stages and reads what later stages
need back from disk, so nothing is repeated and nothing is lost. A stage that was interrupted runs
again with the same seed (from scratch, from a checkpoint its component left in the stage folder, or,
for evaluation, search and perplexity selection, from the chunks of samples it journaled: :func:`in_chunks`), so the resumed
run writes what an unbroken one would; the rows the interrupted attempt left in metrics.jsonl stay,
marked ``"abandoned": true``.

Plugins follow the run through the lifecycle hooks of ``itool.hookspecs`` (``run_started``,
``stage_started``, ``stage_finished``, ``stage_failed``, ``run_finished``, ``log_event``), and a backend
follows the policy through ``policy_updated``, called after each stage that saved an adapter.
"""

from __future__ import annotations

import json
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from rich.console import Console
from tqdm.auto import tqdm

from itool.cache import EvaluationCache
from itool.context import RunContext, seed_everything
from itool.errors import ItoolError
from itool.processes import is_main, on_main
from itool.rundir import METRICS_FILE, RunDir, read_jsonl, write_json, write_jsonl
from itool.schemas import EvalReport, PreferencePair, Sample, SearchTree, Verdict

console = Console(stderr=True, quiet=not is_main())  # several processes: the main one speaks


class StageFailed(ItoolError):
    """A component raised; completed stages are kept and ``--resume`` re-runs only the failed one."""


@dataclass
class Stage:
    name: str
    run: Callable[[RunContext], Any]
    every_process: bool = False  # training: data-parallel on every process; other stages: on the main one (itool.processes)


def plan(ctx: RunContext) -> list[Stage]:
    """The ordered stages this config asks for."""
    cfg = ctx.config
    stages: list[Stage] = []
    if cfg.eval_base:
        stages.append(Stage("base.eval", evaluate))
    if cfg.warmup is not None:
        stages += [Stage("warmup", warmup, every_process=True), Stage("warmup.eval", evaluate)]
    for r in range(1, cfg.rounds + 1):
        stages += [
            Stage(f"round{r}.select", select),
            Stage(f"round{r}.search", search),
            Stage(f"round{r}.pairs", build_pairs),
            Stage(f"round{r}.train", train, every_process=True),
            Stage(f"round{r}.eval", evaluate),
        ]
    return stages


def check_stop_after(ctx: RunContext, stop_after: str | None) -> None:
    """Fail before anything is written when ``stop_after`` names no stage of this run."""
    names = [s.name for s in plan(ctx)]
    if stop_after is not None and stop_after not in names:
        raise ItoolError(f"--stop-after {stop_after!r} is not a stage of this run (stages: {', '.join(names)})")


def run_loop(ctx: RunContext, stop_after: str | None = None) -> None:
    check_stop_after(ctx, stop_after)
    stages = plan(ctx)
    ctx.notify("run_started")
    done = set(on_main(lambda: ctx.run.state["completed"]))  # one view for every process of a run
    for stage in stages:
        if stage.name in done:
            console.print(f"[dim]✓ {stage.name} (already done)[/dim]")
        elif stage.every_process:
            run_stage(ctx, stage)
        else:
            on_main(lambda: run_stage(ctx, stage))
        if stage.name == stop_after:
            console.print(f"stopped after {stage.name}; continue with: itool run --resume {ctx.run.path}")
            break
    ctx.notify("run_finished", completed=all(ctx.run.is_done(s.name) for s in stages))


def abandon_earlier_attempts(run: RunDir, stage: str) -> None:
    """Mark the metrics rows that earlier attempts left for ``stage`` with ``"abandoned": true`` (in one
    atomic rewrite): they come from attempts that did not finish the stage, which now runs again."""
    if not is_main():
        return
    rows = run.metrics()
    stale = [row for row in rows if row.get("stage") == stage and not row.get("abandoned")]
    if stale:
        for row in stale:
            row["abandoned"] = True
        write_jsonl(run.path / METRICS_FILE, rows)


def run_stage(ctx: RunContext, stage: Stage) -> None:
    ctx.stage = stage.name
    abandon_earlier_attempts(ctx.run, stage.name)
    seed_everything(ctx.stage_seed(stage.name))
    console.rule(f"[bold]{stage.name}")
    ctx.log("start")
    started = time.perf_counter()
    try:
        ctx.notify("stage_started", stage=stage.name)
        result = stage.run(ctx)
        result = {**(result or {}), "seconds": round(time.perf_counter() - started, 3)}
        ctx.notify("stage_finished", stage=stage.name, result=result)
    except ItoolError as exc:
        ctx.notify("stage_failed", stage=stage.name, error=exc)
        raise
    except KeyboardInterrupt as exc:
        ctx.log("interrupted")
        ctx.notify("stage_failed", stage=stage.name, error=exc)
        raise StageFailed(f"interrupted during {stage.name}; continue with: {ctx.continue_with} {ctx.run.path}") from None
    except Exception as exc:  # a crash inside a plugin: keep the traceback, tell the user how to go on
        trace = ctx.stage_dir / "error.txt"
        trace.write_text(traceback.format_exc(), encoding="utf-8")
        ctx.log("error", error=f"{type(exc).__name__}: {exc}")
        ctx.notify("stage_failed", stage=stage.name, error=exc)
        raise StageFailed(
            f"stage {stage.name} failed: {type(exc).__name__}: {exc} (traceback in {trace}; "
            f"fix and continue with: {ctx.continue_with} {ctx.run.path})"
        ) from exc
    ctx.log("end", **result)
    adapter = ctx.stage_dir / "adapter"
    ctx.run.complete(stage.name, result, adapter=adapter if adapter.exists() else None)
    if adapter.exists():
        ctx.notify("policy_updated", adapter_dir=adapter)
    console.print(f"[green]✓ {stage.name}[/green] {result['seconds']:.1f}s  {_short(result)}")


def _short(result: dict[str, Any]) -> str:
    """One line for the console: scalar results, plus the headline row of an evaluation."""
    shown = {k: v for k, v in result.items() if k != "seconds" and not isinstance(v, (dict, list))}
    if "Overall" in result.get("summary", {}):
        shown["Overall"] = result["summary"]["Overall"]
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def _round_stage(ctx: RunContext, step: str) -> str:
    return f"{ctx.stage.split('.')[0]}.{step}"


# -- long stages, in chunks ---------------------------------------------------------------------------
# Samples per chunk of a long stage; a kill loses at most the chunk in progress. Evaluation: one full
# decode batch of the transformers backend (48 rows), so chunking costs no batching. Search: PUCT batches
# the requests of all samples of a chunk into each wave; 32 samples at width 3 give 96 rows, two full
# batches, and enough rows to fill a batch still in later simulations, when fewer leaves are open.
EVAL_CHUNK = 48
SEARCH_CHUNK = 32

SELECTED_FILE = "selected.json"  # a select stage's output: the chosen train sample ids, in order


@contextmanager
def in_chunks(ctx: RunContext, name: str, samples: list[Sample], size: int,
              work: Callable[[list[Sample]], list[Any]]) -> Iterator[list[Any]]:
    """Run ``work`` on ``samples`` in fixed chunks of ``size``, in order, and yield the rows of all
    chunks (as JSON values) for the stage to write its outputs from.

    Each finished chunk is kept in the stage's journal ``name``; a chunk an earlier attempt at the stage
    finished is not done again. Each chunk runs with the random streams seeded from the stage seed and
    the chunk's index, so it draws what it draws in an unbroken run. The journal is deleted once the
    stage's outputs are written (when the ``with`` block ends without an error)."""
    chunks = [samples[start: start + size] for start in range(0, len(samples), size)]
    journal = ctx.journal(name, plan=[[s.id for s in chunk] for chunk in chunks])
    kept = [i for i in range(len(chunks)) if str(i) in journal]
    if kept:
        ctx.log("resume", chunks_kept=len(kept), samples_kept=sum(len(chunks[i]) for i in kept), of=len(samples))
    with tqdm(total=len(samples), initial=sum(len(chunks[i]) for i in kept), desc=ctx.stage, unit="sample",
              disable=not samples) as bar:
        for index, chunk in enumerate(chunks):
            if index in kept:
                continue
            started = time.perf_counter()
            seed_everything(ctx.stage_seed(f"{ctx.stage}/chunk{index}"))
            journal.record(str(index), work(chunk))
            ctx.log("chunk", chunk=index, samples=len(chunk), seconds=round(time.perf_counter() - started, 3))
            bar.update(len(chunk))
    yield [row for index in range(len(chunks)) for row in journal.pieces[str(index)]]
    journal.remove()


# -- stages -----------------------------------------------------------------------------------------
def evaluate(ctx: RunContext) -> dict[str, Any]:
    """Verdicts chunk by chunk when the evaluator can summarise a list of verdicts (``summarize=`` in its
    registration), so that an interrupted evaluation resumes from its last finished chunk; otherwise in
    one call."""
    evaluator, opts = ctx.component("evaluator")
    samples = ctx.samples("test")
    cache = ctx.evaluation_cache(samples)
    cached = cache.load() if cache is not None else None
    if cached is not None:
        ctx.log("cached", path=str(cache.path))
        console.print(f"[dim]the same evaluation was made before: verdicts from {cache.path}[/dim]")
        return _write_evaluation(ctx, [Verdict.model_validate(row) for row in cached[0]], cached[1])
    summarize = evaluator.attrs.get("summarize")
    if summarize is None:
        report: EvalReport = evaluator.obj(ctx, samples, opts)
        return _write_evaluation(ctx, report.verdicts, report.summary, cache)
    with in_chunks(ctx, "verdicts", samples, EVAL_CHUNK, lambda chunk: evaluator.obj(ctx, chunk, opts).verdicts) as rows:
        verdicts = [Verdict.model_validate(row) for row in rows]
        return _write_evaluation(ctx, verdicts, summarize(verdicts, opts), cache)


def _write_evaluation(ctx: RunContext, verdicts: list[Verdict], summary: dict[str, Any],
                      cache: EvaluationCache | None = None) -> dict[str, Any]:
    # The summary goes through JSON first, so that a run that takes it from the cache returns what this one does.
    summary = json.loads(json.dumps(summary, ensure_ascii=False, default=str))
    write_jsonl(ctx.stage_dir / "verdicts.jsonl", verdicts)
    write_json(ctx.stage_dir / "summary.json", summary)
    if cache is not None:
        cache.store(verdicts, summary)
    return {"summary": summary, "n": len(verdicts)}


def warmup(ctx: RunContext) -> dict[str, Any]:
    trainer, opts = ctx.component("warmup")
    return trainer.obj(ctx, ctx.samples("train"), opts) or {}


def select(ctx: RunContext) -> dict[str, Any]:
    sampler, opts = ctx.component("sampler")
    chosen = sampler.obj(ctx, ctx.samples("train"), opts)
    write_json(ctx.stage_dir / SELECTED_FILE, [s.id for s in chosen])
    return {"selected": len(chosen), "of": len(ctx.samples("train"))}


def search(ctx: RunContext) -> dict[str, Any]:
    ids = json.loads((ctx.run.path / _round_stage(ctx, "select") / SELECTED_FILE).read_text())
    by_id = {s.id: s for s in ctx.samples("train")}
    searcher, opts = ctx.component("search")
    with in_chunks(ctx, "trees", [by_id[i] for i in ids], SEARCH_CHUNK, lambda chunk: searcher.obj(ctx, chunk, opts)) as rows:
        trees = [SearchTree.model_validate(row) for row in rows]
        write_jsonl(ctx.stage_dir / "trees.jsonl", trees)
    return {"trees": len(trees), "nodes": sum(len(t.nodes) for t in trees)}


def build_pairs(ctx: RunContext) -> dict[str, Any]:
    trees = read_jsonl(ctx.run.path / _round_stage(ctx, "search") / "trees.jsonl", SearchTree)
    builder, opts = ctx.component("pairs")
    pairs: list[PreferencePair] = builder.obj(ctx, trees, opts)
    # pairs.jsonl is exactly TRL's preference format; provenance goes beside it, line for line.
    write_jsonl(ctx.stage_dir / "pairs.jsonl", [p.model_dump(include={"prompt", "chosen", "rejected"}) for p in pairs])
    write_jsonl(ctx.stage_dir / "pairs.meta.jsonl", [p.model_dump(exclude={"prompt", "chosen", "rejected"}) for p in pairs])
    return {"pairs": len(pairs), "from_trees": len(trees)}


def load_pairs(stage_dir) -> list[PreferencePair]:
    texts = read_jsonl(stage_dir / "pairs.jsonl")
    metas = read_jsonl(stage_dir / "pairs.meta.jsonl")
    return [PreferencePair.model_validate({**t, **m}) for t, m in zip(texts, metas, strict=True)]


def train(ctx: RunContext) -> dict[str, Any]:
    pairs = load_pairs(ctx.run.path / _round_stage(ctx, "pairs"))
    if not pairs:
        console.print("[yellow]no preference pairs this round: the policy is left as it is[/yellow]")
        return {"pairs": 0, "skipped": True}
    trainer, opts = ctx.component("trainer")
    return trainer.obj(ctx, pairs, opts) or {}
