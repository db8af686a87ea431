"""Warm-ups ``curriculum`` (iTool: LoRA SFT easy → medium → hard) and ``sft`` (the same data shuffled).

Both train the answer tokens only (prompt from ``ctx.format.render_prompt``, target
``ctx.format.render_answer(sample.answer)`` + EOS) with the same optimiser budget: the same examples,
epochs, micro-batches and optimiser steps, under one AdamW schedule (``transformers.Trainer``, see
``itool.plugins.trainers.engine``). The only difference is the order, laid out before training and read
as it is, so comparing them measures the curriculum and nothing else. Before and after training both
measure the held-out answer-token loss on (at most ``eval_samples`` of) ``ctx.samples("test")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from itool import hookimpl, processes
from itool.context import stable_subset
from itool.plugins.datasets.buckets import BUCKETS, bucket
from itool.plugins.trainers.engine_options import EngineOptions
from itool.plugins.training import add_lora, autocast, encode_pair, mean_completion_loss, shuffled_epochs
from itool.schemas import Sample


class WarmupOptions(EngineOptions):
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (linear warm-up, then linear decay).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of optimiser steps spent warming up the lr.")
    epochs: int = Field(1, ge=1, description="Passes over the data (the curriculum repeats each stage this often).")
    batch_size: int = Field(2, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    micro_batch_tokens: int = Field(
        4096, ge=1, description="Cap on padded tokens per forward pass (examples × longest); a micro-batch beyond "
                                "it runs in parts with the same gradient.")
    max_length: int = Field(1024, ge=16, description="Longest prompt+answer in tokens (prompt trimmed first).")
    eval_samples: int = Field(16, ge=1, description="Held-out test samples for the before/after answer-token loss.")
    seed: int | None = Field(None, description="Seed of the LoRA initialisation and the shuffling; default: the run's seed for this stage.")


@dataclass
class Example:
    prompt: str
    target: str
    stage: str


def examples_of(ctx: Any, samples: list[Sample]) -> list[Example]:
    tokenizer = ctx.policy.tokenizer
    return [Example(ctx.format.render_prompt(s, tokenizer), ctx.format.render_answer(s.answer) + tokenizer.eos_token,
                    bucket(s)) for s in samples]


def training_order(examples: list[Example], epochs: int, seed: int, *, curriculum: bool) -> list[Example]:
    """Every example ``epochs`` times: stage by stage (each stage's epochs shuffled) or all shuffled.
    The trainer reads this order as it is (a sequential sampler)."""
    if not curriculum:
        return shuffled_epochs(examples, epochs, seed)
    return [e for i, stage in enumerate(BUCKETS)
            for e in shuffled_epochs([e for e in examples if e.stage == stage], epochs, seed + i)]


def heldout_loss(ctx: Any, opts: WarmupOptions) -> float:
    """Answer-token loss of the current policy on the first ``eval_samples`` test samples."""
    policy = ctx.policy
    held_out = examples_of(ctx, stable_subset(ctx.samples("test"), opts.eval_samples))
    with autocast(policy.dtype, policy.device):
        return mean_completion_loss(policy.model, policy.tokenizer, [e.prompt for e in held_out],
                                    [e.target for e in held_out], batch_size=opts.batch_size, max_length=opts.max_length)


def train_sft(ctx: Any, samples: list[Sample], opts: WarmupOptions, *, curriculum: bool) -> dict[str, Any]:
    """LoRA SFT of ``ctx.policy`` on ``samples`` (``transformers.Trainer``); saves the adapter and merges it.
    Returns the metrics."""
    import math

    from itool.plugins.trainers.engine import CompletionTrainer, finish, fit, plan_key, training_arguments

    if not samples:
        return {"samples": 0, "skipped": True}
    policy = ctx.policy
    examples = examples_of(ctx, samples)
    seed = opts.seed if opts.seed is not None else ctx.stage_seed(ctx.stage or "warmup")
    order = training_order(examples, opts.epochs, seed, curriculum=curriculum)
    encoded = [(*encode_pair(policy.tokenizer, e.prompt, e.target, opts.max_length), e.stage) for e in order]

    before = processes.on_main(lambda: heldout_loss(ctx, opts))
    ctx.log("heldout", loss=before, when="before")
    peft_model = add_lora(policy.model, seed=seed, r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout)
    total_steps = math.ceil(math.ceil(len(order) / opts.batch_size) / opts.grad_accum)
    args = training_arguments(ctx, opts, lr=opts.lr, batch_size=opts.batch_size, grad_accum=opts.grad_accum,
                              warmup_ratio=opts.warmup_ratio, total_steps=total_steps, seed=seed)
    trainer = CompletionTrainer(model=peft_model, args=args, batch_size=opts.batch_size,
                                max_tokens=opts.micro_batch_tokens, encoded=encoded, pad_id=policy.tokenizer.pad_token_id)
    history = fit(ctx, trainer, opts, plan_key(opts, curriculum, encoded), event="train_step")
    totals = trainer.totals
    stage_losses = {f"train_loss_{s}": totals[f"{s}.nll"] / totals[f"{s}.tokens"] for s in BUCKETS
                    if totals.get(f"{s}.tokens")}
    for stage in BUCKETS:
        if totals.get(f"{stage}.tokens"):
            ctx.log("train_bucket", bucket=stage, loss=stage_losses[f"train_loss_{stage}"],
                    tokens=int(totals[f"{stage}.tokens"]))
    finish(ctx, policy, peft_model)
    after = processes.on_main(lambda: heldout_loss(ctx, opts))
    ctx.log("heldout", loss=after, when="after")
    return {
        "heldout_loss_before": before,
        "heldout_loss_after": after,
        "train_loss_first": history[0]["loss"],
        "train_loss_last": history[-1]["loss"],
        "curriculum_loss": sum(stage_losses.values()),
        **stage_losses,
        "steps": len(history),
        "samples": len(samples),
        "stage_sizes": {s: sum(e.stage == s for e in examples) for s in BUCKETS},
    }


def curriculum(ctx: Any, samples: list[Sample], opts: WarmupOptions) -> dict[str, Any]:
    """iTool warm-up: LoRA SFT on easy, then medium, then hard samples (answer tokens only)."""
    return train_sft(ctx, samples, opts, curriculum=True)


def sft(ctx: Any, samples: list[Sample], opts: WarmupOptions) -> dict[str, Any]:
    """Plain LoRA SFT on the shuffled samples, with the curriculum's optimiser budget (a baseline)."""
    return train_sft(ctx, samples, opts, curriculum=False)


@hookimpl
def register_warmups(register):
    register("curriculum", curriculum, options=WarmupOptions)
    register("sft", sft, options=WarmupOptions)
