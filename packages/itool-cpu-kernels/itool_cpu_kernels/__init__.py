"""Opt-in CPU kernels for itool's model loaders: two small C kernels for decoding in float32 on a CPU
(:mod:`.cpu_kernels`), the linear layers that run one of them (:mod:`.small_batch_linear`), and an
attention function that reads grouped key/value heads in place (:mod:`.grouped_attention`).

Installing this package is the opt-in: itool finds it through the entry-point group ``itool`` and calls
:func:`model_loaded` for every model a loader loads. It needs a C compiler at run time (without one,
torch's kernels run after one log line). On a CPU in bfloat16 only the attention's batched prefill
changes (the C kernels are float32 only); on other devices it changes nothing.
"""

from __future__ import annotations

from typing import Any

from itool import hookimpl


@hookimpl
def model_loaded(model: Any) -> None:
    """Switch a CPU model to the kernels (same weights, same results up to float rounding)."""
    if model.device.type != "cpu":
        return
    from itool_cpu_kernels.grouped_attention import use_grouped_attention
    from itool_cpu_kernels.small_batch_linear import use_small_batch_linear

    use_grouped_attention(model)
    use_small_batch_linear(model)
