"""ORPO (Hong et al., 2024): supervised NLL on the chosen answer plus an odds-ratio penalty, no reference."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch
from itool.plugins.losses.nll import chosen_nll_shares


class ORPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="λ: weight of the odds-ratio term (TRL: ORPOConfig.beta).")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0 without cancellation: log1p(−eˣ) far from 0, log(−expm1(x)) near it."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo(batch: PreferenceBatch, opts: ORPOOptions) -> LossOutput:
    """ORPO: NLL(chosen) − λ·log σ(log-odds(chosen) − log-odds(rejected)), with per-token log-probs."""
    pc, pr = batch.policy_chosen_logps.float(), batch.policy_rejected_logps.float()
    a, b = pc / batch.chosen_lengths, pr / batch.rejected_lengths
    log_odds = (a - b) - (_log1mexp(a) - _log1mexp(b))
    return LossOutput(
        losses=chosen_nll_shares(batch) - opts.beta * F.logsigmoid(log_odds),
        chosen_rewards=opts.beta * a.detach(),
        rejected_rewards=opts.beta * b.detach(),
    )


@hookimpl
def register_losses(register):
    register("orpo", orpo, options=ORPOOptions, needs_reference=False)
