"""Training throughput: the ``transformers.Trainer`` stack against the hand-written loop it replaced.

The same preference pairs (real BFCL answers against the same call with one wrong value) and the same
warm-up samples, from the same base weights, trained in one process by

- trainer: the ``lora`` trainer and the ``curriculum`` warm-up as the loop calls them (Trainer,
  accelerate, TensorBoard events, checkpoint bookkeeping);
- baseline: the loop itself (kept here, since the library no longer has it): a plain AdamW loop over
  the same micro-batches, with the same tokenisation, log-probs, loss plugin and LoRA.

Runs alternate (baseline, trainer, baseline, trainer...) so drift in the machine's load hits both.
Prints answer+prompt tokens per second of each run, each side's best, and the trainer/baseline ratio.

    .venv/bin/python benchmarks/train_throughput.py --pairs 16 --samples 32 --repeats 2

The Trainer costs about 1.4 s more per training stage than the plain loop, whatever its length
(profiled on the 2-core test CPU: accelerate's ``free_memory``, which runs ``gc.collect``, ~0.5 s;
``Trainer._prepare_for_training`` ~0.35 s; the logging and checkpoint callbacks ~0.6 s), so a run of a
few steps measures that fixed cost more than training speed: 8 warm-up samples (4 steps) gave 0.92-0.96,
32 samples (16 steps) 0.99. The defaults are sized to measure the steady state. On that shared VM one
run differs from the next by up to 10%, so read the ratio of the best runs, not of single runs.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from itool.components import PreferenceBatch
from itool.config import build_config
from itool.context import RunContext, stable_subset
from itool.registry import Registry
from itool.rundir import RunDir
from itool.schemas import PreferencePair


# -- the old loop (baseline) ---------------------------------------------------------------------------
@dataclass
class LoopSettings:
    lr: float
    batch_size: int
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0


def fitting(items: list, tokens: Callable[[Any], int] | None, max_tokens: int | None) -> Iterator[list]:
    if tokens is None or max_tokens is None:
        yield items
        return
    part, longest = [], 0
    for item in items:
        size = tokens(item)
        if part and (len(part) + 1) * max(longest, size) > max_tokens:
            yield part
            part, longest = [], 0
        part.append(item)
        longest = max(longest, size)
    yield part


def train_loop(model: Any, examples: Sequence, loss_fn: Callable, settings: LoopSettings, dtype: torch.dtype,
               tokens: Callable | None = None, max_tokens: int | None = None) -> int:
    """The replaced loop: AdamW, linear warm-up/decay, clipping, parts weighted by their share of examples."""
    from transformers import get_linear_schedule_with_warmup

    from itool.plugins.training import autocast

    micro = [list(examples[i: i + settings.batch_size]) for i in range(0, len(examples), settings.batch_size)]
    total = max(1, math.ceil(len(micro) / settings.grad_accum))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(settings.warmup_ratio * total), total)
    device = next(model.parameters()).device
    model.train()
    steps, in_step = 0, 0
    for index, items in enumerate(micro):
        for part in fitting(items, tokens, max_tokens):
            with autocast(dtype, device):
                loss, _ = loss_fn(model, part)
            (loss * len(part) / len(items) / settings.grad_accum).backward()
        in_step += 1
        if in_step == settings.grad_accum or index == len(micro) - 1:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            steps, in_step = steps + 1, 0
    model.eval()
    return steps


def baseline_preference(ctx: RunContext, pairs: list[PreferencePair], opts: Any) -> None:
    from itool.plugins.trainers.lora import encode_pairs, forward_pairs, pair_tokens
    from itool.plugins.training import add_lora, save_and_merge, shuffled_epochs

    loss, loss_opts = ctx.component("loss")
    policy = ctx.policy
    encoded, _ = encode_pairs(policy.tokenizer, pairs, opts.max_length)
    seed = ctx.stage_seed(ctx.stage)
    peft_model = add_lora(policy.model, seed=seed, r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout)
    order = shuffled_epochs(range(len(encoded)), opts.epochs, seed)

    def step(model: Any, rows: list[int]):
        pc, pr, lc, lr = forward_pairs(model, [encoded[i] for i in rows], policy.tokenizer.pad_token_id, policy.device)
        out = loss.obj(PreferenceBatch(pc, pr, lc, lr), loss_opts)
        return out.losses.mean(), {}

    train_loop(peft_model, order, step, LoopSettings(lr=opts.lr, batch_size=opts.batch_size), policy.dtype,
               tokens=lambda i: pair_tokens(encoded[i]), max_tokens=opts.micro_batch_tokens)
    save_and_merge(policy, peft_model, ctx.stage_dir / "adapter")


def baseline_warmup(ctx: RunContext, samples: list, opts: Any) -> None:
    from itool.plugins.training import add_lora, completion_batch, save_and_merge, sequence_logps
    from itool.plugins.warmups.curriculum import examples_of, heldout_loss, training_order

    policy = ctx.policy
    seed = ctx.stage_seed(ctx.stage)
    order = training_order(examples_of(ctx, samples), opts.epochs, seed, curriculum=True)
    heldout_loss(ctx, opts)
    peft_model = add_lora(policy.model, seed=seed, r=opts.lora_r, alpha=opts.lora_alpha, dropout=opts.lora_dropout)

    def step(model: Any, items: list):
        batch = completion_batch(policy.tokenizer, [e.prompt for e in items], [e.target for e in items],
                                 max_length=opts.max_length, device=policy.device)
        logps, counts = sequence_logps(model, batch)
        return -logps.sum() / counts.sum().clamp(min=1), {}

    train_loop(peft_model, order, step, LoopSettings(lr=opts.lr, batch_size=opts.batch_size,
                                                     warmup_ratio=opts.warmup_ratio), policy.dtype)
    save_and_merge(policy, peft_model, ctx.stage_dir / "adapter")
    heldout_loss(ctx, opts)


# -- the benchmark -------------------------------------------------------------------------------------
def bfcl_pairs(ctx: RunContext, n: int) -> list[PreferencePair]:
    """The accepted answer against the same call with its first argument's value changed."""
    def wrong(value: Any) -> Any:
        return (not value) if isinstance(value, bool) else value * 3 + 7 if isinstance(value, (int, float)) \
            else f"{value} unknown"

    pairs = []
    for sample in ctx.samples("train"):
        if not sample.answer or not sample.answer[0].arguments:
            continue
        first = sample.answer[0]
        name, value = next(iter(first.arguments.items()))
        rejected = [first.model_copy(update={"arguments": {**first.arguments, name: wrong(value)}}), *sample.answer[1:]]
        prompt = ctx.format.render_prompt(sample, ctx.policy.tokenizer)
        pairs.append(PreferencePair(prompt=prompt, chosen=ctx.format.render_answer(sample.answer),
                                    rejected=ctx.format.render_answer(rejected), sample_id=sample.id))
    return pairs[:n]


def token_count(tokenizer: Any, texts: list[tuple[str, str]], max_length: int, epochs: int) -> int:
    from itool.plugins.training import encode_pair

    return epochs * sum(len(p) + len(c) for p, c in (encode_pair(tokenizer, *t, max_length) for t in texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    runs = tempfile.mkdtemp(prefix="train-bench-")
    trainer_opts = {"epochs": args.epochs, "max_length": args.max_length, "batch_size": 4}
    warmup_opts = {"epochs": args.epochs, "max_length": args.max_length, "batch_size": 2, "eval_samples": 1}
    config = build_config([{"runs_dir": runs, "name": "bench", "dtype": args.dtype, "train_limit": max(args.samples, 64),
                            "loss": "simpo", "trainer": {"name": "lora", "options": trainer_opts},
                            "warmup": {"name": "curriculum", "options": warmup_opts}}])
    ctx = RunContext(config, Registry(), run=None)
    ctx.run = RunDir.create(config.runs_dir, config.name)
    policy = ctx.policy
    base = copy.deepcopy(policy.model)
    pairs = bfcl_pairs(ctx, args.pairs)
    samples = stable_subset(ctx.samples("train"), args.samples)
    trainer, trainer_options = ctx.component("trainer")
    warmup, warmup_options = ctx.component("warmup")
    tok = policy.tokenizer
    pair_tokens = token_count(tok, [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs],
                              args.max_length, args.epochs)
    from itool.plugins.warmups.curriculum import examples_of

    sample_tokens = token_count(tok, [(e.prompt, e.target) for e in examples_of(ctx, samples)], args.max_length,
                                args.epochs)
    print(f"{len(pairs)} pairs ({pair_tokens} tokens), {len(samples)} warm-up samples ({sample_tokens} tokens), "
          f"{args.epochs} epoch(s), max_length {args.max_length}, {args.dtype}, {torch.get_num_threads()} threads")

    jobs = {
        ("preference", "baseline"): lambda: baseline_preference(ctx, pairs, trainer_options),
        ("preference", "trainer"): lambda: trainer.obj(ctx, pairs, trainer_options),
        ("warm-up", "baseline"): lambda: baseline_warmup(ctx, samples, warmup_options),
        ("warm-up", "trainer"): lambda: warmup.obj(ctx, samples, warmup_options),
    }
    tokens = {"preference": pair_tokens, "warm-up": sample_tokens}
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in jobs}
    for repeat in range(args.repeats):
        for key, job in jobs.items():
            policy.model = copy.deepcopy(base)
            ctx.stage = f"{key[0]}-{key[1]}-{repeat}"
            started = time.perf_counter()
            job()
            seconds = time.perf_counter() - started
            rates[key].append(tokens[key[0]] / seconds)
            print(f"  {key[0]:10} {key[1]:8} run {repeat + 1}: {seconds:6.1f} s  {rates[key][-1]:7.1f} tokens/s",
                  flush=True)
    for kind in ("preference", "warm-up"):
        best = {side: max(rates[(kind, side)]) for side in ("baseline", "trainer")}
        print(f"{kind:10} best tokens/s: baseline {best['baseline']:.1f}, trainer {best['trainer']:.1f}, "
              f"ratio {best['trainer'] / best['baseline']:.3f}")


if __name__ == "__main__":
    main()
