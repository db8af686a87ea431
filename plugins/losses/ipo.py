"""IPO (Azar et al., 2023): regresses the per-token log-ratio gap onto 1/(2β) instead of pushing it to ∞."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch


class IPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="β (τ in the paper): the target gap is 1/(2β).")


def ipo(batch: PreferenceBatch, opts: IPOOptions) -> LossOutput:
    """IPO: ((pc−rc)/Lc − (pr−rr)/Lr − 1/(2β))², length-normalised as in TRL's DPOTrainer."""
    chosen = batch.policy_chosen_logps - batch.reference_chosen_logps
    rejected = batch.policy_rejected_logps - batch.reference_rejected_logps
    gap = chosen / batch.chosen_lengths.clamp(min=1) - rejected / batch.rejected_lengths.clamp(min=1)
    return LossOutput(
        losses=(gap - 1 / (2 * opts.beta)) ** 2,
        # TRL logs the unnormalised β·log-ratio as the reward for every DPOTrainer loss type.
        chosen_rewards=opts.beta * chosen.detach(),
        rejected_rewards=opts.beta * rejected.detach(),
    )


@hookimpl
def register_losses(register):
    register("ipo", ipo, options=IPOOptions, needs_reference=True)
