"""Attention that lets torch's kernel share grouped key/value heads at inference (imported lazily).

SmolLM2 has 9 query heads over 3 key/value heads. When several query positions attend under a mask
(a batched prefill: a search's answer prefixes over their prompts), transformers' ``sdpa`` function
first copies every key/value head once per query head that reads it. On the 2-core CPU that copy was
about a third of such a prefill (18 prompts × 474 positions: 1.1 GB written per forward pass).
``scaled_dot_product_attention(enable_gqa=True)`` reads the shared heads in place. With gradients
enabled (training) and for single-token decoding, which transformers already handles without the
copy, the stock function runs unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "itool_grouped_sdpa"


def grouped_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    grouped = key.shape[1] != query.shape[1]
    if not grouped or query.shape[2] == 1 or torch.is_grad_enabled() or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model: Any) -> None:
    """Switch a model that runs transformers' ``sdpa`` to :func:`grouped_sdpa` (same masks, same results)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
