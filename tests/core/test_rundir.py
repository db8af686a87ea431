"""The run directory writes atomically and records completed stages only after their outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from itool.errors import ItoolError
from itool.rundir import RunDir, atomic_path, check_output_file, made_by_itool, read_jsonl, write_jsonl
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


def test_atomic_path_replaces_whole_folders_it_made(tmp_path):
    target = tmp_path / "adapter"
    for version in ("1", "2"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(version)
    assert (target / "weights").read_text() == "2"
    assert made_by_itool(target)


@pytest.mark.parametrize("make_output", [lambda tmp: tmp.write_text("a file"), lambda tmp: tmp.mkdir()])
def test_a_folder_itool_did_not_make_is_never_replaced(tmp_path, make_output):
    users = tmp_path / "thesis"
    users.mkdir()
    (users / "chapter1.tex").write_text("years of work")
    with pytest.raises(ItoolError, match="is a folder that itool did not make"):
        with atomic_path(users) as tmp:
            make_output(tmp)
    assert (users / "chapter1.tex").read_text() == "years of work"
    with pytest.raises(ItoolError, match="give a file or folder name"):
        with atomic_path(Path(".")):
            pass


def test_an_output_file_cannot_be_a_folder_or_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    check_output_file(tmp_path / "new.html")
    check_output_file(tmp_path / "new" / "deeper.html")
    with pytest.raises(ItoolError, match="is a folder; give a file name"):
        check_output_file(tmp_path)
    with pytest.raises(ItoolError, match="afile is a file, not a folder"):
        check_output_file(tmp_path / "afile" / "t.html")


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


def test_redo_moves_a_stage_and_every_later_one_aside_and_keeps_the_earlier_ones(tmp_path):
    run = RunDir.create(tmp_path, "r")
    for stage in ("warmup", "round1.search", "round1.train"):
        (run.stage_dir(stage) / "adapter").mkdir()
        run.log(stage, "end")
        run.complete(stage, {"stage": stage}, adapter=run.path / stage / "adapter")
    run.log("round1.eval", "start")
    (run.stage_dir("round1.eval") / "verdicts.journal.jsonl").write_text("{}\n")  # a stage in progress
    (run.path / "config.yaml").write_text("{}")
    before = run.state

    out = RunDir.open(run.path).discard_from("round1.search")

    assert run.state["completed"] == ["warmup"] and run.adapters == [run.path / "warmup" / "adapter"]
    assert list(run.state["results"]) == ["warmup"]
    assert {row["stage"] for row in run.metrics()} == {"warmup"}
    assert sorted(p.name for p in run.path.iterdir() if p.is_dir()) == ["discarded", "warmup"]
    # nothing is lost: the stages, their rows and the state as it was are in the discard folder
    assert out.parent == run.path / "discarded"
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"round1.search", "round1.train", "round1.eval"}
    assert (out / "round1.eval" / "verdicts.journal.jsonl").is_file()
    assert [row["stage"] for row in read_jsonl(out / "metrics.jsonl")] == ["round1.search", "round1.train",
                                                                            "round1.eval"]
    assert json.loads((out / "state.json").read_text()) == before


def test_redo_of_a_stage_in_progress_keeps_every_finished_one(tmp_path):
    run = RunDir.create(tmp_path, "r")
    run.stage_dir("warmup")
    run.complete("warmup", {})
    (run.stage_dir("round1.select") / "perplexity.journal.jsonl").write_text("{}\n")
    out = run.discard_from("round1.select")
    assert run.state["completed"] == ["warmup"] and (out / "round1.select").is_dir()
    with pytest.raises(ItoolError, match=r"neither a finished stage nor one in progress .* \(finished: warmup\)"):
        run.discard_from("round1.select")


def test_an_existing_run_is_never_overwritten(tmp_path):
    RunDir.create(tmp_path, "r")
    with pytest.raises(ItoolError, match="already exists; resume it with --resume"):
        RunDir.create(tmp_path, "r")


def test_a_run_starts_only_in_an_empty_or_new_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    assert RunDir.create(tmp_path, "empty").path == tmp_path / "empty"
    with pytest.raises(ItoolError, match="exists and is not an itool run"):
        RunDir.create(tmp_path, "full")
    with pytest.raises(ItoolError, match="is a file"):
        RunDir.create(tmp_path, "afile")
    with pytest.raises(ItoolError, match="afile is a file"):
        RunDir.create(tmp_path / "afile", "r")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_the_config_is_written_first_and_recorded_in_the_state(tmp_path):
    run = RunDir.create(tmp_path, "r", {"name": "r", "rounds": 2})
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"name": "r", "rounds": 2}
    assert RunDir.open(run.path).started_with == {"name": "r", "rounds": 2}
    assert RunDir.create(tmp_path, "older").started_with is None  # runs made before the record: no check


@pytest.mark.parametrize("state,message", [
    ('{"completed": ["warm', "state.json is damaged (Unterminated string"),
    ("\udcff", "state.json is damaged"),
    ('["warmup"]', "state: Input should be a valid dictionary"),
    ('{"completed": "warmup", "adapters": [], "results": {}}', "state.completed: Input should be a valid list"),
    ('{"completed": [], "adapters": ["/etc"], "results": {}}', "points outside the run directory"),
    ('{"completed": [], "adapters": ["warmup/../../x"], "results": {}}', "points outside the run directory"),
])
def test_a_damaged_state_file_is_one_line_when_the_run_is_opened(tmp_path, state, message):
    (tmp_path / "config.yaml").write_text("{}")
    (tmp_path / "state.json").write_text(state, errors="surrogateescape")
    with pytest.raises(ItoolError, match=re.escape(message)):
        RunDir.open(tmp_path)


def test_opening_something_that_is_not_a_run(tmp_path):
    with pytest.raises(ItoolError, match="not a run directory"):
        RunDir.open(tmp_path)
