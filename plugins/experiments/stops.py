"""Stops and resumes, read back from a run's metrics: for every attempt at a stage that did not finish
(a session ended, a kill, an error), how far it got, what the next attempt kept and what it redid.

The loop marks a stopped attempt's rows ``"abandoned"`` when the stage starts again; a resumed stage logs
one ``resume`` row (the journal's finished chunks, or the Trainer checkpoint it continues from). Work
after the kept point is done again; the step or chunk in progress at the stop leaves no row, so the time
lost is the redone rows' span plus that one unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Stop:
    stage: str
    stopped: str   # when the stopped attempt wrote its last row (UTC)
    reached: str   # how far it got
    kept: str      # what the next attempt continued from
    redone: str    # the logged work done again


def attempts(rows: list[dict[str, Any]], stage: str) -> list[list[dict[str, Any]]]:
    """The rows of ``stage``, one list per attempt (each begins with its ``start`` row)."""
    found: list[list[dict[str, Any]]] = []
    for row in rows:
        if row.get("stage") != stage:
            continue
        if row.get("event") == "start" or not found:
            found.append([])
        found[-1].append(row)
    return found


def _clock(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["time"])


def _minutes(first: dict[str, Any], last: dict[str, Any]) -> str:
    return f"{(_clock(last) - _clock(first)).total_seconds() / 60:.1f} min"


def _steps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training-step rows (warm-up and preference trainers log the optimiser step as ``step``)."""
    return [row for row in rows if row.get("event") != "resume" and isinstance(row.get("step"), int)]


def describe(stopped: list[dict[str, Any]], following: list[dict[str, Any]]) -> Stop:
    """One stopped attempt and the attempt after it."""
    resume = next((row for row in following if row.get("event") == "resume"), {})
    chunks = [row for row in stopped if row.get("event") == "chunk"]
    steps = _steps(stopped)
    if chunks or "samples_kept" in resume:
        # Finished chunks are journaled whole: the next attempt keeps every one of them.
        reached = f"{len(chunks)} chunks ({sum(row['samples'] for row in chunks)} samples)"
        kept = (f"{resume['samples_kept']} of {resume['of']} samples ({resume['chunks_kept']} chunks)"
                if resume else "nothing")
        redone = "the chunk in progress" if resume else f"{len(chunks)} chunks and the one in progress"
    elif steps or "checkpoint" in resume:
        kept_step = int(resume["checkpoint"].rsplit("-", 1)[1]) if resume else 0
        later = [row for row in steps if row["step"] > kept_step]
        since = next((row for row in steps if row["step"] == kept_step), stopped[0])
        reached = f"step {steps[-1]['step']}" if steps else "no finished step"
        kept = resume.get("checkpoint", "nothing (no checkpoint yet)")
        redone = (f"{len(later)} steps ({_minutes(since, later[-1])}) and the one in progress" if later
                  else "the step in progress")
    else:
        reached, kept, redone = "no logged progress", "nothing", "the whole stage so far"
    return Stop(stage=stopped[0]["stage"], stopped=_clock(stopped[-1]).strftime("%Y-%m-%d %H:%M"),
                reached=reached, kept=kept, redone=redone)


def stops(rows: list[dict[str, Any]]) -> list[Stop]:
    """Every stopped attempt of a run's stages that a later attempt followed, in the order they ran."""
    found = []
    for stage in dict.fromkeys(row["stage"] for row in rows if row.get("stage")):
        tried = attempts(rows, stage)
        found += [describe(tried[i], tried[i + 1]) for i in range(len(tried) - 1)
                  if tried[i][0].get("abandoned")]
    return sorted(found, key=lambda stop: stop.stopped)


def stops_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A markdown table of the stops of several runs (name → metrics rows); empty when none stopped."""
    lines = [f"| {name} | {stop.stage} | {stop.stopped} | {stop.reached} | {stop.kept} | {stop.redone} |"
             for name, rows in runs.items() for stop in stops(rows)]
    if not lines:
        return []
    return ["| run | stage | stopped (UTC) | the stopped attempt reached | the next attempt kept | redone |",
            "|---|---|---|---|---|---|", *lines]
