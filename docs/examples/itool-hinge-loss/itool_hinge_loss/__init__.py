"""A reference-free hinge preference loss, shipped as its own package to show the plugin API.

loss = max(0, margin − β·(pc/Lc − pr/Lr)): zero once the chosen answer's mean token log-prob beats
the rejected one's by ``margin/β``; SLiC's calibration loss with length normalisation.
"""

import torch
from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch


class HingeOptions(BaseModel):
    beta: float = Field(1.0, gt=0, description="Scale of the length-normalised log-prob margin.")
    margin: float = Field(1.0, ge=0, description="Margin the scaled difference must exceed.")


def hinge(batch: PreferenceBatch, opts: HingeOptions) -> LossOutput:
    """Hinge on the length-normalised log-prob margin (no reference model)."""
    chosen = opts.beta * batch.policy_chosen_logps / batch.chosen_lengths
    rejected = opts.beta * batch.policy_rejected_logps / batch.rejected_lengths
    return LossOutput(torch.relu(opts.margin - (chosen - rejected)), chosen.detach(), rejected.detach())


@hookimpl
def register_losses(register):
    register("hinge", hinge, options=HingeOptions, needs_reference=False)
