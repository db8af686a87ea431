"""A stage's journal keeps its finished pieces across a kill: a journal opened again for the same plan
holds them, a line cut short by the kill is dropped (and that piece is done again), and a journal of
another plan is started afresh rather than mixed in."""

from __future__ import annotations

import json

from itool.journal import Journal
from itool.schemas import Verdict

PLAN = [["a", "b"], ["c", "d"]]


def verdict(sample_id: str, valid: bool) -> Verdict:
    return Verdict(sample_id=sample_id, category="simple_python", valid=valid, output=f"[f(x={sample_id!r})]")


def test_finished_pieces_are_read_back_by_the_next_attempt_with_the_same_plan(tmp_path):
    path = tmp_path / "verdicts.journal.jsonl"
    first = Journal(path, PLAN)
    assert first.pieces == {}
    rows = first.record("0", [verdict("a", True), verdict("b", False)])
    assert rows == [json.loads(verdict("a", True).model_dump_json()), json.loads(verdict("b", False).model_dump_json())]

    again = Journal(path, PLAN)
    assert "0" in again and "1" not in again
    assert again.pieces == {"0": rows}
    assert [Verdict.model_validate(r) for r in again.pieces["0"]] == [verdict("a", True), verdict("b", False)]


def test_a_last_line_cut_short_by_a_kill_is_dropped_and_its_piece_done_again(tmp_path):
    path = tmp_path / "trees.journal.jsonl"
    journal = Journal(path, PLAN)
    journal.record("0", [{"id": "a"}, {"id": "b"}])
    whole = path.read_bytes()
    journal.record("1", [{"id": "c"}, {"id": "d"}])
    path.write_bytes(path.read_bytes()[:-7])  # killed in the middle of writing piece 1

    resumed = Journal(path, PLAN)
    assert resumed.pieces == {"0": [{"id": "a"}, {"id": "b"}]}
    assert path.read_bytes() == whole  # the torn line is cut off, so the next piece starts a line of its own
    resumed.record("1", [{"id": "c"}, {"id": "d"}])
    assert Journal(path, PLAN).pieces == {"0": [{"id": "a"}, {"id": "b"}], "1": [{"id": "c"}, {"id": "d"}]}


def test_a_journal_of_another_plan_or_a_damaged_one_is_started_afresh(tmp_path):
    path = tmp_path / "verdicts.journal.jsonl"
    Journal(path, PLAN).record("0", [{"id": "a"}])
    other = Journal(path, [["a", "x"], ["c", "d"]])  # other samples in the first chunk
    assert other.pieces == {}
    assert len(path.read_text().splitlines()) == 1  # the header of the new plan only
    assert Journal(path, PLAN).pieces == {}  # and the old plan's piece is gone for good

    path.write_text("not a journal\n")
    assert Journal(path, PLAN).pieces == {}


def test_remove_deletes_the_journal_once_the_stage_is_written(tmp_path):
    journal = Journal(tmp_path / "trees.journal.jsonl", PLAN)
    journal.record("0", [])
    journal.remove()
    assert not (tmp_path / "trees.journal.jsonl").exists()
