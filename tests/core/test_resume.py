"""A resumed run writes exactly what an unbroken run writes, with the real model, in fresh processes.

One run goes straight through. A second run is stopped after every stage in turn and resumed each time
in a new process (so each stage loads the model itself, as after a crash), and its search is killed
with SIGKILL half-way once and resumed. Every stage's outputs — selected ids, trees, pairs, adapters,
verdicts, summaries — must be byte-identical to the unbroken run's; only timings and metrics.jsonl
differ, and there the killed attempt's rows are marked abandoned.

Sizes are tiny (2 train samples and 1 test sample of BFCL simple_python, one simulation of width 2) so
that the nine processes fit in a few minutes on a CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from itool.rundir import read_jsonl

ITOOL = Path(sys.executable).with_name("itool")
STAGES = ["warmup", "warmup.eval", "round1.select", "round1.search", "round1.pairs", "round1.train", "round1.eval"]
KILLED = "round1.search"
TINY = {
    "dtype": "float32", "device": "cpu", "seed": 3, "rounds": 1, "train_limit": 2, "eval_limit": 1, "eval_base": False,
    "dataset": {"name": "bfcl", "options": {"categories": ["simple_python"]}},
    "warmup": {"name": "curriculum", "options": {"eval_samples": 1, "max_length": 128}},
    "sampler": {"name": "perplexity", "options": {"fraction": 0.5}},
    "search": {"name": "puct", "options": {"simulations": 1, "width": 2, "step_max_tokens": 8, "rollout_max_tokens": 24}},
    # every tree with two different rollouts gives a pair, so the training stage always trains
    "pairs": {"name": "response", "options": {"min_gap": 0, "min_chosen": -1, "max_overlap": 1}},
    "trainer": {"name": "lora", "options": {"epochs": 1, "batch_size": 2, "max_length": 128}},
    "evaluator": {"name": "bfcl", "options": {"max_new_tokens": 16}},
}


def itool(*args: str, cwd: Path) -> None:
    done = subprocess.run([str(ITOOL), "run", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def completed(run: Path) -> list[str]:
    return json.loads((run / "state.json").read_text())["completed"]


def kill_mid_stage(run: Path, stage: str, cwd: Path) -> list[str]:
    """Resume ``run`` in a new process and SIGKILL it once ``stage`` has started; the stages then done."""
    process = subprocess.Popen([str(ITOOL), "run", "--resume", str(run), "--stop-after", stage], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(row["stage"] == stage and row["event"] == "start" for row in read_jsonl(run / "metrics.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, f"{stage} never started"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return completed(run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "runs_dir": str(root / "runs")}))
    itool("--config", str(config), "--name", "unbroken", cwd=root)
    split = root / "runs" / "split"
    itool("--config", str(config), "--name", "split", "--stop-after", STAGES[0], cwd=root)
    done_at_kill = None
    for stage in STAGES[1:]:
        if stage == KILLED:
            done_at_kill = kill_mid_stage(split, stage, cwd=root)
        itool("--resume", str(split), "--stop-after", stage, cwd=root)
    return {"unbroken": root / "runs" / "unbroken", "split": split, "done_at_kill": done_at_kill}


def outputs(stage_dir: Path) -> dict[str, bytes]:
    """Every file the stage wrote, but TensorBoard's event files (timings, with the time and pid in their
    names). PEFT writes adapter_config.json's ``target_modules``, a set, in the order of the process's
    string hashes, which differs between processes: that one list is compared sorted."""
    found = {}
    for path in sorted(stage_dir.rglob("*")):
        name = path.relative_to(stage_dir).as_posix()
        if path.is_file() and not path.name.startswith(".") and not name.startswith("tensorboard/"):
            found[name] = path.read_bytes()
            if path.name == "adapter_config.json":
                config = json.loads(found[name])
                found[name] = json.dumps({**config, "target_modules": sorted(config["target_modules"])}).encode()
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_resumed_in_a_fresh_process_writes_byte_identical_outputs(runs, stage):
    expected, got = outputs(runs["unbroken"] / stage), outputs(runs["split"] / stage)
    assert expected, f"{stage} wrote nothing"
    assert sorted(got) == sorted(expected)
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, f"{stage}: {differing} differ from the unbroken run's"


def test_the_stages_write_what_the_comparison_needs(runs):
    """The comparison above is not vacuous: both adapters exist, the search branched, pairs were trained on."""
    run = runs["unbroken"]
    assert (run / "warmup" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "round1.train" / "adapter" / "adapter_model.safetensors").is_file()
    assert all(len(tree["nodes"]) >= 3 for tree in read_jsonl(run / "round1.search" / "trees.jsonl"))
    assert read_jsonl(run / "round1.pairs" / "pairs.jsonl")
    assert completed(runs["split"]) == completed(run) == STAGES


def test_a_kill_9_mid_stage_leaves_its_rows_marked_abandoned_and_the_rerun_complete(runs):
    assert runs["done_at_kill"] == STAGES[:STAGES.index(KILLED)]  # killed before the stage finished
    rows = read_jsonl(runs["split"] / "metrics.jsonl")
    killed_attempt = STAGES.index(KILLED) + 1  # one process per stage before it
    by_attempt = {}
    for row in rows:
        by_attempt.setdefault(row["attempt"], set()).add((row["stage"], bool(row.get("abandoned"))))
    assert by_attempt[killed_attempt] == {(KILLED, True)}
    assert by_attempt[killed_attempt + 1] == {(KILLED, False)}
    rerun = [row["event"] for row in rows if row["stage"] == KILLED and not row.get("abandoned")]
    assert rerun[0] == "start" and rerun[-1] == "end"
    assert sorted(by_attempt) == list(range(1, len(STAGES) + 2))  # every process, the killed one included
    assert not any(r.get("abandoned") for r in rows if r["stage"] != KILLED)


def test_a_run_redone_from_a_stage_writes_that_stage_and_the_later_ones_again(runs, tmp_path):
    run = tmp_path / "redone"
    shutil.copytree(runs["unbroken"], run)
    done = subprocess.run([str(ITOOL), "redo", str(run), "round1.train"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert completed(run) == STAGES[:STAGES.index("round1.train")]
    assert not (run / "round1.train").exists() and not (run / "round1.eval").exists()
    itool("--resume", str(run), cwd=tmp_path)
    assert completed(run) == STAGES
    for stage in ("round1.train", "round1.eval"):
        assert outputs(run / stage) == outputs(runs["unbroken"] / stage)
    assert {row["stage"] for row in read_jsonl(run / "metrics.jsonl") if row.get("abandoned")} == set()
