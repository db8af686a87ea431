"""Small-batch linear layers: the plugin switches a loaded model to them, they compute what nn.Linear does,
and where the compiled kernel does not apply they are the stock layer."""

from __future__ import annotations

import pytest
import torch

from itool_cpu_kernels.small_batch_linear import SmallBatchLinear, use_small_batch_linear


def fast_copy(stock: torch.nn.Linear) -> torch.nn.Linear:
    fast = torch.nn.Linear(stock.in_features, stock.out_features, bias=stock.bias is not None)
    fast.load_state_dict(stock.state_dict())
    use_small_batch_linear(fast)
    return fast


def test_the_loaded_model_uses_them(kernel_policy):
    layers = [m for m in kernel_policy.model.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(isinstance(m, SmallBatchLinear) for m in layers)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 24, 48, 200])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("outputs", [96, 97])  # 97: a multiple of the kernel's 6-row blocks plus 1
def test_inference_gives_the_stock_result_for_any_number_of_rows(rows, bias, outputs):
    torch.manual_seed(0)
    stock = torch.nn.Linear(64, outputs, bias=bias)
    fast = fast_copy(stock)
    x = torch.randn(rows, 1, 64)
    with torch.inference_mode():
        assert torch.allclose(fast(x), stock(x), atol=1e-5)
        assert fast(x).shape == (rows, 1, outputs) and fast(x).is_contiguous()


def test_a_row_gives_the_same_numbers_alone_and_in_a_batch():
    torch.manual_seed(0)
    fast = fast_copy(torch.nn.Linear(576, 1536))
    batch = torch.randn(24, 576)
    with torch.inference_mode():
        together = fast(batch)
        assert all(torch.equal(fast(batch[k:k + 1]), together[k:k + 1]) for k in range(24))
        assert torch.equal(fast(batch[5:12]), together[5:12])


@pytest.mark.parametrize("inputs, dtype", [(60, torch.float32), (64, torch.bfloat16)])
def test_shapes_and_dtypes_the_kernel_does_not_take_run_the_stock_layer(inputs, dtype):
    """60 inputs: not a multiple of 8. bfloat16: the kernel is float32 only."""
    torch.manual_seed(0)
    stock = torch.nn.Linear(inputs, 94).to(dtype)
    x = torch.randn(3, inputs, dtype=dtype)
    with torch.inference_mode():
        assert torch.equal(fast_copy(stock).to(dtype)(x), stock(x))


def test_training_runs_the_stock_layer_and_gradients_flow():
    layer = torch.nn.Linear(8, 4)
    use_small_batch_linear(layer)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
