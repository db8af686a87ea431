"""Small-batch linear layers: the loader switches the model to them, and they compute what nn.Linear does."""

from __future__ import annotations

import pytest
import torch

from itool.plugins.models.small_batch_linear import SmallBatchLinear, use_small_batch_linear


def test_the_loaded_model_decodes_with_small_batch_linear_layers(shared_policy):
    layers = [m for m in shared_policy.model.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(isinstance(m, SmallBatchLinear) for m in layers)


@pytest.mark.parametrize("rows", [1, 2, 3, 24, 48, 200])
@pytest.mark.parametrize("bias", [False, True])
def test_inference_gives_the_stock_result_for_any_number_of_rows(rows, bias):
    torch.manual_seed(0)
    stock = torch.nn.Linear(64, 96, bias=bias)
    fast = torch.nn.Linear(64, 96, bias=bias)
    fast.load_state_dict(stock.state_dict())
    use_small_batch_linear(fast)
    x = torch.randn(rows, 1, 64)
    with torch.inference_mode():
        assert torch.allclose(fast(x), stock(x), atol=1e-5)
        assert fast(x).shape == (rows, 1, 96) and fast(x).is_contiguous()


def test_training_runs_the_stock_layer_and_gradients_flow():
    layer = torch.nn.Linear(8, 4)
    use_small_batch_linear(layer)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
