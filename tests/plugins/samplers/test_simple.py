"""Samplers ``random`` and ``all``."""

from __future__ import annotations

from itool.schemas import Sample
from itool.plugins.samplers.simple import RandomOptions, all_sampler, keep_count, random_sampler

SAMPLES = [Sample(id=f"s{i}", messages=[]) for i in range(50)]


def test_keep_count_rounds_up_and_keeps_at_least_one():
    assert [keep_count(n, 0.1) for n in (0, 1, 9, 10, 11, 50)] == [0, 1, 1, 1, 2, 5]
    assert keep_count(7, 1.0) == 7


def test_random_is_a_seeded_fraction_in_dataset_order(make_ctx):
    ctx = make_ctx(sampler="random")
    picked = random_sampler(ctx, SAMPLES, RandomOptions(fraction=0.2, seed=3))
    assert len(picked) == 10 and picked == random_sampler(ctx, SAMPLES, RandomOptions(fraction=0.2, seed=3))
    assert picked != random_sampler(ctx, SAMPLES, RandomOptions(fraction=0.2, seed=4))
    assert [SAMPLES.index(s) for s in picked] == sorted(SAMPLES.index(s) for s in picked)
    # without a seed option the run's seed decides: the same run draws the same samples
    assert random_sampler(ctx, SAMPLES, RandomOptions(fraction=0.2)) == random_sampler(ctx, SAMPLES, RandomOptions(fraction=0.2))


def test_all_keeps_everything(make_ctx):
    assert all_sampler(make_ctx(), SAMPLES, None) == SAMPLES
