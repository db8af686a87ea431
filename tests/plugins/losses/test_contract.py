"""What every built-in loss promises the trainer: registration, per-example outputs, sensible gradients."""

import pytest
import torch

from itool.components import LossOutput, PreferenceBatch

NEEDS_REFERENCE = {"dpo": True, "ipo": True, "simpo": False, "orpo": False}


def batch(n: int = 4, *, with_reference: bool, requires_grad: bool = True) -> PreferenceBatch:
    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(3, 12, (2, n), generator=gen)
    policy = (-lengths * (0.5 + torch.rand(2, n, generator=gen))).requires_grad_(requires_grad)
    reference = policy.detach() + torch.randn(2, n, generator=gen) if with_reference else (None, None)
    return PreferenceBatch(policy[0], policy[1], lengths[0], lengths[1], reference[0], reference[1])


@pytest.mark.parametrize("name", sorted(NEEDS_REFERENCE))
def test_registered_with_its_reference_need(registry, name):
    assert registry.get("loss", name).attrs == {"needs_reference": NEEDS_REFERENCE[name]}


@pytest.mark.parametrize("name", sorted(NEEDS_REFERENCE))
def test_per_example_outputs_and_gradient_direction(registry, name):
    """Raising the chosen log-prob lowers every loss; raising the rejected one raises it."""
    loss = registry.get("loss", name)
    inputs = batch(with_reference=NEEDS_REFERENCE[name])
    out = loss.obj(inputs, loss.parse_options({}))

    assert isinstance(out, LossOutput)
    assert out.losses.shape == out.chosen_rewards.shape == out.rejected_rewards.shape == (4,)
    chosen_grad, rejected_grad = torch.autograd.grad(out.losses.sum(), [inputs.policy_chosen_logps,
                                                                         inputs.policy_rejected_logps])
    assert (chosen_grad < 0).all() and (rejected_grad > 0).all()
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


@pytest.mark.parametrize("name", ["simpo", "orpo"])
def test_reference_free_losses_never_read_a_reference(registry, name):
    loss = registry.get("loss", name)
    out = loss.obj(batch(with_reference=False, requires_grad=False), loss.parse_options({}))
    assert torch.isfinite(out.losses).all()


def test_unknown_option_is_one_clear_error(registry):
    from itool.errors import ItoolError

    with pytest.raises(ItoolError, match=r"loss\.options.*betta"):
        registry.get("loss", "simpo").parse_options({"betta": 2.0})
