"""Random preference batches, and TRL 1.16's own loss code driven without building a full trainer.

TRL's trainers are made with ``object.__new__`` and given only the attributes their loss methods read,
with the values their ``__init__`` would set from a default config. Everything the losses compute is
TRL's code: per-token log-probs come from TRL's ``get_batch_logps``, losses and rewards from
``DPOTrainer._compute_loss``, ``CPOTrainer.cpo_loss`` and ``ORPOTrainer.get_batch_loss_metrics``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import pytest
import torch

from itool.components import PreferenceBatch

VOCAB = 13
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental is where TRL keeps CPO and ORPO


@dataclass
class RandomPairs:
    """``n`` chosen/rejected sequences with random prompts, answers and logits, chosen rows first."""

    input_ids: torch.Tensor  # (2n, T)
    attention_mask: torch.Tensor  # (2n, T): 1 on prompt and answer, 0 on padding
    completion_mask: torch.Tensor  # (2n, T): 1 on answer tokens only
    logits: torch.Tensor  # (2n, T, VOCAB)
    reference_logps: torch.Tensor  # (2n,) summed answer log-probs of a different (reference) model

    @property
    def n(self) -> int:
        return len(self.input_ids) // 2

    @property
    def labels(self) -> torch.Tensor:
        return self.input_ids.masked_fill(self.completion_mask == 0, -100)

    def logps(self, average: bool = False) -> torch.Tensor:
        from trl.experimental.cpo import CPOTrainer

        return CPOTrainer.get_batch_logps(self.logits, self.labels, average_log_prob=average)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)

    def half(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tensor[: self.n], tensor[self.n :]

    def batch(self, with_reference: bool) -> PreferenceBatch:
        """What an itool trainer hands a loss: summed answer log-probs and answer token counts."""
        (pc, pr), (lc, lr), (rc, rr) = self.half(self.logps()), self.half(self.lengths), self.half(self.reference_logps)
        return PreferenceBatch(pc, pr, lc, lr, *((rc, rr) if with_reference else (None, None)))

    def pair(self, i: int) -> "RandomPairs":
        rows = [i, self.n + i]
        return RandomPairs(self.input_ids[rows], self.attention_mask[rows], self.completion_mask[rows],
                           self.logits[rows], self.reference_logps[rows])


def random_pairs(seed: int, n: int, prompt_lengths: tuple[int, int] = (1, 5)) -> RandomPairs:
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(prompt_lengths[0], prompt_lengths[1] + 1, (2 * n,), generator=gen)
    answers = torch.randint(1, 9, (2 * n,), generator=gen)
    width = int((prompts + answers).max())
    positions = torch.arange(width)
    attention = (positions < (prompts + answers)[:, None]).long()
    completion = attention * (positions >= prompts[:, None]).long()
    input_ids = torch.randint(1, VOCAB, (2 * n, width), generator=gen) * attention
    logits = 2 * torch.randn(2 * n, width, VOCAB, generator=gen)
    pairs = RandomPairs(input_ids, attention, completion, logits, torch.zeros(2 * n))
    pairs.reference_logps = pairs.logps() + torch.randn(2 * n, generator=gen)
    return pairs


# Several batches, sizes 1 to 8: (seed, pairs per batch).
BATCHES = [(0, 1), (1, 2), (2, 5), (3, 8), (4, 8)]


@pytest.fixture
def make_pairs():
    """``make_pairs(seed, n, prompt_lengths=(lo, hi))``: a RandomPairs built on demand."""
    return random_pairs


@pytest.fixture(params=BATCHES, ids=lambda p: f"seed{p[0]}-n{p[1]}")
def pairs(request) -> RandomPairs:
    return random_pairs(*request.param)


@pytest.fixture(scope="session")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


class FusedHeadOutput(torch.nn.Module):
    """Plays the model under TRL's fused LM head: answers ``model(..., labels, fused_lm_head=True)``
    with the per-token log-probs of the given logits, zero where the label is -100 (as the head does)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, labels, fused_lm_head, **kwargs):
        from trl.trainer.utils import FusedCausalLMOutput, selective_log_softmax

        assert fused_lm_head
        shifted = labels[:, 1:]
        mask = shifted != -100
        log_probs = selective_log_softmax(self.logits[:, :-1], shifted.clamp(min=0)).masked_fill(~mask, 0)
        zeros = torch.zeros_like(log_probs)
        return FusedCausalLMOutput(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


@pytest.fixture
def trl_dpo(accelerator):
    """``trl_dpo(pairs, loss_type, beta) -> (mean loss, mean chosen reward, mean rejected reward)``."""
    from trl import DPOTrainer

    def run(pairs: RandomPairs, loss_type: str, beta: float) -> tuple[float, float, float]:
        trainer = object.__new__(DPOTrainer)
        model = FusedHeadOutput(pairs.logits).train()
        vars(trainer).update(
            model=model, accelerator=accelerator, beta=beta, loss_types=[loss_type], loss_weights=[1.0],
            precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl", label_smoothing=0.0,
            use_weighting=False, aux_loss_enabled=False, _tp_size=1, _total_train_tokens=0,
            _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        )
        ref_chosen, ref_rejected = pairs.half(pairs.reference_logps)
        inputs = {"input_ids": pairs.input_ids, "attention_mask": pairs.attention_mask,
                  "completion_mask": pairs.completion_mask,
                  "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
        loss = trainer._compute_loss(model, inputs, return_outputs=False)
        metrics = trainer._metrics["train"]
        return loss.item(), metrics["rewards/chosen"][-1], metrics["rewards/rejected"][-1]

    return run


@pytest.fixture
def cpo_trainer(accelerator):
    """A CPOTrainer as ``CPOConfig(loss_type="simpo", beta, simpo_gamma, cpo_alpha, label_smoothing)`` would
    set it up for a decoder-only model (defaults: pure SimPO, cpo_alpha=0)."""
    from trl.experimental.cpo import CPOTrainer

    def make(beta: float, gamma: float, cpo_alpha: float = 0.0, label_smoothing: float = 0.0):
        trainer = object.__new__(CPOTrainer)
        vars(trainer).update(accelerator=accelerator, beta=beta, simpo_gamma=gamma, loss_type="simpo",
                             cpo_alpha=cpo_alpha, alpha=0.0, label_smoothing=label_smoothing,
                             is_encoder_decoder=False, pad_token_id=0, aux_loss_enabled=False)
        return trainer

    return make


def trl_pair_batch(pairs: RandomPairs) -> dict[str, torch.Tensor]:
    """The batch TRL's CPO/ORPO trainers read: chosen_* and rejected_* input ids, masks and labels."""
    n = pairs.n
    batch = {}
    for side, rows in (("chosen", slice(0, n)), ("rejected", slice(n, 2 * n))):
        batch[f"{side}_input_ids"] = pairs.input_ids[rows]
        batch[f"{side}_attention_mask"] = pairs.attention_mask[rows]
        batch[f"{side}_labels"] = pairs.labels[rows]
    return batch


@pytest.fixture
def orpo_trainer(accelerator):
    """An ORPOTrainer as ``ORPOConfig(beta=...)`` would set it up for a decoder-only model."""
    from trl.experimental.orpo import ORPOTrainer

    def make(beta: float):
        trainer = object.__new__(ORPOTrainer)
        vars(trainer).update(accelerator=accelerator, beta=beta, is_encoder_decoder=False, padding_value=0,
                             aux_loss_enabled=False)
        return trainer

    return make

