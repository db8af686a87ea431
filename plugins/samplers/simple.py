"""Samplers ``random`` (a seeded fraction) and ``all`` (no selection), the baselines of ``perplexity``."""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.schemas import Sample


# The default share of every fraction sampler. 0.3 (the official code's; the paper's 0.1 is in the paper
# preset): at the default run's 32 train samples, 0.1 keeps 4 samples whose searches all fail (no pair),
# 0.3 keeps 10 and yields pairs (docs/search.md, "Defaults: why 0.3").
DEFAULT_FRACTION = 0.3


def keep_count(total: int, fraction: float) -> int:
    """How many of ``total`` samples a ``fraction`` keeps: rounded up, at least one (none of none)."""
    return min(total, max(1, math.ceil(total * fraction))) if total else 0


class RandomOptions(BaseModel):
    fraction: float = Field(DEFAULT_FRACTION, gt=0, le=1, description="Share of the samples to keep (at least one).")
    seed: int | None = Field(None, description="Seed of the draw; default: the run's seed for this stage.")


def random_sampler(ctx, samples: list[Sample], opts: RandomOptions) -> list[Sample]:
    """A seeded random fraction of the samples (the baseline to perplexity selection)."""
    seed = opts.seed if opts.seed is not None else ctx.stage_seed(ctx.stage or "select")
    chosen = random.Random(seed).sample(range(len(samples)), keep_count(len(samples), opts.fraction))
    return [samples[i] for i in sorted(chosen)]


def all_sampler(ctx, samples: list[Sample], opts) -> list[Sample]:
    """Every sample (no selection)."""
    return list(samples)


@hookimpl
def register_samplers(register):
    register("random", random_sampler, options=RandomOptions)
    register("all", all_sampler)
