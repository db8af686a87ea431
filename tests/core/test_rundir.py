"""The run directory writes atomically and records completed stages only after their outputs."""

from __future__ import annotations

import pytest

from itool.errors import ItoolError
from itool.rundir import RunDir, atomic_path, read_jsonl, write_jsonl
from itool.schemas import PreferencePair


def test_atomic_write_leaves_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "pairs.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2}\n{"half-writ')
            raise RuntimeError("killed")
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]  # no temporary left behind


def test_atomic_path_replaces_whole_folders(tmp_path):
    target = tmp_path / "adapter"
    for version in ("1", "2"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(version)
    assert (target / "weights").read_text() == "2"


def test_models_round_trip_through_jsonl(tmp_path):
    pairs = [PreferencePair(prompt="p", chosen="c", rejected="r", chosen_value=1.0)]
    write_jsonl(tmp_path / "p.jsonl", pairs)
    assert read_jsonl(tmp_path / "p.jsonl", PreferencePair) == pairs


def test_stages_adapters_and_metrics_are_recorded(tmp_path):
    run = RunDir.create(tmp_path, "r")
    (run.stage_dir("warmup") / "adapter").mkdir()
    run.log("warmup", "end", loss=0.5)
    run.complete("warmup", {"loss": 0.5}, adapter=run.path / "warmup" / "adapter")
    (run.path / "config.yaml").write_text("{}")
    reopened = RunDir.open(run.path)
    assert reopened.is_done("warmup") and not reopened.is_done("round1.select")
    assert reopened.adapters == [run.path / "warmup" / "adapter"]
    assert reopened.result("warmup") == {"loss": 0.5}
    assert reopened.metrics()[0]["loss"] == 0.5 and reopened.metrics()[0]["stage"] == "warmup"


def test_an_existing_run_is_never_overwritten(tmp_path):
    RunDir.create(tmp_path, "r")
    with pytest.raises(ItoolError, match="already exists; resume it with --resume"):
        RunDir.create(tmp_path, "r")


def test_opening_something_that_is_not_a_run(tmp_path):
    with pytest.raises(ItoolError, match="not a run directory"):
        RunDir.open(tmp_path)
