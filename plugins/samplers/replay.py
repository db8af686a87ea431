"""Sampler ``replay``: the samples another run's selection stage chose.

An ablation that changes one later stage (the search, the pair builder, the loss) then keeps the
selection exactly, and does not pay for it again: perplexity selection scores every train sample
(21-32 min for 600 on 2 cores, measured)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from itool import hookimpl
from itool.errors import ItoolError
from itool.loop import SELECTED_FILE
from itool.rundir import RunDir
from itool.schemas import Sample


class ReplayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="The run whose selection is replayed: its directory, or its name under this run's runs_dir.")
    stage: str | None = Field(None, description="Its selection stage; default: the stage running now (round r replays round r).")


def replay_sampler(ctx, samples: list[Sample], opts: ReplayOptions) -> list[Sample]:
    """The samples another run selected in the same (or a given) stage, in its order.

    An error when that stage is not complete there, or chose a sample this run does not have (another
    dataset or train split)."""
    path = Path(opts.run)
    if not path.is_dir():
        path = ctx.config.runs_dir / opts.run
    stage = opts.stage or ctx.stage
    if not RunDir.open(path).is_done(stage):
        raise ItoolError(f"sampler replay: {path} has not completed {stage}, so there is no selection to replay")
    ids = json.loads((path / stage / SELECTED_FILE).read_text())
    by_id = {sample.id: sample for sample in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ItoolError(f"sampler replay: {len(missing)} of the {len(ids)} samples {path.name} selected in {stage} "
                         f"are not among this run's train samples (first: {missing[0]}); both runs need the same "
                         f"dataset and train split")
    return [by_id[i] for i in ids]


@hookimpl
def register_samplers(register):
    register("replay", replay_sampler, options=ReplayOptions)
