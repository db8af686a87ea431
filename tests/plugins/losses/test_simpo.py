"""simpo equals TRL's CPOTrainer with loss_type="simpo": pure SimPO (cpo_alpha=0) pair by pair, label
smoothing, and CPO-SimPO's NLL term (cpo_alpha > 0) per batch through TRL's own forward and loss code."""

from types import SimpleNamespace

import pytest
import torch

from itool.plugins.losses.simpo import SimPOOptions, simpo

from .conftest import trl_pair_batch


@pytest.mark.parametrize("beta,gamma", [(2.5, 0.5), (2.0, 1.0), (10.0, 0.0)])
def test_simpo_matches_trl_cpo_trainer(pairs, cpo_trainer, beta, gamma):
    out = simpo(pairs.batch(with_reference=False), SimPOOptions(beta=beta, gamma=gamma))

    # CPOTrainer feeds cpo_loss length-averaged log-probs for simpo (get_batch_logps(average_log_prob=True)).
    chosen, rejected = pairs.half(pairs.logps(average=True))
    losses, chosen_rewards, rejected_rewards = cpo_trainer(beta, gamma).cpo_loss(chosen, rejected)
    torch.testing.assert_close(out.losses, losses, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.chosen_rewards, chosen_rewards, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.rejected_rewards, rejected_rewards, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_matches_trl_cpo_trainer(pairs, cpo_trainer, smoothing):
    out = simpo(pairs.batch(with_reference=False), SimPOOptions(label_smoothing=smoothing))

    chosen, rejected = pairs.half(pairs.logps(average=True))
    losses, _, _ = cpo_trainer(2.5, 0.5, label_smoothing=smoothing).cpo_loss(chosen, rejected)
    torch.testing.assert_close(out.losses, losses, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed,n,alpha,smoothing", [(20, 1, 1.0, 0.0), (21, 4, 0.5, 0.0), (22, 8, 1.0, 0.2)])
def test_cpo_alpha_adds_trl_token_mean_nll_of_the_chosen_answers(cpo_trainer, make_pairs, seed, n, alpha, smoothing):
    pairs = make_pairs(seed, n)
    out = simpo(pairs.batch(with_reference=False), SimPOOptions(cpo_alpha=alpha, label_smoothing=smoothing))

    model = lambda input_ids, **kwargs: SimpleNamespace(logits=pairs.logits)  # TRL's forward reads only .logits
    trainer = cpo_trainer(2.5, 0.5, cpo_alpha=alpha, label_smoothing=smoothing)
    loss, metrics = trainer.get_batch_loss_metrics(model, trl_pair_batch(pairs))

    torch.testing.assert_close(out.losses.mean(), loss, rtol=1e-6, atol=1e-7)
    assert metrics["nll_loss"] > 0  # the term is really there
    assert out.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"], rel=1e-6)


def test_simpo_defaults_are_the_itool_papers():
    opts = SimPOOptions()
    assert (opts.beta, opts.gamma, opts.cpo_alpha, opts.label_smoothing) == (2.5, 0.5, 0.0, 0.0)


def test_gamma_is_a_margin_after_beta_scaling():
    """With equal per-token log-probs the loss is −log σ(−γ), whatever β is."""
    from itool.components import PreferenceBatch

    batch = PreferenceBatch(torch.tensor([-4.0]), torch.tensor([-2.0]), torch.tensor([4]), torch.tensor([2]))
    for beta in (1.0, 2.5, 7.0):
        loss = simpo(batch, SimPOOptions(beta=beta, gamma=0.5)).losses
        torch.testing.assert_close(loss, -torch.nn.functional.logsigmoid(torch.tensor([-0.5])))
