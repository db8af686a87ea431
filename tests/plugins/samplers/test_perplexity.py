"""Perplexity selection on the real model."""

from __future__ import annotations

import json

import pytest

from itool.schemas import ToolCall
from itool.plugins.samplers.perplexity import PerplexityOptions, answer_perplexities, perplexity_sampler


def selection_context(make):
    ctx = make(dataset={"name": "bfcl", "options": {"categories": ["simple_python", "irrelevance"],
                                                     "split_mode": "all"}})
    ctx.stage = "round1.select"
    return ctx


@pytest.fixture
def ctx(model_ctx):
    """On the model in the dtype ``auto`` picks (bfloat16 too, with ITOOL_AUTO_DTYPE=bfloat16)."""
    return selection_context(model_ctx)


@pytest.fixture
def ctx_fp32(model_ctx_fp32):
    """On the float32 model: where the test's subject is not the dtype (emulated bfloat16 scores ~7x slower)."""
    return selection_context(model_ctx_fp32)


def natural_and_nonsense(ctx):
    natural = next(s for s in ctx.samples("train") if s.category == "simple_python")
    nonsense = natural.model_copy(update={
        "id": natural.id + "-nonsense",
        "answer": [ToolCall(name="qzx_vbnm_kkw", arguments={"wq": "zzkq xjv plmt", "jj": -917.33})],
    })
    return natural, nonsense


def test_a_nonsense_answer_has_higher_perplexity_and_is_selected(ctx):
    natural, nonsense = natural_and_nonsense(ctx)
    ppl_natural, ppl_nonsense = answer_perplexities(ctx, [natural, nonsense])
    assert 1.0 < ppl_natural < ppl_nonsense
    assert perplexity_sampler(ctx, [natural, nonsense], PerplexityOptions(fraction=0.5)) == [nonsense]
    rows = [json.loads(line) for line in (ctx.stage_dir / "perplexity.jsonl").read_text().splitlines()]
    assert [(r["id"], r["selected"]) for r in rows] == [(natural.id, False), (nonsense.id, True)]
    assert rows[1]["perplexity"] == pytest.approx(ppl_nonsense)
    logged = [m for m in ctx.run.metrics() if m["event"] == "perplexity"]
    assert logged and logged[0]["max"] == pytest.approx(ppl_nonsense)


def test_stratify_selects_call_and_no_call_answers_separately(ctx_fp32):
    natural, nonsense = natural_and_nonsense(ctx_fp32)
    no_call = next(s for s in ctx_fp32.samples("train") if s.category == "irrelevance")
    samples = [natural, nonsense, no_call]
    assert perplexity_sampler(ctx_fp32, samples, PerplexityOptions(fraction=0.1)) == [nonsense, no_call]
    pooled = perplexity_sampler(ctx_fp32, samples, PerplexityOptions(fraction=0.1, stratify=False))
    assert len(pooled) == 1
