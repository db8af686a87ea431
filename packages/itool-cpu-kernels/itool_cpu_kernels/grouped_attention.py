"""Attention at inference that shares grouped key/value heads instead of copying them (imported lazily).

SmolLM2 has 9 query heads over 3 key/value heads.

- Several query positions under a mask (a batched prefill: a search's answer prefixes over their
  prompts): transformers' ``sdpa`` function first copies every key/value head once per query head that
  reads it. On the 2-core CPU that copy was about a third of such a prefill (18 prompts × 474 positions:
  1.1 GB written per forward pass). ``scaled_dot_product_attention(enable_gqa=True)`` reads the shared
  heads in place.
- One new position per sequence (decoding) on the CPU in float32: the compiled ``decode_attention``
  kernel (:mod:`itool_cpu_kernels.cpu_kernels`) reads each key/value head once for its query heads
  and skips padding.

With gradients enabled (training), with dropout, a position bias, a soft cap or attention sinks, and
where the kernel is not available, the stock function runs unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from itool_cpu_kernels.cpu_kernels import library

NAME = "itool_grouped_sdpa"
_CHANGES_ATTENTION = ("position_bias", "softcap", "s_aux", "sinks")  # arguments only the stock function honours


def grouped_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    stock = torch.is_grad_enabled() or dropout or any(kwargs.get(name) is not None for name in _CHANGES_ATTENTION)
    if not stock and query.shape[2] == 1:
        out = decode_attention(query, key, value, attention_mask, scaling)
        if out is not None:
            return out, None
    if stock or query.shape[2] == 1 or key.shape[1] == query.shape[1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                     scaling: float | None) -> torch.Tensor | None:
    """Attention of one position per sequence, ``[batch, 1, heads, dim]`` like transformers' functions
    return it, by the compiled kernel; ``None`` where it does not apply (the caller runs torch's)."""
    batch, heads, _, dim = query.shape
    groups, length = key.shape[1], key.shape[2]
    if (query.device.type != "cpu" or not all(t.dtype == torch.float32 for t in (query, key, value))
            or heads % groups or dim % 8 or dim > 256 or heads // groups > 8
            or any(t.stride(-1) != 1 or t.stride(-2) != dim for t in (key, value))):
        return None
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape[-1] != length or mask.numel() not in (length, batch * length):
            return None
        mask = mask.reshape(-1, length).expand(batch, length).contiguous()
    lib = library()
    if lib is None:
        return None
    q = query.reshape(batch, heads, dim).contiguous()
    out = q.new_empty((batch, 1, heads, dim))
    failed = lib.decode_attention(
        q.data_ptr(), key.data_ptr(), value.data_ptr(), mask.data_ptr() if mask is not None else None,
        out.data_ptr(), batch, groups, heads // groups, length, dim, key.stride(0), key.stride(1), value.stride(0),
        value.stride(1), scaling if scaling is not None else 1 / math.sqrt(dim))
    return None if failed else out


def use_grouped_attention(model: Any) -> None:
    """Switch a model that runs transformers' ``sdpa`` to :func:`grouped_sdpa` (same masks, same results)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
