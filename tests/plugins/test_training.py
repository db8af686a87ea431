"""The shared training machinery: the tokenisation convention, completion log-probs, the seeded order and LoRA."""

from __future__ import annotations

import pytest
import torch

from itool.plugins.training import IGNORE_INDEX, collate, completion_batch, encode_pair, sequence_logps, shuffled_epochs


def test_prompt_and_completion_are_tokenised_separately_and_concatenated(shared_policy):
    tok = shared_policy.tokenizer
    prompt_ids, completion_ids = encode_pair(tok, "<|im_start|>assistant\n", "[f(x=1)]")
    assert prompt_ids == tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert completion_ids == tok("[f(x=1)]", add_special_tokens=False)["input_ids"]


def test_truncation_keeps_the_completion_and_the_end_of_the_prompt(shared_policy):
    tok = shared_policy.tokenizer
    full_prompt, completion = encode_pair(tok, "one two three four five six seven eight", "[f(x=1)]")
    prompt_ids, completion_ids = encode_pair(tok, "one two three four five six seven eight", "[f(x=1)]",
                                             max_length=len(completion) + 3)
    assert completion_ids == completion and prompt_ids == full_prompt[-3:]


def test_labels_cover_the_completion_only_and_rows_are_left_padded_keeping_their_positions():
    batch = collate([([1, 2, 3], [4, 5]), ([6], [7])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [0, 0, 0, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 0, 1]]
    x = IGNORE_INDEX
    assert batch["labels"].tolist() == [[x, x, x, 4, 5], [x, x, x, x, 7]]


def test_sequence_logps_sum_the_completion_token_logprobs_of_each_row(shared_policy):
    tok, model = shared_policy.tokenizer, shared_policy.model
    prompts, completions = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "Q: 1+1?\nA:"], ["Hello!", " 2"]
    with torch.no_grad():
        logps, counts = sequence_logps(model, completion_batch(tok, prompts, completions))
        for row, (prompt, completion) in enumerate(zip(prompts, completions)):
            p_ids, c_ids = encode_pair(tok, prompt, completion)
            all_logps = model(torch.tensor([p_ids + c_ids])).logits[0].float().log_softmax(-1)
            expected = sum(all_logps[len(p_ids) + i - 1, t].item() for i, t in enumerate(c_ids))
            assert counts[row].item() == len(c_ids)
            assert logps[row].item() == pytest.approx(expected, abs=1e-3)


def test_a_padded_batch_trains_with_finite_gradients_equal_to_each_row_alone(fresh_policy_fp32):
    """On the float32 model: padding equivalence at float32 tolerance (bf16 rounds differently per batch
    shape); bf16 training stays covered by the trainer and warm-up tests."""
    from itool.plugins.training import add_lora

    tok = fresh_policy_fp32.tokenizer
    model = add_lora(fresh_policy_fp32.model, seed=0, r=4, alpha=8, dropout=0.0)
    prompts, completions = ["A long question about the weather in Paris today?", "Hi?"], ["Sunny.", "Hello there, friend!"]

    def grads(rows):
        model.zero_grad()
        logps, _ = sequence_logps(model, completion_batch(tok, [prompts[i] for i in rows], [completions[i] for i in rows]))
        logps.sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    together = grads([0, 1])
    apart = [a + b for a, b in zip(grads([0]), grads([1]))]
    assert all(torch.isfinite(g).all() for g in together)
    assert any(g.abs().sum() > 0 for g in together)
    for g, h in zip(together, apart):
        assert torch.allclose(g, h, atol=1e-4, rtol=1e-3)


def test_shuffled_epochs_visit_every_item_once_per_epoch_in_a_seeded_order():
    order = shuffled_epochs(range(10), epochs=3, seed=1)
    assert [sorted(order[i * 10:(i + 1) * 10]) for i in range(3)] == [list(range(10))] * 3
    assert order == shuffled_epochs(range(10), epochs=3, seed=1) != shuffled_epochs(range(10), epochs=3, seed=2)
