"""Linear layers that decode a few rows at a time faster on the CPU (imported lazily).

At inference on 1–48 CPU float32 rows the layer runs ``small_linear`` from
:mod:`itool_cpu_kernels.cpu_kernels` (why: see there). Each output sums its products in the same
order whatever the number of rows, so a sequence decodes to the same numbers alone or in a batch; they
differ from MKL's by float rounding (about 1e-5). Training (gradients enabled), other devices and dtypes,
more rows (a prefill, where MKL is efficient), or no compiled kernels: the stock layer runs.
"""

from __future__ import annotations

from typing import Any

import torch

from itool_cpu_kernels.cpu_kernels import library

ROWS = range(1, 49)  # rows the kernel takes; more rows run the stock layer


def _fits(layer: torch.nn.Linear, x: torch.Tensor, rows: int) -> bool:
    return (rows in ROWS and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and layer.weight.dtype == torch.float32 and layer.weight.is_contiguous()
            and layer.in_features % 8 == 0
            and (layer.bias is None or (layer.bias.dtype == torch.float32 and layer.bias.is_contiguous())))


class SmallBatchLinear(torch.nn.Linear):
    """``nn.Linear`` whose inference on a few CPU rows runs the compiled kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        lib = library() if _fits(self, x, rows) else None
        if lib is None:
            return super().forward(x)
        flat = x.reshape(rows, x.shape[-1]).contiguous()
        out = flat.new_empty((rows, self.out_features))
        bias = self.bias.data_ptr() if self.bias is not None else None
        lib.small_linear(flat.data_ptr(), self.weight.data_ptr(), bias, out.data_ptr(), rows, self.out_features,
                         self.in_features)
        return out.reshape(*x.shape[:-1], self.out_features)


def use_small_batch_linear(model: Any) -> None:
    """Make every plain ``nn.Linear`` of ``model`` a :class:`SmallBatchLinear` (same weights, in place)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = SmallBatchLinear
