"""Linear layers that decode a few rows at a time faster on the CPU (imported lazily).

Decoding multiplies a handful of rows (one per sequence in the batch) by every weight matrix, so the
weights should stream from memory once at about the speed of one row. MKL's ``x @ W.T`` (what
``nn.Linear`` runs) is far from that for 2–48 rows: on the 2-core CPU all 211 linear layers of
SmolLM2-135M took 52–79 ms at 2–3 rows against 32–38 ms at one. MKL, OpenBLAS (numpy), oneDNN and
MKL's packed GEMM were all measured there and none streams the weights for a few rows; FBGEMM's fp16
path does, but rounds the weights. So this module compiles a small C kernel (``small_batch_linear.c``)
with the system C compiler, once per machine, and calls it through ``ctypes``: 17–28 ms at 1–3 rows,
68 ms at 24 (torch: 99). No compiler, or a layer it cannot take (see ``_fits``): the stock layer runs.
So do training (gradients enabled), other devices and dtypes, and more than 48 rows (a prefill, where
MKL is efficient).

Each output sums its products in the same order whatever the number of rows, so a sequence decodes
to the same numbers alone or in a batch; they differ from MKL's by float rounding (about 1e-5 here).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

ROWS = range(1, 49)  # rows the kernel takes; more rows run the stock layer
SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "itool" / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags: ``-march=native`` builds for them, so they are part of the cache key."""
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor()


@functools.cache
def kernel() -> Any | None:
    """The compiled ``small_linear`` function, built on first use and cached; ``None`` where it cannot be
    built (no C compiler, not Linux/macOS), after one log line saying why."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("small-batch linear: no C compiler found; decoding uses the stock linear layers")
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join([compiler, *FLAGS]).encode(), _cpu_flags().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    library = _cache_dir() / f"small_batch_linear-{key}.so"
    try:
        if not library.exists():
            library.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
                built = Path(tmp) / library.name
                subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], check=True, capture_output=True)
                built.replace(library)  # atomic: another process never loads a half-written file
        function = ctypes.CDLL(str(library)).small_linear
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or str(error).encode()
        log.info("small-batch linear: could not build the kernel (%s); decoding uses the stock linear layers",
                 detail.decode(errors="replace").strip().splitlines()[-1] if detail.strip() else error)
        return None
    function.restype = None
    function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3
    return function


def _fits(layer: torch.nn.Linear, x: torch.Tensor, rows: int) -> bool:
    return (rows in ROWS and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and layer.weight.dtype == torch.float32 and layer.weight.is_contiguous()
            and layer.in_features % 8 == 0
            and (layer.bias is None or (layer.bias.dtype == torch.float32 and layer.bias.is_contiguous())))


class SmallBatchLinear(torch.nn.Linear):
    """``nn.Linear`` whose inference on a few CPU rows runs the compiled kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        function = kernel() if _fits(self, x, rows) else None
        if function is None:
            return super().forward(x)
        flat = x.reshape(rows, x.shape[-1]).contiguous()
        out = flat.new_empty((rows, self.out_features))
        bias = self.bias.data_ptr() if self.bias is not None else None
        function(flat.data_ptr(), self.weight.data_ptr(), bias, out.data_ptr(), rows, self.out_features,
                 self.in_features)
        return out.reshape(*x.shape[:-1], self.out_features)


def use_small_batch_linear(model: Any) -> None:
    """Make every plain ``nn.Linear`` of ``model`` a :class:`SmallBatchLinear` (same weights, in place)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = SmallBatchLinear
