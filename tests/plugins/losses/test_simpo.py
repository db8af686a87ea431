"""simpo equals TRL's CPOTrainer with loss_type="simpo" and cpo_alpha=0 (pure SimPO) on the same inputs."""

import pytest
import torch

from itool.plugins.losses.simpo import SimPOOptions, simpo


@pytest.mark.parametrize("beta,gamma", [(2.5, 0.5), (2.0, 1.0), (10.0, 0.0)])
def test_simpo_matches_trl_cpo_trainer(pairs, cpo_trainer, beta, gamma):
    out = simpo(pairs.batch(with_reference=False), SimPOOptions(beta=beta, gamma=gamma))

    # CPOTrainer feeds cpo_loss length-averaged log-probs for simpo (get_batch_logps(average_log_prob=True)).
    chosen, rejected = pairs.half(pairs.logps(average=True))
    losses, chosen_rewards, rejected_rewards = cpo_trainer(beta, gamma).cpo_loss(chosen, rejected)
    torch.testing.assert_close(out.losses, losses, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.chosen_rewards, chosen_rewards, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.rejected_rewards, rejected_rewards, rtol=1e-6, atol=1e-8)


def test_simpo_defaults_are_the_itool_papers():
    opts = SimPOOptions()
    assert (opts.beta, opts.gamma) == (2.5, 0.5)


def test_gamma_is_a_margin_after_beta_scaling():
    """With equal per-token log-probs the loss is −log σ(−γ), whatever β is."""
    from itool.components import PreferenceBatch

    batch = PreferenceBatch(torch.tensor([-4.0]), torch.tensor([-2.0]), torch.tensor([4]), torch.tensor([2]))
    for beta in (1.0, 2.5, 7.0):
        loss = simpo(batch, SimPOOptions(beta=beta, gamma=0.5)).losses
        torch.testing.assert_close(loss, -torch.nn.functional.logsigmoid(torch.tensor([-0.5])))
