"""Evaluation and search run their samples in fixed chunks and journal each finished chunk: a stage
stopped between chunks resumes doing only the chunks that are missing, and writes exactly what an
unbroken run writes (verdicts, summary, trees, byte for byte), with the real model and real data.

The stop is a test-only evaluator and search (the real ``bfcl`` and ``puct``, wrapped) that raise in
their second chunk the first time; chunks are 2 samples here, so each stage has 2 chunks of 2."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch
import yaml
from click.testing import CliRunner

from itool import cli as cli_module
from itool import hookimpl
from itool import loop as loop_module
from itool.plugins.evaluators.bfcl import BfclEvalOptions, evaluate, summarize_verdicts
from itool.plugins.searches.puct import PuctOptions, puct
from itool.registry import Registry
from itool.rundir import read_jsonl

STAGES = ["base.eval", "round1.select", "round1.search"]
CHUNKED = {"base.eval": "verdicts.jsonl", "round1.search": "trees.jsonl"}
TINY = {
    "dtype": "float32", "device": "cpu", "seed": 5, "rounds": 1, "train_limit": 4, "eval_limit": 4, "warmup": None,
    "dataset": {"name": "bfcl", "options": {"categories": ["simple_python"]}},
    "sampler": "all",
    "search": {"name": "puct", "options": {"simulations": 1, "width": 2, "step_max_tokens": 8, "rollout_max_tokens": 24}},
    "evaluator": {"name": "bfcl", "options": {"max_new_tokens": 16}},
}


def stopped_in_second_chunk(work):
    """``work`` that notes each chunk's sample ids in ``chunks.log`` and raises in the second chunk of a
    stage the first time, as a process killed between chunks."""
    def wrapped(ctx, samples, opts):
        log = ctx.run.path / "chunks.log"
        with open(log, "a") as fh:
            fh.write(f"{ctx.stage} {' '.join(s.id for s in samples)}\n")
        if sum(line.startswith(f"{ctx.stage} ") for line in log.read_text().splitlines()) == 2:
            raise RuntimeError("stopped between chunks")
        return work(ctx, samples, opts)
    return wrapped


class StoppedOnce:
    @hookimpl
    def register_evaluators(self, register):
        register("bfcl-stopped-once", stopped_in_second_chunk(evaluate), options=BfclEvalOptions,
                 summarize=summarize_verdicts)

    @hookimpl
    def register_searches(self, register):
        register("puct-stopped-once", stopped_in_second_chunk(puct), options=PuctOptions, produces="step-values")


@contextmanager
def one_thread():
    """The runs are compared with each other only, and on a CPU shared with other work one torch thread
    per process is several times faster than threads waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("chunks")
    config, stopping = root / "tiny.yaml", root / "tiny-stopped-once.yaml"
    config.write_text(yaml.safe_dump({**TINY, "runs_dir": str(root / "runs")}))
    stopping.write_text(yaml.safe_dump({
        **TINY, "runs_dir": str(root / "runs"),
        "evaluator": {**TINY["evaluator"], "name": "bfcl-stopped-once"},
        "search": {**TINY["search"], "name": "puct-stopped-once"},
    }))

    def itool(*args: str):
        return CliRunner().invoke(cli_module.cli, ["run", *args, "--stop-after", STAGES[-1]])

    with pytest.MonkeyPatch.context() as patch, one_thread():
        patch.setattr(cli_module, "_registry", Registry(extra_modules=[StoppedOnce()]))
        patch.setattr(loop_module, "EVAL_CHUNK", 2)
        patch.setattr(loop_module, "SEARCH_CHUNK", 2)
        assert itool("--config", str(config), "--name", "unbroken").exit_code == 0
        stopped = root / "runs" / "stopped"
        first = itool("--config", str(stopping), "--name", "stopped")
        journals_at_stop = {"base.eval": (stopped / "base.eval" / "verdicts.journal.jsonl").read_text()}
        second = itool("--resume", str(stopped))
        journals_at_stop["round1.search"] = (stopped / "round1.search" / "trees.journal.jsonl").read_text()
        third = itool("--resume", str(stopped))
    return {"unbroken": root / "runs" / "unbroken", "stopped": stopped, "results": [first, second, third],
            "journals_at_stop": journals_at_stop}


def test_each_stop_between_chunks_fails_the_stage_and_keeps_its_first_chunk(runs):
    first, second, third = runs["results"]
    assert first.exit_code == 1 and "stage base.eval failed: RuntimeError: stopped between chunks" in first.output
    assert second.exit_code == 1 and "stage round1.search failed: RuntimeError: stopped between chunks" in second.output
    assert third.exit_code == 0, third.output
    for stage, journal in runs["journals_at_stop"].items():
        header, *pieces = [json.loads(line) for line in journal.splitlines()]
        assert [p["piece"] for p in pieces] == ["0"] and len(pieces[0]["rows"]) == 2, stage


def test_a_resumed_stage_does_only_its_missing_chunk(runs):
    chunks = [line.split(" ", 1) for line in (runs["stopped"] / "chunks.log").read_text().splitlines()]
    for stage in CHUNKED:
        done = [ids.split() for name, ids in chunks if name == stage]
        assert len(done) == 3 and done[1] == done[2] and not set(done[0]) & set(done[1]), done  # 0, 1 stopped, 1
    rows = read_jsonl(runs["stopped"] / "metrics.jsonl")
    resumed = [(r["stage"], r["samples_kept"], r["of"]) for r in rows if r["event"] == "resume"]
    assert resumed == [("base.eval", 2, 4), ("round1.search", 2, 4)]
    rerun = [(r["stage"], r["chunk"]) for r in rows if r["event"] == "chunk" and not r.get("abandoned")]
    assert rerun == [("base.eval", 1), ("round1.search", 1)]  # the rows of the stopped attempts are abandoned


@pytest.mark.parametrize("stage", CHUNKED)
def test_a_resumed_stage_writes_what_an_unbroken_run_writes(runs, stage):
    for name in [CHUNKED[stage], *(["summary.json"] if stage == "base.eval" else [])]:
        expected = (runs["unbroken"] / stage / name).read_bytes()
        assert (runs["stopped"] / stage / name).read_bytes() == expected, name
    assert len(read_jsonl(runs["unbroken"] / stage / CHUNKED[stage])) == 4
    assert not list((runs["stopped"] / stage).glob("*.journal.jsonl"))  # deleted once the stage is written


def test_the_search_compared_grew_its_trees(runs):
    """The comparison is not vacuous: every tree has children, sampled at temperature 1."""
    trees = read_jsonl(runs["unbroken"] / "round1.search" / "trees.jsonl")
    assert all(len(tree["nodes"]) >= 2 for tree in trees)
