"""dpo equals TRL's DPOTrainer (loss_type="sigmoid") on the same inputs, pair by pair and per batch."""

import pytest
import torch

from itool.plugins.losses.dpo import DPOOptions, dpo


def close(ours: torch.Tensor, trl_value: float) -> None:
    torch.testing.assert_close(ours, torch.tensor(trl_value), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl_dpo_trainer(pairs, trl_dpo, beta):
    out = dpo(pairs.batch(with_reference=True), DPOOptions(beta=beta))

    loss, chosen_reward, rejected_reward = trl_dpo(pairs, "sigmoid", beta)
    close(out.losses.mean(), loss)
    close(out.chosen_rewards.mean(), chosen_reward)
    close(out.rejected_rewards.mean(), rejected_reward)
    for i in range(pairs.n):  # TRL logs batch means, so batches of one pair give the per-example values
        loss, chosen_reward, rejected_reward = trl_dpo(pairs.pair(i), "sigmoid", beta)
        close(out.losses[i], loss)
        close(out.chosen_rewards[i], chosen_reward)
        close(out.rejected_rewards[i], rejected_reward)


def test_dpo_default_beta_is_trls():
    from trl import DPOConfig

    assert DPOOptions().beta == DPOConfig.__dataclass_fields__["beta"].default == 0.1
