"""orpo equals TRL's ORPOTrainer: the odds-ratio term pair by pair, and the full loss (with the chosen NLL)
per batch through TRL's own forward, loss and metrics code."""

from types import SimpleNamespace

import pytest
import torch

from itool.components import PreferenceBatch
from itool.plugins.losses.orpo import ORPOOptions, orpo

from .conftest import trl_pair_batch


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_odds_ratio_term_and_rewards_match_trl(pairs, orpo_trainer, beta):
    batch = pairs.batch(with_reference=False)
    out = orpo(batch, ORPOOptions(beta=beta))

    chosen, rejected = pairs.half(pairs.logps(average=True))
    trl_losses, chosen_rewards, rejected_rewards, _, _ = orpo_trainer(beta).odds_ratio_loss(chosen, rejected)
    nll_share = -batch.policy_chosen_logps * pairs.n / batch.chosen_lengths.sum()
    # TRL's `losses` is +λ·log σ(log-odds) and its total loss is NLL − losses.mean()
    torch.testing.assert_close(out.losses, nll_share - trl_losses, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.chosen_rewards, chosen_rewards, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.rejected_rewards, rejected_rewards, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed,n", [(10, 1), (11, 4), (12, 8)])
def test_full_loss_equals_trl_get_batch_loss_metrics(orpo_trainer, make_pairs, seed, n):
    # TRL's NLL covers the prompt as well as the answer; with a one-token prompt (never predicted) the two
    # coincide, so this compares the whole value, NLL token-mean included.
    pairs = make_pairs(seed, n, prompt_lengths=(1, 1))
    out = orpo(pairs.batch(with_reference=False), ORPOOptions(beta=0.1))

    model = lambda input_ids, **kwargs: SimpleNamespace(logits=pairs.logits)  # TRL's forward reads only .logits
    loss, metrics = orpo_trainer(0.1).get_batch_loss_metrics(model, trl_pair_batch(pairs))

    torch.testing.assert_close(out.losses.mean(), loss, rtol=1e-6, atol=1e-8)
    assert out.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"], rel=1e-6)
    assert out.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"], rel=1e-6)


def test_stable_where_answers_are_almost_certain():
    """Per-token log-probs near 0 make 1 − eᵃ cancel; the loss must stay finite and differentiable."""
    logps = torch.tensor([-1e-6, -3e-4], requires_grad=True)
    batch = PreferenceBatch(logps[:1], logps[1:], torch.tensor([1]), torch.tensor([1]))
    out = orpo(batch, ORPOOptions())
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(logps.grad).all()
