"""ipo equals TRL's DPOTrainer (loss_type="ipo"), whose gap is normalised by the answer lengths."""

import pytest
import torch

from itool.plugins.losses.ipo import IPOOptions, ipo


def close(ours: torch.Tensor, trl_value: float) -> None:
    torch.testing.assert_close(ours, torch.tensor(trl_value), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_trl_dpo_trainer(pairs, trl_dpo, beta):
    out = ipo(pairs.batch(with_reference=True), IPOOptions(beta=beta))

    loss, chosen_reward, rejected_reward = trl_dpo(pairs, "ipo", beta)
    close(out.losses.mean(), loss)
    close(out.chosen_rewards.mean(), chosen_reward)
    close(out.rejected_rewards.mean(), rejected_reward)
    for i in range(pairs.n):
        loss, chosen_reward, rejected_reward = trl_dpo(pairs.pair(i), "ipo", beta)
        close(out.losses[i], loss)
        close(out.chosen_rewards[i], chosen_reward)
        close(out.rejected_rewards[i], rejected_reward)


def test_ipo_is_zero_exactly_at_the_target_gap():
    one = torch.tensor([1.0])
    # chosen log-ratio 10 over 2 tokens, rejected 0: per-token gap 5 = 1/(2·0.1)
    batch_fields = dict(policy_chosen_logps=torch.tensor([-10.0]), policy_rejected_logps=-one,
                        chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([1]),
                        reference_chosen_logps=torch.tensor([-20.0]), reference_rejected_logps=-one)
    from itool.components import PreferenceBatch

    assert ipo(PreferenceBatch(**batch_fields), IPOOptions(beta=0.1)).losses.item() == 0.0
