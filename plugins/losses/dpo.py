"""DPO (Rafailov et al., 2023): the policy/reference log-ratio of chosen over rejected, through a sigmoid."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch


class DPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="β: strength of the implicit KL penalty towards the reference.")


def dpo(batch: PreferenceBatch, opts: DPOOptions) -> LossOutput:
    """DPO: −log σ(β·((pc−rc) − (pr−rr))), against the reference (the policy before this round)."""
    chosen = batch.policy_chosen_logps - batch.reference_chosen_logps
    rejected = batch.policy_rejected_logps - batch.reference_rejected_logps
    return LossOutput(
        losses=-F.logsigmoid(opts.beta * (chosen - rejected)),
        chosen_rewards=opts.beta * chosen.detach(),
        rejected_rewards=opts.beta * rejected.detach(),
    )


@hookimpl
def register_losses(register):
    register("dpo", dpo, options=DPOOptions, needs_reference=True)
