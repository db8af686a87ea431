"""The report's stops-and-resumes table says, for each stopped attempt at a stage, how far it got, what
the next attempt kept and what it did again, from the rows the loop, the journal and the trainer log."""

from __future__ import annotations

from itool.plugins.experiments.stops import stops, stops_table


def row(minute: int, stage: str, event: str, abandoned: bool = False, **fields) -> dict:
    found = {**fields, "time": f"2026-12-01T04:{minute:02d}:00+00:00", "stage": stage, "event": event}
    return {**found, "abandoned": True} if abandoned else found


def test_a_stopped_evaluation_keeps_its_finished_chunks_and_redoes_only_the_one_in_progress():
    rows = [row(0, "base.eval", "start", True),
            row(5, "base.eval", "chunk", True, chunk=0, samples=48),
            row(9, "base.eval", "chunk", True, chunk=1, samples=48),
            row(30, "base.eval", "start"),
            row(30, "base.eval", "resume", chunks_kept=2, samples_kept=96, of=417),
            row(34, "base.eval", "chunk", chunk=2, samples=48)]
    [stop] = stops(rows)
    assert (stop.stage, stop.stopped) == ("base.eval", "2026-12-01 04:09")
    assert stop.reached == "2 chunks (96 samples)"
    assert stop.kept == "96 of 417 samples (2 chunks)"
    assert stop.redone == "the chunk in progress"


def test_a_stopped_training_resumes_from_its_checkpoint_and_redoes_the_steps_after_it():
    rows = [row(0, "warmup", "start", True)]
    rows += [row(step, "warmup", "train_step", True, step=step) for step in range(1, 8)]
    rows += [row(40, "warmup", "start"), row(41, "warmup", "resume", checkpoint="checkpoint-4"),
             row(42, "warmup", "train_step", step=5)]
    [stop] = stops(rows)
    assert (stop.reached, stop.kept) == ("step 7", "checkpoint-4")
    assert stop.redone == "3 steps (3.0 min) and the one in progress"


def test_a_training_stopped_before_its_first_checkpoint_starts_again_from_scratch():
    rows = [row(0, "warmup", "start", True), row(3, "warmup", "train_step", True, step=1),
            row(6, "warmup", "train_step", True, step=2), row(20, "warmup", "start")]
    [stop] = stops(rows)
    assert stop.kept == "nothing (no checkpoint yet)"
    assert stop.redone == "2 steps (6.0 min) and the one in progress"


def test_finished_stages_and_the_attempt_still_running_are_not_stops():
    rows = [row(0, "base.eval", "start"), row(5, "base.eval", "chunk", chunk=0, samples=48),
            row(6, "base.eval", "end"), row(6, "warmup", "start"), row(7, "warmup", "train_step", step=1)]
    assert stops(rows) == []
    assert stops_table({"run": rows}) == []


def test_the_table_names_the_run_of_every_stop():
    rows = [row(0, "warmup", "start", True), row(1, "warmup", "start")]
    table = stops_table({"sft-s0": rows})
    assert table[2] == "| sft-s0 | warmup | 2026-12-01 04:00 | no logged progress | nothing | the whole stage so far |"
