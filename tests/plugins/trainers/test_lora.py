"""The lora trainer on real BFCL pairs with the real model: a few steps raise the preference margin, a
reference pass runs only for losses that need one (once, then from the cache), and the adapter is
saved in PEFT format and merged into the policy."""

from __future__ import annotations

import pytest
import torch

from itool.components import PreferenceBatch
from itool.plugins.training import score_completions

# Small enough for a default test on 2 cores: the prompt keeps its last tokens (question and answer start).
TINY = {"lr": 2e-3, "epochs": 2, "batch_size": 3, "max_length": 40}


def scores(policy, pairs):
    """Summed log-probs and token counts of the chosen and rejected answers under ``policy`` as it is now."""
    rows = score_completions(policy.model, policy.tokenizer, [p.prompt for p in pairs] * 2,
                             [p.chosen for p in pairs] + [p.rejected for p in pairs], max_length=TINY["max_length"])
    logps, counts = torch.tensor([s for s, _ in rows]), torch.tensor([c for _, c in rows])
    n = len(pairs)
    return logps[:n], logps[n:], counts[:n], counts[n:]


def count_forwards(model) -> list[bool]:
    """Record, for every forward pass of ``model``, whether gradients were on (training) or off (reference)."""
    calls: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(torch.is_grad_enabled()))
    return calls


def test_both_answers_continue_from_one_pass_over_their_prompt_as_if_scored_apart(fresh_policy_fp32):
    """A pair's prompt goes through the model once and both answers continue from its key/value cache:
    the log-probs, counts and LoRA gradients equal those of the two full sequences scored apart (prompts
    and answers of different lengths, so both paddings are exercised)."""
    from itool.plugins.trainers.lora import forward_pairs
    from itool.plugins.training import add_lora, collate, sequence_logps

    tok = fresh_policy_fp32.tokenizer
    model = add_lora(fresh_policy_fp32.model, seed=0, r=4, alpha=8, dropout=0.0)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    encoded = [(ids("A long question about the weather in Paris today?"), ids("[weather(city='Paris')]"), ids("Sunny.")),
               (ids("Hi?"), ids("Hello!"), ids("[greet(name='you', times=2)]"))]

    def gradients(chosen, rejected):
        model.zero_grad()
        (chosen.sum() - 2 * rejected.sum()).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    pc, pr, nc, nr = forward_pairs(model, encoded, tok.pad_token_id, "cpu")
    shared = gradients(pc, pr)
    apart, counts = sequence_logps(model, collate([(p, c) for p, c, _ in encoded] + [(p, r) for p, _, r in encoded],
                                                  tok.pad_token_id))
    separate = gradients(apart[:2], apart[2:])

    torch.testing.assert_close(torch.cat([pc, pr]), apart, rtol=1e-5, atol=1e-4)
    assert torch.cat([nc, nr]).tolist() == counts.tolist() == [len(a) for a in [e[1] for e in encoded] + [e[2] for e in encoded]]
    for got, expected in zip(shared, separate, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=5e-4)  # float32 sums in another order


def test_both_answers_share_the_end_of_the_prompt_that_fits_beside_the_longer_one(shared_policy, make_bfcl_pairs):
    from itool.plugins.trainers.lora import encode_pairs
    from itool.plugins.training import encode_pair

    tok = shared_policy.tokenizer
    pair = make_bfcl_pairs(tok, 1)[0]
    longer = max(pair.chosen, pair.rejected, key=lambda text: len(tok(text)["input_ids"]))
    [(prompt, chosen, rejected)], dropped = encode_pairs(tok, [pair], 40)
    assert dropped == 0 and prompt == encode_pair(tok, pair.prompt, longer, 40)[0]
    assert len(prompt) + max(len(chosen), len(rejected)) == 40


@pytest.mark.parametrize("loss_name", ["simpo", "dpo"])
def test_training_raises_the_preference_margin(make_ctx, make_bfcl_pairs, loss_name):
    ctx = make_ctx(loss=loss_name, trainer={"name": "lora", "options": TINY})
    ctx.stage = "round1.train"
    policy = ctx.policy
    pairs = make_bfcl_pairs(policy.tokenizer, 3)
    before = scores(policy, pairs)
    forwards = count_forwards(policy.model)
    trainer, opts = ctx.component("trainer")

    result = trainer.obj(ctx, pairs, opts)
    reference_passes = forwards.count(False)  # forwards without gradients during training

    loss, loss_opts = ctx.component("loss")
    after = scores(policy, pairs)
    # Rewards as the loss defines them; the reference is the policy before training.
    margin = lambda s: loss.obj(PreferenceBatch(*s, before[0], before[1]), loss_opts)  # noqa: E731
    before_margin = (margin(before).chosen_rewards - margin(before).rejected_rewards).mean().item()
    after_margin = (margin(after).chosen_rewards - margin(after).rejected_rewards).mean().item()
    assert after_margin > before_margin + 0.05, (before_margin, after_margin)

    if loss_name == "dpo":
        assert result["reference"] == "computed" and reference_passes == 2  # one batch of 3: prompts, then answers
        assert (ctx.stage_dir / "reference_logps.pt").is_file()
    else:
        assert result["reference"] == "none" and reference_passes == 0
        assert not (ctx.stage_dir / "reference_logps.pt").exists()
    assert result["steps"] == 2 and result["pairs"] == 3 and len(result["epochs"]) == 2
    assert (ctx.stage_dir / "adapter" / "adapter_config.json").is_file()
    assert not hasattr(policy.model, "peft_config")  # merged: a plain model again
    assert list((ctx.stage_dir / "tensorboard").glob("events.out.tfevents.*"))  # the default reporter
    assert not (ctx.stage_dir / "checkpoints").exists()  # gone once the adapter is saved
    epochs = [m for m in ctx.run.metrics() if m["event"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2] and {"loss", "reward_margin", "accuracy"} <= set(epochs[0])
    steps = [m for m in ctx.run.metrics() if m["event"] == "step"]
    assert [m["step"] for m in steps] == [1, 2] and {"loss", "lr", "grad_norm", "reward_margin", "accuracy"} <= set(steps[0])


def test_a_token_cap_runs_each_pair_in_its_own_pass_with_the_same_first_step(make_ctx, make_bfcl_pairs):
    """``micro_batch_tokens`` bounds memory: at 80 (a pair's 40 tokens of prompt and answer, plus its
    answers' second side) every pair is its own pass (two forwards: the prompts, then the answers); the
    first step, on the untouched policy, sees the same losses as one pass of three.
    ORPO is the loss that checks the weighting: its NLL is one token mean over the whole micro-batch, which
    each part must still get its exact share of (weighting parts by their share of pairs was 0.4-3.4% off).
    (Later steps are not compared: Adam's first updates are ±lr wherever a gradient is near zero, so
    float noise between one pass and three flips them.)"""
    runs = []
    for name, cap in (("whole", {}), ("capped", {"micro_batch_tokens": 80})):
        ctx = make_ctx(name=name, loss="orpo", dtype="float32",
                       trainer={"name": "lora", "options": {**TINY, **cap, "report_to": []}})
        ctx.stage = "round1.train"
        forwards = count_forwards(ctx.policy.model)
        trainer, opts = ctx.component("trainer")
        result = trainer.obj(ctx, make_bfcl_pairs(ctx.policy.tokenizer, 3), opts)
        first_step = next(m for m in ctx.run.metrics() if m["event"] == "step")
        runs.append((forwards.count(True), result["steps"], result["epochs"][0], first_step))
    (whole_passes, whole_steps, whole_epoch, whole_step), (passes, steps, epoch, step) = runs
    assert (whole_passes, passes) == (4, 12) and whole_steps == steps == 2
    assert epoch["loss"] == pytest.approx(whole_epoch["loss"], rel=1e-5)
    assert epoch["reward_margin"] == pytest.approx(whole_epoch["reward_margin"], rel=1e-5, abs=1e-5)
    assert step["loss"] == pytest.approx(whole_step["loss"], rel=1e-5)
    assert step["grad_norm"] == pytest.approx(whole_step["grad_norm"], rel=1e-4)


def test_the_same_training_in_fresh_contexts_gives_a_byte_identical_adapter(make_ctx, make_bfcl_pairs):
    """The LoRA initialisation and the Trainer's seeds come from the stage seed: a re-run of the stage in
    a fresh context (as ``--resume`` does in a fresh process) writes exactly the same adapter file."""
    adapters = []
    for name in ("first", "again"):
        ctx = make_ctx(name=name, loss="simpo", dtype="float32",
                       trainer={"name": "lora", "options": {**TINY, "epochs": 1, "report_to": []}})
        ctx.stage = "round1.train"
        trainer, opts = ctx.component("trainer")
        trainer.obj(ctx, make_bfcl_pairs(ctx.policy.tokenizer, 3), opts)
        adapters.append((ctx.stage_dir / "adapter" / "adapter_model.safetensors").read_bytes())
    assert adapters[0] == adapters[1]


def test_a_rerun_of_the_stage_reuses_the_cached_reference(make_ctx, make_bfcl_pairs):
    from itool.plugins.trainers.lora import encode_pairs, reference_logps
    from itool.plugins.training import add_lora

    ctx = make_ctx(loss="dpo")
    ctx.stage = "round1.train"
    pairs = make_bfcl_pairs(ctx.policy.tokenizer, 2)
    encoded, dropped = encode_pairs(ctx.policy.tokenizer, pairs, 40)
    peft_model = add_lora(ctx.policy.model, seed=0)
    forwards = count_forwards(ctx.policy.model)

    first = reference_logps(ctx, peft_model, encoded, batch_size=2)
    second = reference_logps(ctx, peft_model, encoded, batch_size=2)
    other = reference_logps(ctx, peft_model, encoded[:1], batch_size=2)  # different pairs: not from the cache

    assert dropped == 0 and (first[2], second[2], other[2]) == (False, True, False)
    assert len(forwards) == 4  # two computed references, each a pass over the prompts and one over the answers
    torch.testing.assert_close(first[:2], second[:2])
    # the same pair alone in its batch: in bfloat16 (native on AVX512-BF16) less padding rounds otherwise
    alone = {} if ctx.policy.dtype == torch.float32 else {"rtol": 3e-2, "atol": 0.0}
    torch.testing.assert_close(other[0], first[0][:1], **alone)
