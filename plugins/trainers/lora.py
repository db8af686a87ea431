"""Trainer ``lora``: preference optimisation of ``ctx.policy`` with a LoRA adapter and the configured loss.

Training runs on ``transformers.Trainer`` (``itool.plugins.trainers.engine``: checkpoints, reporters,
mixed precision). Each pair's prompt goes through the policy once and both answers continue from its
key/value cache (``forward_pairs``); their summed answer log-probs and token counts form the loss's
``PreferenceBatch``. A loss registered with ``needs_reference`` also gets the reference log-probs: the
same sums under the policy as it is before this round, computed once with the adapter disabled (no
second model copy) and cached in the stage folder, so a re-run of the stage reuses them.
Reference-free losses never run that pass.
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
    batch_size: int = Field(4, ge=1, description="Pairs per micro-batch (each a prompt and two answers).")
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
    """(prompt ids, chosen ids, rejected ids) per pair, in the shared convention. Both answers share one
    prompt: over ``max_length`` it keeps the end that fits beside the longer answer. Pairs with an empty
    prompt or answer after tokenisation are dropped (an answer's first token needs a prompt token before
    it). Returns (encoded, dropped)."""
    from itool.plugins.training import encode_pair

    encoded = []
    for pair in pairs:
        chosen_prompt, chosen = encode_pair(tokenizer, pair.prompt, pair.chosen, max_length)
        rejected_prompt, rejected = encode_pair(tokenizer, pair.prompt, pair.rejected, max_length)
        prompt = min(chosen_prompt, rejected_prompt, key=len)  # both are ends of the same prompt ids
        if prompt and chosen and rejected:
            encoded.append((prompt, chosen, rejected))
    return encoded, len(pairs) - len(encoded)


def pair_tokens(pair: tuple) -> int:
    """About the padded tokens a pair puts in a forward pass: its prompt once, its longer answer twice."""
    prompt, chosen, rejected = pair
    return len(prompt) + 2 * max(len(chosen), len(rejected))


def forward_pairs(model: Any, encoded: list[tuple], pad_id: int, device: Any, prompt_model: Any = None):
    """Summed answer log-probs and token counts of the chosen and the rejected answers.

    Each prompt goes through the model once; both of its answers continue from the prompt's key/value
    cache (chosen rows first), and gradients flow back through that cache. A pair thus costs its prompt
    once instead of twice, and tool prompts are most of a pair's tokens (500-2,000 against an answer's
    10-160). No library offers this for our trainer: TRL's preference trainers encode the prompt per side.

    ``prompt_model`` runs the prompt pass when given: under DistributedDataParallel the unwrapped model,
    since DDP allows one forward of its wrapper per backward (the prompt pass's gradients still reach
    DDP's exchange, through the cache, in the same backward)."""
    import torch

    from itool.plugins.training import collate, target_logp_sums

    n = len(encoded)
    prompts = collate([(prompt, []) for prompt, _, _ in encoded], pad_id, device)  # left-padded
    head = (prompt_model or model)(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"],
                                   position_ids=prompts["position_ids"], use_cache=True, logits_to_keep=1)
    both = torch.arange(n, device=prompts["input_ids"].device).repeat(2)
    cache = head.cache
    cache.reorder_cache(both)
    answers = [chosen for _, chosen, _ in encoded] + [rejected for _, _, rejected in encoded]
    width = max(map(len, answers))
    ids = torch.full((2 * n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((2 * n, width), dtype=torch.long)
    for row, answer in enumerate(answers):  # right-padded: the answers start right after their prompt
        ids[row, :len(answer)] = torch.tensor(answer, dtype=torch.long)
        mask[row, :len(answer)] = 1
    ids, mask = ids.to(both.device), mask.to(both.device)
    prompt_mask = prompts["attention_mask"][both]
    positions = prompt_mask.sum(-1, keepdim=True) + torch.arange(width, device=both.device)
    tail = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, mask], -1), position_ids=positions,
                 cache=cache, use_cache=True).logits
    logits = torch.cat([head.logits[both], tail[:, :-1]], 1)  # position t predicts answer token t
    sums, counts = target_logp_sums(logits, ids, mask)
    return sums[:n], sums[n:], counts[:n], counts[n:]


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

    return (torch.tensor([len(chosen) for _, chosen, _ in encoded]),
            torch.tensor([len(rejected) for _, _, rejected in encoded]))


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
