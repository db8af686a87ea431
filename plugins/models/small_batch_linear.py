"""Linear layers that decode a few rows at a time faster on the CPU (imported lazily).

Decoding multiplies a handful of rows (one per sequence in the batch) by every weight matrix. For 2–48
rows MKL's ``x @ W.T`` (what ``nn.Linear`` runs) is far from streaming the weights once: on the 2-core
CPU, all 211 linear layers of SmolLM2-135M took 78–115 ms at 2–3 rows against 44–50 ms at one row. The
same product computed as ``(W @ x.T).T`` took 31–68 ms there, and was no slower up to 48 rows. It is the
same arithmetic in another order (results agree to float rounding). With gradients enabled (training),
off the CPU, in another dtype than float32 (not measured), or outside that row range, the stock layer
runs.
"""

from __future__ import annotations

from typing import Any

import torch

ROWS = range(2, 49)  # where the transposed product measured faster; one row and prefill keep the stock path


class SmallBatchLinear(torch.nn.Linear):
    """``nn.Linear`` whose inference on a few CPU rows runs as ``(W @ x.T).T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows not in ROWS or x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return super().forward(x)
        flat = x.reshape(rows, x.shape[-1]).t()
        out = (torch.addmm(self.bias[:, None], self.weight, flat) if self.bias is not None
               else torch.mm(self.weight, flat))
        return out.t().contiguous().reshape(*x.shape[:-1], self.out_features)


def use_small_batch_linear(model: Any) -> None:
    """Make every plain ``nn.Linear`` of ``model`` a :class:`SmallBatchLinear` (same weights, in place)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = SmallBatchLinear
