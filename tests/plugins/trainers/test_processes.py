"""A run in two CPU processes (gloo, started through accelerate by ``itool run --processes 2``) trains
what a one-process run of the same config trains: the same loss and gradient norm at every optimiser
step of the warm-up and of a preference round, and the same adapters, within float rounding. The
stages other than training run once, on the main process; only it writes the run directory; a run
stopped half-way resumes in two processes at the same stage.

The real model (SmolLM2-135M-Instruct, float32) on the toy samples of ``loop_plugins``, with the
search and evaluator of ``process_plugins``, which need no generation. The sizes make every case of
the split happen: warm-up micro-batches of 3 examples over 2 processes (shares of 2 and 1), a last
micro-batch of 2 in a last optimiser step that has 1 of its 2 micro-batches; preference micro-batches
of 3 pairs, each pair its own forward pass (``micro_batch_tokens: 1``), and a last micro-batch of one
pair, which leaves the second process nothing to train on, and a checkpoint after every step (saved by
both processes together, marked by the main one). DPO: reference log-probs are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

TESTS = Path(__file__).parents[2]
CONFIG = {
    "dtype": "float32", "device": "cpu", "dataset": "toy", "train_limit": 4, "eval_limit": 2, "eval_base": False,
    "rounds": 1, "sampler": "toy-every-other", "search": "rival-calls", "pairs": "toy-best-worst",
    "loss": "dpo", "evaluator": "answer-logp",
    "warmup": {"name": "curriculum", "options": {
        "batch_size": 3, "grad_accum": 2, "epochs": 2, "lora_dropout": 0.0, "max_length": 32, "eval_samples": 1,
        "report_to": []}},
    "trainer": {"name": "lora", "options": {
        "batch_size": 3, "epochs": 1, "micro_batch_tokens": 1, "max_length": 32, "report_to": [],
        "checkpoint_steps": 1}},
}
MAIN_ONLY = ["warmup.eval", "round1.select", "round1.search", "round1.pairs", "round1.eval"]


def itool(*args: str) -> subprocess.Popen:
    env = {**os.environ, "ITOOL_PLUGINS": "loop_plugins,process_plugins", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "itool", "run", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finished(*processes: subprocess.Popen) -> None:
    for process in processes:
        _, err = process.communicate(timeout=3600)
        assert process.returncode == 0, err[-4000:]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def steps(run: Path, stage: str) -> list[dict]:
    return [row for row in rows(run) if row["stage"] == stage and row["event"] in ("train_step", "step")]


def adapter(run: Path, stage: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / stage / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/one: one process; runs/two: two processes, stopped after the warm-up's evaluation and resumed."""
    folder = tmp_path_factory.mktemp("processes")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    common = ["--config", str(config), "--runs-dir", str(folder / "runs")]
    one = itool(*common, "--name", "one")
    finished(one, itool(*common, "--name", "two", "--processes", "2", "--stop-after", "warmup.eval"))
    finished(itool("--resume", str(folder / "runs" / "two"), "--processes", "2"))
    return folder / "runs"


@pytest.mark.parametrize("stage", ["warmup", "round1.train"])
def test_two_processes_train_what_one_does(runs, stage):
    one, two = steps(runs / "one", stage), steps(runs / "two", stage)
    assert [row["step"] for row in two] == [row["step"] for row in one] == [1, 2]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    single, double = adapter(runs / "one", stage), adapter(runs / "two", stage)
    assert single.keys() == double.keys()
    # LoRA's B starts at zero, so B is what training made (A is mostly its seeded start). AdamW's first
    # steps move every weight by about lr whatever its gradient, so weights whose gradient is ~0 carry
    # float noise up to a fraction of lr; B as a whole agrees far closer than a different training would.
    learned = [key for key in single if "lora_B" in key]
    difference = torch.stack([(double[key] - single[key]).norm() for key in learned]).norm()
    assert difference / torch.stack([single[key].norm() for key in learned]).norm() < 1e-2


def test_other_stages_run_once_on_the_main_process_which_alone_writes(runs):
    calls = (runs / "two" / "calls.log").read_text().splitlines()
    assert calls == [line for line in (runs / "one" / "calls.log").read_text().splitlines()]
    assert all(line.endswith("rank=0") for line in calls if "rank=" in line)
    one, two = json.loads((runs / "one" / "state.json").read_text()), json.loads((runs / "two" / "state.json").read_text())
    assert two["completed"] == one["completed"] and two["adapters"] == one["adapters"]
    assert two["results"]["round1.eval"]["summary"] == pytest.approx(one["results"]["round1.eval"]["summary"], rel=1e-4)
    ends = [row["stage"] for row in rows(runs / "two") if row["event"] == "end"]
    assert ends == one["completed"]  # each stage's rows written once, by one process
    starts = [row["stage"] for row in rows(runs / "two") if row["event"] == "start"]
    assert starts == ends  # the resumed launch went on at round1.select in both processes
    reference = [row for row in rows(runs / "two") if row["event"] == "reference_logps"]
    assert [row["cached"] for row in reference] == [False]
    assert not (runs / "two" / "round1.train" / "checkpoints").exists()  # saved at each step, deleted at the end
