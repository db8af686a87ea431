"""SimPO (Meng et al., 2024): reference-free, length-normalised, with a target reward margin; TRL's
CPOTrainer options (``cpo_alpha``, ``label_smoothing``) included, off by default."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch
from itool.plugins.losses.nll import chosen_nll_shares


class SimPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(2.5, gt=0, description="β: scale of the per-token log-prob difference (iTool: 2.5).")
    gamma: float = Field(0.5, description="γ: target margin, subtracted after β scaling (TRL: simpo_gamma).")
    cpo_alpha: float = Field(
        0.0, ge=0, description="Weight of an NLL term on the chosen answers (TRL CPOTrainer's cpo_alpha; "
                               "0: the SimPO paper's loss, >0: CPO-SimPO).")
    label_smoothing: float = Field(
        0.0, ge=0, le=0.5, description="Probability that a pair's labels are flipped (conservative SimPO, as TRL's "
                                       "label_smoothing); 0: trust every pair.")


def simpo(batch: PreferenceBatch, opts: SimPOOptions) -> LossOutput:
    """SimPO: −log σ(β·(pc/Lc − pr/Lr) − γ), no reference model (the iTool paper's loss); with label
    smoothing ε the flipped pair's loss weighs ε, and ``cpo_alpha`` adds α·NLL of the chosen answers."""
    chosen = batch.policy_chosen_logps / batch.chosen_lengths
    rejected = batch.policy_rejected_logps / batch.rejected_lengths
    # TRL's CPOTrainer (loss_type="simpo") subtracts γ/β before scaling by β; same value, same rounding.
    logits = opts.beta * (chosen - rejected - opts.gamma / opts.beta)
    losses = -F.logsigmoid(logits) * (1 - opts.label_smoothing) - F.logsigmoid(-logits) * opts.label_smoothing
    if opts.cpo_alpha:
        losses = losses + opts.cpo_alpha * chosen_nll_shares(batch)
    return LossOutput(
        losses=losses,
        chosen_rewards=opts.beta * chosen.detach(),
        rejected_rewards=opts.beta * rejected.detach(),
    )


@hookimpl
def register_losses(register):
    register("simpo", simpo, options=SimPOOptions, needs_reference=False)
