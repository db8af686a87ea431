"""The options every trainer on ``itool.plugins.trainers.engine`` takes. Kept out of the engine: option
models are read when plugins register, and the engine imports ``transformers.Trainer`` (seconds)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EngineOptions(BaseModel):
    """Options every trainer on this engine takes (besides its own: learning rate, batch size...)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_steps: int = Field(
        50, ge=0, description="Save a resumable checkpoint (adapter, optimiser, scheduler, RNG, data position) in "
                              "<stage>/checkpoints every N optimiser steps; 0: never. Deleted when the stage ends.")
    checkpoint_minutes: float = Field(
        10.0, ge=0, description="Also save one when this many minutes passed since the last; 0: never.")
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Trainer reporters: tensorboard (events in <stage>/tensorboard), wandb, mlflow, ...; [] for none.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (less memory, ~30% slower).")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="Autocast of the forward pass; auto: bf16 where the policy is bf16, else none.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """``--trainer-opt report_to=wandb`` (one name, or comma-separated) as well as a list; none: []."""
        if isinstance(value, str):
            return [] if value.strip() in ("", "none") else [v.strip() for v in value.split(",") if v.strip()]
        return value
