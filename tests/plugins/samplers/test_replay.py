"""Sampler ``replay``: another run's selection, exactly, or a one-line error."""

from __future__ import annotations

import json

import pytest

from itool.errors import ItoolError
from itool.plugins.samplers.replay import ReplayOptions, replay_sampler
from itool.rundir import RunDir
from itool.schemas import Sample

SAMPLES = [Sample(id=f"s{i}", messages=[]) for i in range(10)]


def selected_run(runs_dir, name: str, ids: list[str], complete: bool = True) -> RunDir:
    """A run whose round-1 selection chose ``ids``, as the loop writes it."""
    run = RunDir.create(runs_dir, name, config={"name": name})
    (run.path / "round1.select").mkdir()
    (run.path / "round1.select" / "selected.json").write_text(json.dumps(ids))
    if complete:
        run.complete("round1.select", {"selected": len(ids)})
    return run


def test_replays_the_other_runs_selection_in_its_order_by_name_or_by_folder(make_ctx):
    ctx = make_ctx(sampler={"name": "replay", "options": {"run": "source"}})
    ctx.stage = "round1.select"
    source = selected_run(ctx.config.runs_dir, "source", ["s7", "s2", "s5"])

    by_name = replay_sampler(ctx, SAMPLES, ReplayOptions(run="source"))
    by_folder = replay_sampler(ctx, SAMPLES, ReplayOptions(run=str(source.path), stage="round1.select"))

    assert [s.id for s in by_name] == [s.id for s in by_folder] == ["s7", "s2", "s5"]


def test_a_selection_that_is_missing_or_unfinished_or_of_other_samples_is_a_one_line_error(make_ctx):
    ctx = make_ctx()
    ctx.stage = "round1.select"
    selected_run(ctx.config.runs_dir, "unfinished", ["s1"], complete=False)
    selected_run(ctx.config.runs_dir, "other-data", ["s1", "x9"])

    with pytest.raises(ItoolError, match="has not completed round1.select"):
        replay_sampler(ctx, SAMPLES, ReplayOptions(run="unfinished"))
    with pytest.raises(ItoolError, match="has not completed round2.select"):
        replay_sampler(ctx, SAMPLES, ReplayOptions(run="other-data", stage="round2.select"))
    with pytest.raises(ItoolError, match=r"1 of the 2 samples other-data selected .* \(first: x9\)"):
        replay_sampler(ctx, SAMPLES, ReplayOptions(run="other-data"))
    with pytest.raises(ItoolError, match="not a run directory"):
        replay_sampler(ctx, SAMPLES, ReplayOptions(run="nowhere"))
