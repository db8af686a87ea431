"""Warm-ups: curriculum (easy → medium → hard) and plain SFT, LoRA on the answer tokens of real BFCL data."""

from __future__ import annotations

import time

import pytest
import torch

from itool.plugins.datasets.buckets import BUCKETS
from itool.plugins.training import mean_completion_loss
from itool.plugins.warmups.curriculum import Example, examples_of, training_order


def stage_index(example: Example) -> int:
    return BUCKETS.index(example.stage)


def test_curriculum_goes_easy_to_hard_and_sft_shuffles_the_same_budget():
    examples = [Example(f"p{i}", f"t{i}", BUCKETS[i % 3]) for i in range(9)]
    curriculum = training_order(examples, epochs=2, seed=0, curriculum=True)
    sft = training_order(examples, epochs=2, seed=0, curriculum=False)
    assert [stage_index(e) for e in curriculum] == sorted(stage_index(e) for e in curriculum)
    assert sorted(id(e) for e in curriculum) == sorted(id(e) for e in sft) == sorted(id(e) for e in examples * 2)
    assert [stage_index(e) for e in sft] != sorted(stage_index(e) for e in sft)


def shortest(ctx, split: str, n: int):
    """The ``n`` samples with the shortest prompts: a real but quick training set."""
    return sorted(ctx.samples(split), key=lambda s: len(ctx.format.render_prompt(s, ctx.policy.tokenizer)))[:n]


def train_loss(ctx, samples) -> float:
    examples = examples_of(ctx, samples)
    return mean_completion_loss(ctx.policy.model, ctx.policy.tokenizer, [e.prompt for e in examples],
                                [e.target for e in examples])


def test_a_few_steps_lower_the_training_loss_and_save_a_loadable_peft_adapter(make_ctx, fresh_policy, registry):
    from peft import PeftModel

    ctx = make_ctx(train_limit=None, eval_limit=None)
    ctx.policy, ctx.stage = fresh_policy, "warmup"
    samples = shortest(ctx, "train", 4)
    before = train_loss(ctx, samples)
    warmup = registry.get("warmup", "curriculum")
    opts = warmup.parse_options({"lr": 1e-3, "epochs": 2, "batch_size": 2, "eval_samples": 2, "max_length": 512})
    result = warmup.obj(ctx, samples, opts)

    assert train_loss(ctx, samples) < before * 0.8
    assert result["steps"] == 4 and {"heldout_loss_before", "heldout_loss_after"} <= result.keys()
    assert [m["event"] for m in ctx.run.metrics()].count("train_step") == 4
    # The adapter on disk, merged into an untrained copy, reproduces the trained policy.
    loader = registry.get("model", "transformers")
    copy = loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="auto")
    reloaded = PeftModel.from_pretrained(copy.model, ctx.stage_dir / "adapter").merge_and_unload()
    ids = torch.tensor([ctx.policy.tokenizer(examples_of(ctx, samples[:1])[0].prompt)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, ctx.policy.model(ids).logits, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["curriculum", "sft"])
def test_warmup_on_64_bfcl_half_samples_lowers_the_heldout_answer_loss(make_ctx, fresh_policy, registry, name):
    ctx = make_ctx(train_limit=64)
    ctx.policy, ctx.stage = fresh_policy, "warmup"
    warmup = registry.get("warmup", name)
    started = time.perf_counter()
    result = warmup.obj(ctx, ctx.samples("train"), warmup.parse_options({}))
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{name}: held-out loss {result['heldout_loss_before']:.3f} -> {result['heldout_loss_after']:.3f}, "
          f"{result['steps']} steps, {minutes:.1f} min, buckets {result['stage_sizes']}")
    assert result["samples"] == 64
    assert result["heldout_loss_after"] < result["heldout_loss_before"]
