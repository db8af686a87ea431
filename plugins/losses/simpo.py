"""SimPO (Meng et al., 2024): reference-free, length-normalised, with a target reward margin."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch


class SimPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(2.5, gt=0, description="β: scale of the per-token log-prob difference (iTool: 2.5).")
    gamma: float = Field(0.5, description="γ: target margin, subtracted after β scaling (TRL: simpo_gamma).")


def simpo(batch: PreferenceBatch, opts: SimPOOptions) -> LossOutput:
    """SimPO: −log σ(β·(pc/Lc − pr/Lr) − γ), no reference model (the iTool paper's loss)."""
    chosen = batch.policy_chosen_logps / batch.chosen_lengths
    rejected = batch.policy_rejected_logps / batch.rejected_lengths
    # TRL's CPOTrainer (loss_type="simpo") subtracts γ/β before scaling by β; same value, same rounding.
    logits = chosen - rejected - opts.gamma / opts.beta
    return LossOutput(
        losses=-F.logsigmoid(opts.beta * logits),
        chosen_rewards=opts.beta * chosen.detach(),
        rejected_rewards=opts.beta * rejected.detach(),
    )


@hookimpl
def register_losses(register):
    register("simpo", simpo, options=SimPOOptions, needs_reference=False)
