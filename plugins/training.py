"""What every trainer and the scoring backend share: the tokenisation convention, completion
log-probs, the held-out answer loss, and wrapping a policy in LoRA and merging it back.

The optimisation itself (optimiser, schedule, accumulation, checkpoints, reporters) is
``transformers.Trainer``'s, set up for the stages in ``itool.plugins.trainers.engine``; this module is
what the Trainer cannot know and ``TransformersBackend.score`` needs too, so trainer and scorer agree on
every token.

The one tokenisation convention: prompt and completion are tokenised *separately* (no special tokens
added: the chat template already wrote them into the prompt text) and their ids concatenated. Labels are
``-100`` on the prompt and on padding, so losses and log-probs cover the completion tokens only. Batches
are left-padded with explicit position ids, so every row keeps the positions it would have alone
(batched log-probs equal unbatched ones) and all completions end at the last column: the model projects
only the last ``longest completion + 1`` positions onto the vocabulary (``logits_to_keep``), not the
prompts, which are most of the tokens.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, Sequence, TypeVar

import torch

from itool.processes import is_main
from itool.rundir import atomic_path

IGNORE_INDEX = -100
T = TypeVar("T")


# -- tokenisation --------------------------------------------------------------------------------------
def encode_pair(tokenizer: Any, prompt: str, completion: str, max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Prompt ids and completion ids, tokenised separately (the shared convention).

    Over ``max_length`` the completion is cut at its end only if it alone is too long, then the prompt
    loses its *oldest* tokens: the end of the prompt (where the answer starts) is what the answer depends on."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        completion_ids = completion_ids[:max_length]
        keep = max_length - len(completion_ids)
        prompt_ids = prompt_ids[len(prompt_ids) - keep:] if keep > 0 else []
    return prompt_ids, completion_ids


def mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding: each row counts its real tokens from 0 (padding gets 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, device: Any = None) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask``, ``position_ids`` and completion-only ``labels``
    for (prompt, completion) ids."""
    width = max(len(p) + len(c) for p, c in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt_ids, completion_ids) in enumerate(pairs):
        ids = prompt_ids + completion_ids
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
        if completion_ids:
            labels[row, width - len(completion_ids):] = torch.tensor(completion_ids, dtype=torch.long)
    position_ids = mask_positions(attention_mask)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def completion_batch(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *,
                     max_length: int | None = None, device: Any = None) -> dict[str, torch.Tensor]:
    """Tokenise and collate prompt/completion texts into one training batch."""
    pairs = [encode_pair(tokenizer, p, c, max_length) for p, c in zip(prompts, completions, strict=True)]
    return collate(pairs, tokenizer.pad_token_id, device)


# -- log-probs -----------------------------------------------------------------------------------------
def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the sum of log p(token) over the completion tokens (``labels != -100``) and their count.

    Differentiable (call under ``torch.no_grad()`` when scoring). Log-softmax is taken in float32."""
    width = batch["input_ids"].shape[1]
    keep = min(width, int((batch["labels"] != IGNORE_INDEX).sum(-1).max()) + 1)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=keep).logits[:, :-1]
    labels = batch["labels"][:, width - keep + 1:]
    mask = labels != IGNORE_INDEX
    return target_logp_sums(logits, labels.masked_fill(~mask, 0), mask)


def target_logp_sums(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the sum of log p(target) where ``mask`` is set (log-softmax in float32), and the count."""
    logits = logits.float()
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def autocast(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when the policy is bf16 (LoRA weights stay float32); a no-op otherwise."""
    if dtype == torch.bfloat16:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def score_completions(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *,
                      batch_size: int = 8, max_length: int | None = None) -> list[tuple[float, int]]:
    """(log-prob sum, token count) of each completion given its prompt, batched by similar length."""
    pairs = [encode_pair(tokenizer, p, c, max_length) for p, c in zip(prompts, completions, strict=True)]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        batch = collate([pairs[i] for i in rows], tokenizer.pad_token_id, device)
        logps, counts = sequence_logps(model, batch)
        for i, logp, count in zip(rows, logps.tolist(), counts.tolist()):
            results[i] = (logp, count)
    return results


def mean_completion_loss(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *,
                         batch_size: int = 8, max_length: int | None = None) -> float:
    """Token-averaged negative log-likelihood of the completions (the held-out answer-token loss)."""
    scores = score_completions(model, tokenizer, prompts, completions, batch_size=batch_size, max_length=max_length)
    return -sum(s for s, _ in scores) / max(1, sum(n for _, n in scores))


# -- order ---------------------------------------------------------------------------------------------
def shuffled_epochs(items: Sequence[T], epochs: int, seed: int) -> list[T]:
    """``epochs`` passes over ``items``, each in a fresh seeded order."""
    rng = random.Random(seed)
    out: list[T] = []
    for _ in range(epochs):
        order = list(items)
        rng.shuffle(order)
        out += order
    return out


# -- LoRA ----------------------------------------------------------------------------------------------
def add_lora(model: Any, *, seed: int, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             target_modules: str | list[str] = "all-linear") -> Any:
    """Wrap ``model`` in a trainable LoRA (peft). The base weights are frozen; a 4-bit base is prepared
    for k-bit training first (QLoRA). The wrapper shares the base modules: merging changes ``model``.

    The initialisation draws from ``seed`` alone (the global generator is left as it was), so a stage
    re-run in a fresh process starts from the same adapter whatever ran before it."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=target_modules)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def save_and_merge(policy: Any, peft_model: Any, path: Path) -> None:
    """Save the adapter at ``path`` in PEFT format (atomically; the main process of a run of several),
    then merge it into ``policy.model``."""
    if is_main():
        with atomic_path(Path(path)) as tmp:
            peft_model.save_pretrained(tmp)
    policy.model = peft_model.merge_and_unload()
    policy.model.eval()
