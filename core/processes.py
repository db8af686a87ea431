"""One run in several processes (``accelerate launch -m itool run …``, or ``itool run --processes N``).

Training stages (warm-up, preference training) run on every process, data-parallel: each process
trains on its share of every micro-batch and the gradients are averaged, so N processes compute what
one does with the same config. Every other stage (evaluation, selection, search, pairs) runs on the
main process alone while the others wait for its outcome. That is the simplest design that is right
for any plugin: those stages are components of any shape (a search keeps trees, an evaluator calls
tools, a third-party one may hold state), and splitting them would ask each to shard its input and
merge its output; run whole on one process they stay exactly what they are in a one-process run.

Only the main process writes the run directory (``state.json``, ``metrics.jsonl``, stage outputs,
adapters, checkpoints' markers); the others read what it wrote, so the run directory must be on a
filesystem every process sees. Every process takes the same view of which stages are done (the main
process's, shared at the start), so a resumed run continues at the same stage everywhere.

The launcher (``accelerate launch``, ``torchrun``) states the layout in ``WORLD_SIZE`` and ``RANK``.
Without it a run is one process: nothing here joins a process group or imports accelerate.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, TypeVar

from itool.errors import ItoolError

T = TypeVar("T")
# The others wait inside a collective for as long as a main-only stage takes (a search: hours); the
# default limit (30 minutes) would end the run in the middle of one.
WAIT_LIMIT = timedelta(days=7)


def count() -> int:
    """How many processes this run has."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def several() -> bool:
    return count() > 1


def is_main() -> bool:
    """Whether this is the process that writes the run directory (global rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def join(cpu: bool | None = None) -> None:
    """Join the process group (once per process: later calls change nothing), with a wait limit long
    enough for any stage. ``cpu``: the processes train on the CPU (gloo) even where CUDA is available;
    by default, where it is not."""
    if several():
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available() if cpu is None else cpu, timeout=WAIT_LIMIT)


def on_main(work: Callable[[], T]) -> T:
    """``work()`` on the main process; every process returns its result (or raises its error).

    All processes must call this at the same point. The others first wait for each other (so nothing
    the main process does can overtake a process that has not arrived yet), then for the outcome."""
    if not several():
        return work()
    import torch.distributed as dist

    join()
    dist.barrier()
    outcome: list[Any] = [None]
    if is_main():
        try:
            outcome[0] = ("ok", work())
        except BaseException as exc:
            shared = exc if isinstance(exc, ItoolError) else ItoolError(
                f"the main process failed: {type(exc).__name__}: {exc}")
            dist.broadcast_object_list([("error", shared)], src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def gathered(value: T) -> list[T]:
    """``value`` from every process, in rank order (``[value]`` in a one-process run)."""
    if not several():
        return [value]
    import torch.distributed as dist

    join()
    values: list[Any] = [None] * count()
    dist.all_gather_object(values, value)
    return values


def summed(totals: dict[str, float]) -> dict[str, float]:
    """Running sums (``{name: sum}``) added up over every process."""
    out: dict[str, float] = {}
    for part in gathered(dict(totals)):
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def wait_for_everyone() -> None:
    if several():
        import torch.distributed as dist

        join()
        dist.barrier()
