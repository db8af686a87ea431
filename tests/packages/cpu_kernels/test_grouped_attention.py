"""Grouped-head attention: the plugin switches a loaded model to it, and it computes what transformers' sdpa does,
in a batched prefill and when decoding (the compiled kernel)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from itool_cpu_kernels.grouped_attention import NAME, decode_attention
from itool.plugins.models.transformers_loader import cache_keyword


def test_the_loaded_model_uses_grouped_attention(kernel_policy):
    assert kernel_policy.model.config._attn_implementation == NAME


def test_a_padded_batched_prefill_gives_the_stock_sdpa_logits(kernel_policy):
    """Left-padded prompts of different lengths under a mask: where the stock function copies heads."""
    model, tokenizer = kernel_policy.model, kernel_policy.tokenizer
    batch = tokenizer(["What is the capital of France?", "Name three prime numbers, please, and explain why."],
                      return_tensors="pt", padding=True)
    with torch.inference_mode():
        grouped = model(**batch).logits
        model.set_attn_implementation("sdpa")
        try:
            stock = model(**batch).logits
        finally:
            model.set_attn_implementation(NAME)
    real = batch["attention_mask"].bool()
    assert torch.allclose(grouped[real], stock[real], atol=1e-4)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("query_heads,kv_heads", [(9, 3), (4, 4)])
def test_decoding_attention_matches_torch_on_a_strided_cache(masked, query_heads, kv_heads):
    torch.manual_seed(0)
    buffer = torch.randn(2, 5, kv_heads, 40, 64)  # room beyond the 30 used positions, as a decode cache has
    keys, values = buffer[0, :, :, :30], buffer[1, :, :, :30]
    query = torch.randn(5, query_heads, 1, 64)
    mask = torch.ones(5, 1, 1, 30, dtype=torch.bool)
    if masked:
        mask[1, ..., :12] = False  # left padding
        mask[3, ..., :29] = False
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, keys, values, attn_mask=mask if masked else None, scale=0.1, enable_gqa=True).transpose(1, 2)
    with torch.inference_mode():
        got = decode_attention(query, keys, values, mask if masked else None, 0.1)
    assert got is not None and got.shape == (5, 1, query_heads, 64)
    assert torch.allclose(got, expected, atol=1e-5)


def test_decoding_gives_the_stock_sdpa_logits(kernel_policy, monkeypatch):
    """A padded batch decoding one token on a prefilled cache: the kernel's logits against stock sdpa's."""
    from itool_cpu_kernels import grouped_attention

    ran = []
    monkeypatch.setattr(grouped_attention, "decode_attention",
                        lambda *args: ran.append(decode_attention(*args)) or ran[-1])
    model, tokenizer = kernel_policy.model, kernel_policy.tokenizer
    batch = tokenizer(["What is the capital of France?", "Name three prime numbers, please, and explain why."],
                      return_tensors="pt", padding=True)
    mask = torch.cat([batch["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
    logits = {}
    with torch.inference_mode():
        for name in (NAME, "sdpa"):
            model.set_attn_implementation(name)
            try:
                cache = DynamicCache()
                model(**batch, use_cache=True, **{cache_keyword(model): cache})
                logits[name] = model(input_ids=torch.tensor([[42], [42]]), attention_mask=mask,
                                     position_ids=positions, use_cache=True, **{cache_keyword(model): cache}).logits
            finally:
                model.set_attn_implementation(NAME)
    assert torch.allclose(logits[NAME], logits["sdpa"], atol=1e-4)
    assert len(ran) == model.config.num_hidden_layers and all(out is not None for out in ran)


def test_the_decoding_kernel_declines_bfloat16():
    """The C kernel is float32 only: in bfloat16 the caller runs torch's function."""
    query, keys = torch.randn(2, 9, 1, 64, dtype=torch.bfloat16), torch.randn(2, 3, 5, 64, dtype=torch.bfloat16)
    assert decode_attention(query, keys, keys.clone(), None, None) is None


def test_training_keeps_gradients_flowing_through_the_stock_path(kernel_policy):
    model, tokenizer = kernel_policy.model, kernel_policy.tokenizer
    batch = tokenizer(["Hello there", "A longer second prompt here"], return_tensors="pt", padding=True)
    embeddings = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    model(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits.sum().backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    model.zero_grad(set_to_none=True)
