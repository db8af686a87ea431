"""Preference training step: each prompt once (the ``lora`` trainer's ``forward_pairs``) against each side
encoded whole (prompt + chosen, prompt + rejected: the per-side encoding of TRL's preference trainers
and of this project before it).

Same pairs, same LoRA, same micro-batches of ``--batch-size`` pairs; forward and backward of the summed
answer log-probs, in one process, alternating (whole, shared, whole, shared...) so drift in the
machine's load hits both. Prints seconds per pair of each run, each side's best, the whole/shared ratio
(> 1: sharing is faster) and the largest log-prob difference between the two (float noise).

    .venv/bin/python benchmarks/pair_forward.py                       # BFCL pairs, 1,024-token cap
    .venv/bin/python benchmarks/pair_forward.py --pairs runs/<run>/round1.pairs/pairs.jsonl

Without ``--pairs`` the pairs are BFCL train samples' accepted answers against the same call with one
wrong value (``train_throughput.bfcl_pairs``): real tool prompts, short answers, as PUCT's pairs are.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from itool.config import build_config
from itool.context import RunContext
from itool.registry import Registry
from itool.rundir import RunDir


def whole_sides(model: Any, encoded: list[tuple], pad_id: int, device: Any):
    """The baseline: both sides as full sequences in one padded batch (chosen rows first)."""
    from itool.plugins.training import collate, sequence_logps

    batch = collate([(p, c) for p, c, _ in encoded] + [(p, r) for p, _, r in encoded], pad_id, device)
    logps, counts = sequence_logps(model, batch)
    n = len(encoded)
    return logps[:n], logps[n:], counts[:n], counts[n:]


def timed(model: Any, forward: Any, batches: list[list[tuple]], pad_id: int, device: Any) -> tuple[float, list]:
    """Seconds for forward and backward over every batch, and the log-probs it computed."""
    from itool.plugins.training import autocast

    logps = []
    started = time.perf_counter()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        with autocast(next(model.parameters()).dtype, device):
            chosen, rejected, _, _ = forward(model, batch, pad_id, device)
        (chosen.sum() - rejected.sum()).backward()
        logps.append(torch.cat([chosen, rejected]).detach())
    return time.perf_counter() - started, logps


def main() -> None:
    from itool.plugins.trainers.lora import encode_pairs, forward_pairs
    from itool.plugins.training import add_lora
    from itool.plugins.trainers.compare import read_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, help="TRL preference JSONL (default: pairs built from BFCL train samples)")
    parser.add_argument("--n", type=int, default=12, help="pairs to time")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    config = build_config([{"runs_dir": tempfile.mkdtemp(prefix="pair-bench-"), "name": "bench", "dtype": args.dtype}])
    ctx = RunContext(config, Registry(), run=None)
    ctx.run = RunDir.create(config.runs_dir, config.name)
    policy = ctx.policy
    if args.pairs:
        pairs = read_pairs(args.pairs)[:args.n]
    else:
        from train_throughput import bfcl_pairs

        pairs = bfcl_pairs(ctx, args.n)
    encoded, _ = encode_pairs(policy.tokenizer, pairs, args.max_length)
    batches = [encoded[i: i + args.batch_size] for i in range(0, len(encoded), args.batch_size)]
    prompt = sum(len(p) for p, _, _ in encoded) / len(encoded)
    answer = sum(len(c) + len(r) for _, c, r in encoded) / (2 * len(encoded))
    print(f"{len(encoded)} pairs (mean prompt {prompt:.0f} tokens, mean answer {answer:.0f}), batches of "
          f"{args.batch_size}, max_length {args.max_length}, {args.dtype}, {torch.get_num_threads()} threads")

    model = add_lora(policy.model, seed=0, dropout=0.0)
    model.train()
    sides = {"whole": whole_sides, "shared": forward_pairs}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    logps: dict[str, list] = {}
    for repeat in range(args.repeats):
        for side, forward in sides.items():
            spent, logps[side] = timed(model, forward, batches, policy.tokenizer.pad_token_id, policy.device)
            seconds[side].append(spent)
            print(f"  {side:6} run {repeat + 1}: {spent / len(encoded):6.2f} s per pair", flush=True)
    difference = max((a - b).abs().max().item() for a, b in zip(logps["whole"], logps["shared"]))
    best = {side: min(times) / len(encoded) for side, times in seconds.items()}
    print(f"best s/pair: whole {best['whole']:.2f}, shared {best['shared']:.2f}, "
          f"ratio {best['whole'] / best['shared']:.2f}; largest log-prob difference {difference:.2e}")


if __name__ == "__main__":
    main()
