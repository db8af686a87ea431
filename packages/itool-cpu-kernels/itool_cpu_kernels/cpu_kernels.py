"""Two small C kernels for decoding on the CPU (``cpu_kernels.c``), built once per machine (imported lazily).

Decoding runs a handful of rows (one per sequence in the batch) through the model, and there torch's
CPU kernels are far from what the hardware allows. On the 2-core AVX2 CPU:

- linear layers: MKL's ``x @ W.T`` (``nn.Linear``) should stream the weights once, at about the cost of
  one row, but all 211 layers of SmolLM2-135M took 52–79 ms at 2–3 rows against 32–38 ms at one.
  MKL, OpenBLAS (numpy), oneDNN and MKL's packed GEMM were all measured and none streams the weights for
  a few rows; FBGEMM's fp16 path does, but rounds the weights. ``small_linear``: 17–20 ms at 1–3 rows,
  49 ms at 24 rows (``nn.Linear``: 31–38, 61–79 and 65–99 ms).
- attention of the new token over the cache: torch's kernel reads the keys and values once per query
  head, padding included. ``decode_attention`` reads them once per key/value head (SmolLM2: 3 query heads
  each) and skips padding: 24 rows × 600 positions in 1.2 ms per layer against 2.0, and a whole
  decode step of those rows in 169 ms against 212.

So this module compiles the kernels with the system C compiler (``-march=native``: for this machine's
CPU), caches the library under ``$ITOOL_CACHE/kernels`` (default ``~/.cache/itool/kernels``, beside the
converted default model) keyed by source, compiler and CPU flags, and
loads it with ``ctypes``. Without a compiler the callers run torch's kernels, after one log line.
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
from pathlib import Path

from itool.cache import cache_root
from itool.rundir import atomic_path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
LIBRARIES = ["-lm"]  # after the source, where the linker looks for what it still needs


def _cpu_flags() -> str:
    """The CPU's feature flags: ``-march=native`` builds for them, so they are part of the cache key."""
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor()


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` where they cannot be built (one log line why).

    Load it after torch: the kernels' OpenMP is then the runtime torch loaded (same library name), so
    they use torch's threads and thread count instead of a second pool competing for the cores."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("cpu kernels: no C compiler found; decoding uses torch's kernels")
        return None
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join([compiler, *FLAGS, *LIBRARIES]).encode(),
                                     _cpu_flags().encode(), platform.machine().encode()])).hexdigest()[:16]
    path = cache_root() / "kernels" / f"cpu_kernels-{key}.so"
    try:
        if not path.exists():
            with atomic_path(path) as built:  # another process never loads a half-written file
                subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), *LIBRARIES], check=True,
                               capture_output=True)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as error:
        stderr = (getattr(error, "stderr", None) or b"").decode(errors="replace").strip()
        log.info("cpu kernels: could not build them (%s); decoding uses torch's kernels",
                 stderr.splitlines()[-1] if stderr else error)
        return None
    lib.small_linear.restype = None
    lib.small_linear.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 3
    lib.decode_attention.restype = ctypes.c_int
    lib.decode_attention.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_long] * 9 + [ctypes.c_float]
    return lib
