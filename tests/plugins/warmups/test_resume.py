"""A warm-up killed with SIGKILL mid-training continues from its last checkpoint when the stage runs
again (what ``itool run --resume`` does for an unfinished stage): the steps before the checkpoint are
not redone and the adapter equals an unbroken run's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from itool.plugins.experiments.stops import stops

# One process runs the warm-up stage of a tiny real run: 8 samples, batch 1, a checkpoint every 2 steps.
STAGE = """
import sys
from pathlib import Path
from itool.config import build_config
from itool.context import RunContext
from itool.loop import Stage, run_stage, warmup
from itool.registry import Registry
from itool.rundir import RunDir

runs, name = Path(sys.argv[1]), sys.argv[2]
config = build_config([{"runs_dir": str(runs), "name": name, "train_limit": 8, "dtype": "float32",
                        "warmup": {"name": "curriculum", "options": {
                            "batch_size": 1, "checkpoint_steps": 2, "eval_samples": 1, "max_length": 64,
                            "report_to": []}}}])
ctx = RunContext(config, Registry(), run=None)
ctx.run = RunDir(runs / name) if (runs / name).exists() else RunDir.create(runs, name)
run_stage(ctx, Stage("warmup", warmup))
"""


def stage_process(runs: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", STAGE, str(runs), name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=3600)
    assert process.returncode == 0, err[-3000:]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "warmup" / "adapter" / "adapter_model.safetensors")


def test_a_killed_warmup_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(tmp_path):
    runs = tmp_path / "runs"
    killed = stage_process(runs, "killed")
    first_checkpoint = runs / "killed" / "warmup" / "checkpoints" / "checkpoint-2" / "itool_checkpoint.json"
    deadline = time.monotonic() + 3600
    while not first_checkpoint.exists():
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within an hour"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done_before_kill = [m["step"] for m in metrics(runs / "killed") if m["event"] == "train_step"]

    finished(stage_process(runs, "killed"))  # the stage again, in a fresh process
    finished(stage_process(runs, "unbroken"))

    rows = metrics(runs / "killed")
    resumed_at = next(i for i, m in enumerate(rows) if m["event"] == "resume")
    checkpoint_step = int(rows[resumed_at]["checkpoint"].split("-")[1])
    steps_after = [m["step"] for m in rows[resumed_at:] if m["event"] == "train_step"]
    assert done_before_kill[:checkpoint_step] == list(range(1, checkpoint_step + 1))
    assert steps_after == list(range(checkpoint_step + 1, 9))  # nothing before the checkpoint is redone
    assert not (runs / "killed" / "warmup" / "checkpoints").exists()  # deleted once the stage completed
    [stop] = stops(rows)  # the experiment report's account of the kill
    assert (stop.stage, stop.kept) == ("warmup", rows[resumed_at]["checkpoint"])

    resumed, unbroken = adapter(runs / "killed"), adapter(runs / "unbroken")
    assert resumed.keys() == unbroken.keys()
    for key in unbroken:
        torch.testing.assert_close(resumed[key], unbroken[key], rtol=1e-4, atol=1e-6)
    last = lambda run: [m for m in metrics(run) if m["event"] == "train_step"][-1]["loss"]  # noqa: E731
    assert last(runs / "killed") == pytest.approx(last(runs / "unbroken"), rel=1e-4)
