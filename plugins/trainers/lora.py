"""Trainer ``lora``: preference optimisation of ``ctx.policy`` with a LoRA adapter and the configured loss.

Training runs on ``transformers.Trainer`` (``itool.plugins.trainers.engine``: checkpoints, reporters,
mixed precision). Each pair's chosen and rejected answers go through the policy in one forward pass
(chosen rows first); their summed answer log-probs and token counts form the loss's ``PreferenceBatch``.
A loss registered with ``needs_reference`` also gets the reference log-probs: the same sums under the
policy as it is before this round, computed once with the adapter disabled (no second model copy) and
cached in the stage folder, so a re-run of the stage reuses them. Reference-free losses never run that pass.
In a run of several processes the main process computes them and shares them with the others.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from itool import hookimpl, processes
from itool.errors import ItoolError
from itool.plugins.trainers.engine_options import EngineOptions
from itool.rundir import atomic_path
from itool.schemas import PreferencePair

REFERENCE_FILE = "reference_logps.pt"


class LoRATrainerOptions(EngineOptions):

    lr: float = Field(
        5e-5, gt=0,
        description="Peak learning rate (linear warm-up and decay). The paper's 1e-6..5e-6 is for an 8B model; "
                    "a rank-8 LoRA on a 135M model needs ~10x more to move within a round.")
    epochs: int = Field(2, ge=1, description="Passes over the pairs (iTool: 2 per round).")
    batch_size: int = Field(4, ge=1, description="Pairs per micro-batch (each pair is two sequences).")
    micro_batch_tokens: int = Field(
        4096, ge=1, description="Cap on padded tokens per forward pass (sequences × longest); a micro-batch "
                                "beyond it runs in parts with the same gradient (memory: 8 × 1024 tokens "
                                "with gradients needed over 24 GB).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of optimiser steps spent warming up the lr.")
    lora_r: int = Field(8, ge=1, description="LoRA rank (iTool: 8, on all linear layers).")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (the update is scaled by alpha/r).")
    lora_dropout: float = Field(
        0.0, ge=0, lt=1,
        description="LoRA dropout. 0 keeps the policy equal to the reference at step 0 (log-ratios start at 0).")
    max_length: int = Field(1024, ge=8, description="Longer prompt+answer sequences lose the prompt's oldest tokens.")


def encode_pairs(tokenizer: Any, pairs: list[PreferencePair], max_length: int) -> tuple[list[tuple], int]:
    """(prompt+chosen ids, prompt+rejected ids) per pair, in the shared convention; pairs with an empty
    answer after tokenisation are dropped (their per-token log-prob is undefined). Returns (encoded, dropped)."""
    from itool.plugins.training import encode_pair

    encoded = []
    for pair in pairs:
        chosen = encode_pair(tokenizer, pair.prompt, pair.chosen, max_length)
        rejected = encode_pair(tokenizer, pair.prompt, pair.rejected, max_length)
        if chosen[1] and rejected[1]:
            encoded.append((chosen, rejected))
    return encoded, len(pairs) - len(encoded)


def pair_tokens(pair: tuple) -> int:
    """Padded tokens a pair puts in a forward pass: two sequences as long as its longer one."""
    return 2 * max(len(prompt) + len(answer) for prompt, answer in pair)


def forward_pairs(model: Any, encoded: list[tuple], pad_id: int, device: Any):
    """Summed answer log-probs and token counts of the chosen and the rejected answers, one forward pass."""
    from itool.plugins.training import collate, sequence_logps

    batch = collate([c for c, _ in encoded] + [r for _, r in encoded], pad_id, device)
    logps, counts = sequence_logps(model, batch)
    n = len(encoded)
    return logps[:n], logps[n:], counts[:n], counts[n:]


def reference_logps(ctx: Any, peft_model: Any, encoded: list[tuple], batch_size: int):
    """(chosen sums, rejected sums, whether they came from the cache), with the adapter disabled.

    Cached in the stage folder, keyed by the token ids: reused only for exactly these pairs."""
    import torch

    from itool.plugins.training import autocast

    key = hashlib.sha256(json.dumps(encoded).encode()).hexdigest()
    path = ctx.stage_dir / REFERENCE_FILE
    if path.is_file():
        cached = torch.load(path)
        if cached["key"] == key:
            ctx.log("reference_logps", pairs=len(encoded), cached=True)
            return cached["chosen"], cached["rejected"], True
    policy = ctx.policy
    chosen, rejected = [], []
    with torch.no_grad(), peft_model.disable_adapter(), autocast(policy.dtype, policy.device):
        for start in range(0, len(encoded), batch_size):
            c, r, _, _ = forward_pairs(peft_model, encoded[start: start + batch_size],
                                       policy.tokenizer.pad_token_id, policy.device)
            chosen.append(c)
            rejected.append(r)
    chosen, rejected = torch.cat(chosen).cpu(), torch.cat(rejected).cpu()  # cpu: cached, and sent to other processes
    with atomic_path(path) as tmp:
        torch.save({"key": key, "chosen": chosen, "rejected": rejected}, tmp)
    ctx.log("reference_logps", pairs=len(encoded), cached=False)
    return chosen, rejected, False


def pair_lengths(encoded: list[tuple]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Answer token counts of the chosen and of the rejected answers."""
    import torch

    return (torch.tensor([len(chosen[1]) for chosen, _ in encoded]),
            torch.tensor([len(rejected[1]) for _, rejected in encoded]))


def epoch_rows(totals: dict[str, float]) -> list[dict[str, Any]]:
    """Per-epoch means over the pairs from the trainer's running totals (``"<epoch>.<metric>"``)."""
    epochs = sorted({int(key.split(".")[0]) for key in totals})
    rows = []
    for epoch in epochs:
        n = totals[f"{epoch}.n"]
        rows.append({"epoch": epoch, **{metric: totals[f"{epoch}.{metric}"] / n
                                        for metric in ("loss", "reward_margin", "accuracy")}})
    return rows


def train(ctx: Any, pairs: list[PreferencePair], opts: LoRATrainerOptions) -> dict[str, Any]:
    """Preference optimisation with LoRA (QLoRA with ``--quantize 4bit``) and the configured loss, on
    ``transformers.Trainer``."""
    import math

    from itool.plugins.trainers.engine import (
        PreferenceTrainer, fit, finish, plan_key, training_arguments,
    )
    from itool.plugins.training import add_lora, shuffled_epochs

    loss, loss_opts = ctx.component("loss")
    policy = ctx.policy
    encoded, dropped = encode_pairs(policy.tokenizer, pairs, opts.max_length)
    if not encoded:
        raise ItoolError(f"trainer lora: none of the {len(pairs)} pairs has a non-empty chosen and rejected answer")
    seed = ctx.stage_seed(ctx.stage or "train")
    peft_model = add_lora(policy.model, seed=seed, r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout)
    reference, reference_status = None, "none"
    if loss.attrs.get("needs_reference"):
        *reference, cached = processes.on_main(lambda: reference_logps(ctx, peft_model, encoded, opts.batch_size))
        reference_status = "cached" if cached else "computed"

    n = len(encoded)
    order = [(position // n, index) for position, index in enumerate(shuffled_epochs(range(n), opts.epochs, seed))]
    total_steps = math.ceil(math.ceil(len(order) / opts.batch_size) / opts.grad_accum)
    args = training_arguments(ctx, opts, lr=opts.lr, batch_size=opts.batch_size, grad_accum=opts.grad_accum,
                              warmup_ratio=opts.warmup_ratio, total_steps=total_steps, seed=seed)
    trainer = PreferenceTrainer(
        model=peft_model, args=args, batch_size=opts.batch_size, max_tokens=opts.micro_batch_tokens,
        encoded=encoded, order=order,
        reference=reference, loss=loss, loss_opts=loss_opts, pad_id=policy.tokenizer.pad_token_id)
    plan = plan_key(opts, loss.name, loss_opts.model_dump(), encoded, order)
    history = fit(ctx, trainer, opts, plan, event="step")
    epochs = epoch_rows(trainer.totals)
    for row in epochs:
        ctx.log("epoch", **row)
    finish(ctx, policy, peft_model)
    return {"pairs": n, "dropped": dropped, "steps": len(history), "loss": epochs[-1]["loss"],
            "reward_margin": epochs[-1]["reward_margin"], "accuracy": epochs[-1]["accuracy"],
            "reference": reference_status, "epochs": epochs}


@hookimpl
def register_trainers(register):
    register("lora", train, options=LoRATrainerOptions)
