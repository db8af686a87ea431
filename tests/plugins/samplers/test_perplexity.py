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


def test_a_stopped_selection_resumes_with_only_the_chunks_it_had_not_scored(ctx_fp32, monkeypatch):
    """One sample per chunk here; the first attempt stops (as by Ctrl-C) while scoring its second chunk."""
    from itool.plugins.samplers import perplexity

    monkeypatch.setattr(perplexity, "SCORE_CHUNK", 1)
    natural, nonsense = natural_and_nonsense(ctx_fp32)
    samples = [natural, nonsense, next(s for s in ctx_fp32.samples("train") if s.category == "irrelevance")]
    backend, calls = ctx_fp32.backend, []
    score = backend.score

    def counted(prompts, answers):
        calls.append(len(prompts))
        if len(calls) == 2 and stop:
            raise KeyboardInterrupt
        return score(prompts, answers)

    monkeypatch.setattr(backend, "score", counted)
    stop = True
    with pytest.raises(KeyboardInterrupt):
        answer_perplexities(ctx_fp32, samples)
    stop, calls[:] = False, []
    resumed = answer_perplexities(ctx_fp32, samples)
    assert calls == [1, 1]  # the chunk it was scoring and the one after; not the first again
    assert [m for m in ctx_fp32.run.metrics() if m["event"] == "resume"][-1]["samples_kept"] == 1
    assert resumed == pytest.approx(answer_perplexities(ctx_fp32, samples))  # an unbroken selection's
