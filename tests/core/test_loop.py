"""The loop runs every stage through the registered components, and a stopped, crashed or interrupted
run resumes after its last completed stage without repeating or losing anything, writing exactly what
an unbroken run writes. Plugins can follow a run through the lifecycle hooks.

These tests drive the real CLI with the toy plugins of tests/loop_plugins.py (tests/core/test_resume.py
does the same with the real model, in separate processes and with a kill -9)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from click.testing import CliRunner

import loop_plugins
from itool import cli as cli_module
from itool.registry import Registry
from itool.rundir import read_jsonl

STAGES = ["base.eval", "warmup", "warmup.eval",
          "round1.select", "round1.search", "round1.pairs", "round1.train", "round1.eval",
          "round2.select", "round2.search", "round2.pairs", "round2.train", "round2.eval"]


@pytest.fixture
def recorder():
    return loop_plugins.EventRecorder()


@pytest.fixture
def itool(monkeypatch, tmp_path, recorder):
    """Run ``itool ...`` in-process with the built-in and the toy plugins; returns the click Result.
    ``itool.watched(...)`` runs with the ``recorder`` plugin installed too."""
    plain, watched = Registry(extra_modules=[loop_plugins]), Registry(extra_modules=[loop_plugins, recorder])
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**loop_plugins.TOY_CONFIG, "rounds": 2, "runs_dir": str(tmp_path / "runs")}))

    def invoke(registry: Registry, *args: str):
        monkeypatch.setattr(cli_module, "_registry", registry)
        return CliRunner().invoke(cli_module.cli, [a.replace("TOY", str(config)) for a in args])

    run = lambda *args: invoke(plain, *args)  # noqa: E731
    run.watched = lambda *args: invoke(watched, *args)
    return run


def test_a_run_goes_through_every_stage_and_improves_the_toy_policy(itool, tmp_path):
    result = itool("run", "--config", "TOY", "--name", "full")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "full"
    state = json.loads((run / "state.json").read_text())
    assert state["completed"] == STAGES
    assert state["adapters"] == ["warmup/adapter", "round1.train/adapter", "round2.train/adapter"]
    assert state["results"]["base.eval"]["summary"]["Overall"] == 0.0
    assert state["results"]["round2.eval"]["summary"]["Overall"] == 1.0
    pairs = read_jsonl(run / "round1.pairs" / "pairs.jsonl")
    assert len(pairs) == 8 and set(pairs[0]) == {"prompt", "chosen", "rejected"}  # TRL's preference format
    assert read_jsonl(run / "round1.pairs" / "pairs.meta.jsonl")[0]["chosen_value"] == 1.0
    events = Counter((m["stage"], m["event"]) for m in read_jsonl(run / "metrics.jsonl"))
    assert all(events[(s, "start")] == events[(s, "end")] == 1 for s in STAGES)
    assert "| round2.eval |" in (run / "report.md").read_text()
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert yaml.safe_load((run / "config.yaml").read_text())["name"] == "full"


def _outputs(run):
    return {p.relative_to(run).as_posix(): p.read_text() for p in sorted(run.rglob("*"))
            if p.is_file() and p.suffix in (".jsonl", ".json") and p.name not in ("metrics.jsonl", "state.json")}


def test_stopped_after_every_stage_and_resumed_each_time_a_run_writes_what_an_unbroken_one_does(itool, tmp_path):
    """Each resumed attempt builds its policy afresh inside its first stage (the toy policy draws random
    numbers when built, as a model does), yet the toy search's random draws and every other output
    match the unbroken run's."""
    assert itool("run", "--config", "TOY", "--name", "straight").exit_code == 0
    first = itool("run", "--config", "TOY", "--name", "split", "--stop-after", STAGES[0])
    assert first.exit_code == 0 and "continue with: itool run --resume" in first.output
    split = tmp_path / "runs" / "split"
    for done, stage in enumerate(STAGES[1:], start=2):
        resumed = itool("run", "--resume", str(split), "--stop-after", stage)
        assert resumed.exit_code == 0, resumed.output
        assert json.loads((split / "state.json").read_text())["completed"] == STAGES[:done]
    calls = (split / "calls.log").read_text().splitlines()
    assert len(calls) == len(set(calls))  # every stage ran exactly once
    assert _outputs(split) == _outputs(tmp_path / "runs" / "straight")  # and the results are identical
    attempts = {(m["stage"], m["attempt"]) for m in read_jsonl(split / "metrics.jsonl")}
    assert attempts == {(stage, n) for n, stage in enumerate(STAGES, start=1)}  # one process per stage


def test_a_crash_mid_stage_keeps_earlier_stages_and_resume_reruns_only_that_stage(itool, tmp_path):
    crashed = itool("run", "--config", "TOY", "--name", "crash", "--search-opt", "fail_once=true")
    assert crashed.exit_code == 1
    assert "stage round1.search failed: RuntimeError: simulated crash in the middle of a search" in crashed.output
    run = tmp_path / "runs" / "crash"
    assert json.loads((run / "state.json").read_text())["completed"] == STAGES[:4]
    assert not (run / "round1.search" / "trees.jsonl").exists()
    assert "Traceback" in (run / "round1.search" / "error.txt").read_text()
    assert itool("run", "--resume", str(run)).exit_code == 0
    calls = Counter((run / "calls.log").read_text().splitlines())
    assert calls["round1.search search"] == 2 and calls["round1.select select"] == 1
    # the crashed attempt's rows stay in metrics.jsonl, marked; the rerun's rows and earlier stages' are not
    rows = read_jsonl(run / "metrics.jsonl")
    marked = {(m["stage"], m["event"], m["attempt"]) for m in rows if m.get("abandoned")}
    assert marked == {("round1.search", "start", 1), ("round1.search", "error", 1)}
    search_rows = [(m["event"], m["attempt"]) for m in rows if m["stage"] == "round1.search" and not m.get("abandoned")]
    assert search_rows == [("start", 2), ("chunk", 2), ("end", 2)]  # its one chunk of samples done anew


def test_resume_uses_the_saved_config_only(itool, tmp_path):
    assert itool("run", "--config", "TOY", "--name", "r", "--stop-after", "warmup").exit_code == 0
    result = itool("run", "--resume", str(tmp_path / "runs" / "r"), "--loss", "dpo")
    assert result.exit_code == 2
    assert "--resume continues with the run's saved config; give no other settings" in result.output


def test_a_run_can_start_from_the_adapters_of_another_run(itool, tmp_path):
    assert itool("run", "--config", "TOY", "--name", "first", "--rounds", "1").exit_code == 0
    first = tmp_path / "runs" / "first"
    result = itool("run", "--config", "TOY", "--name", "second", "--warmup", "none", "--rounds", "0",
                   "--adapter", str(first / "warmup" / "adapter"), "--adapter", str(first / "round1.train" / "adapter"))
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "runs" / "second" / "state.json").read_text())
    assert state["completed"] == ["base.eval"]
    assert state["results"]["base.eval"]["summary"] == json.loads((first / "state.json").read_text())["results"]["round1.eval"]["summary"]


@pytest.mark.parametrize("args, message", [
    (["--search", "puctt"], "Error: unknown search 'puctt' (available: "),
    (["--rounds", "two"], "Error: Invalid value for '--rounds': 'two' is not a valid integer."),
    (["--config", "missing.yaml"], "Error: config file not found: missing.yaml"),
    (["--trainer-opt", "lr=fast"], "Error: trainer.options.lr: Input should be a valid number"),
    (["--trainer", "lora", "--trainer-opt", "micro_batch_tokens=0"],
     "Error: trainer.options.micro_batch_tokens: Input should be greater than or equal to 1"),
    (["--stop-after", "round9.train"], "Error: --stop-after 'round9.train' is not a stage of this run"),
    (["--adapter", "nowhere"], "Error: adapters: adapter folder not found: nowhere"),
    (["--search", "dfsdt", "--pairs", "step"], "Error: search 'dfsdt' makes 'agent-path' trees, which pair builder 'step' cannot read"),
])
def test_bad_settings_fail_in_one_line_with_exit_code_2_and_write_nothing(itool, tmp_path, args, message):
    result = itool("run", "--config", "TOY", "--name", "bad", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "bad").exists()


def test_plugins_follow_a_run_through_the_lifecycle_hooks_without_changing_it(itool, tmp_path, recorder):
    assert itool.watched("run", "--config", "TOY", "--name", "watched", "--rounds", "1").exit_code == 0
    events = recorder.events
    assert events[0] == ("run_started", "", 1) and events[-1] == ("run_finished", "", True)
    stages = [(hook, stage) for hook, stage, _ in events if hook.startswith("stage_")]
    assert stages == [(hook, stage) for stage in STAGES[:8] for hook in ("stage_started", "stage_finished")]
    finished = next(detail for hook, stage, detail in events if (hook, stage) == ("stage_finished", "round1.train"))
    assert finished == ["final_loss", "seconds", "used_reference"]
    # every ctx.log row reaches the plugin, the toy trainer's per-step rows included (it knows no plugin)
    logged = [(stage, *detail) for hook, stage, detail in events if hook == "log_event"]
    assert logged.count(("round1.train", "step", ["loss", "step"])) == loop_plugins.ToyTrainerOptions().steps
    assert ("round1.eval", "end", ["n", "seconds", "summary"]) in logged
    # the recorder draws random numbers in every hook, yet the run writes what an unwatched one does
    assert itool("run", "--config", "TOY", "--name", "plain", "--rounds", "1").exit_code == 0
    assert _outputs(tmp_path / "runs" / "watched") == _outputs(tmp_path / "runs" / "plain")


def test_hooks_see_a_failed_stage_a_stop_and_the_next_attempt(itool, tmp_path, recorder):
    crashed = itool.watched("run", "--config", "TOY", "--name", "crash", "--search-opt", "fail_once=true")
    assert crashed.exit_code == 1
    assert recorder.events[-1] == ("stage_failed", "round1.search", "simulated crash in the middle of a search")
    assert not any(hook == "run_finished" for hook, _, _ in recorder.events)
    recorder.events.clear()
    resumed = itool.watched("run", "--resume", str(tmp_path / "runs" / "crash"), "--stop-after", "round1.search")
    assert resumed.exit_code == 0
    hooks = [(hook, stage, detail) for hook, stage, detail in recorder.events if hook != "log_event"]
    assert hooks == [("run_started", "", 2), ("stage_started", "round1.search", None),
                     ("stage_finished", "round1.search", ["nodes", "seconds", "trees"]), ("run_finished", "", False)]
