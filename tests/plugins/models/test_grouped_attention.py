"""Grouped-head attention: the loader switches the model to it, and it computes what transformers' sdpa does."""

from __future__ import annotations

import torch

from itool.plugins.models.grouped_attention import NAME


def test_the_loaded_model_uses_grouped_attention(shared_policy):
    assert shared_policy.model.config._attn_implementation == NAME


def test_a_padded_batched_prefill_gives_the_stock_sdpa_logits(shared_policy):
    """Left-padded prompts of different lengths under a mask: where the stock function copies heads."""
    model, tokenizer = shared_policy.model, shared_policy.tokenizer
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


def test_training_keeps_gradients_flowing_through_the_stock_path(shared_policy):
    model, tokenizer = shared_policy.model, shared_policy.tokenizer
    batch = tokenizer(["Hello there", "A longer second prompt here"], return_tensors="pt", padding=True)
    embeddings = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    model(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits.sum().backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    model.zero_grad(set_to_none=True)
