"""Search throughput: the same PUCT search on the real model, twice in one process.

- batched: every simulation sends the expansions (then the rollouts) of all samples' open leaves to the
  backend in one ``generate`` call, a wave, and the backend keeps the prompts it encoded for the
  search's later waves (``keep_prefixes``);
- naive: one request per ``generate`` call (one leaf's expansion, or one rollout, at a time), every
  prompt encoded afresh;
- naive+kept (``--modes``): one request per call, prompts kept: what the kept prompts alone give.

All use the same options, seed, samples and reward; only the calls differ. Prints generate calls,
prompt tokens encoded, nodes/minute and step pairs/minute for each, and the batched/naive ratios.

``--backend openai --backend-opt base_url=http://127.0.0.1:8000`` runs the same modes a second time
through that backend (a served copy of the model), after the in-process ``transformers`` backend, and
prints each mode's served/in-process ratio.
``--adapter`` searches with a trained policy (e.g. a run's warm-up adapter), whose rollouts are
sometimes right, so that pairs are made.

    .venv/bin/python benchmarks/search_throughput.py --samples 8 --simulations 3
    .venv/bin/python benchmarks/search_throughput.py --samples 4 --backend openai --backend-opt base_url=URL
"""

from __future__ import annotations

import argparse
import tempfile
import time

from itool.config import build_config, parse_option
from itool.context import RunContext
from itool.registry import Registry
from itool.rundir import RunDir
from itool.plugins.pairs.step import StepPairOptions, step_pairs
from itool.plugins.searches.puct import PuctOptions, puct


def make_ctx(args: argparse.Namespace, runs_dir: str, backend: str = "transformers",
             backend_options: dict | None = None) -> RunContext:
    config = build_config([{
        "runs_dir": runs_dir, "name": f"bench-{backend}", "model": args.model, "train_limit": args.samples,
        "warmup": "none", "rounds": 0,  # a search alone: nothing trains, so a server it does not control serves it
        "reward": args.reward, "adapters": [args.adapter] if args.adapter else [],
        "dataset": {"name": "bfcl", "options": {"categories": args.categories.split(",")}},
        "backend": {"name": backend, "options": backend_options or {}},
    }])
    ctx = RunContext(config, Registry(), run=None)
    ctx.run = RunDir.create(config.runs_dir, config.name)
    ctx.stage = "bench.search"
    return ctx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--categories", default="simple_python,multiple,parallel,live_simple")
    parser.add_argument("--reward", default="ast")
    parser.add_argument("--simulations", type=int, default=3)
    parser.add_argument("--width", type=int, default=3)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--step-max-tokens", type=int, default=24)
    parser.add_argument("--rollout-max-tokens", type=int, default=64)
    parser.add_argument("--modes", default="batched,naive", help="comma-separated, run in this order: "
                        "batched, naive, naive+kept")
    parser.add_argument("--adapter", help="PEFT adapter merged into the model first (e.g. runs/X/warmup/adapter)")
    parser.add_argument("--backend", default="transformers",
                        help="also run every mode through this backend (e.g. openai), after the in-process one")
    parser.add_argument("--backend-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="option of --backend (repeatable)")
    args = parser.parse_args()
    modes = {"batched": {}, "naive": {"wave_size": 1, "keep_prefixes": False}, "naive+kept": {"wave_size": 1}}
    chosen = [m.strip() for m in args.modes.split(",")]
    if unknown := [m for m in chosen if m not in modes]:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(modes)}")

    backends = list(dict.fromkeys(["transformers", args.backend]))
    backend_options = dict(parse_option(o, "--backend-opt") for o in args.backend_opt)
    with tempfile.TemporaryDirectory() as runs_dir:
        rates = {}
        policy = None
        for backend in backends:
            ctx = make_ctx(args, runs_dir, backend, backend_options if backend == args.backend else None)
            if policy is not None:
                ctx.policy = policy  # one copy of the model: the in-process backend's, the served one's prompts
            policy = ctx.policy
            samples = ctx.samples("train")
            print(f"{backend}: model {args.model} on {ctx.policy.device}, {len(samples)} BFCL samples "
                  f"({args.categories}); {args.simulations} simulations, width {args.width}")
            rates.update(run_modes(ctx, backend, samples, chosen, modes, args))
        for mode in chosen:
            if len(backends) > 1:
                (s_nodes, s_pairs), (t_nodes, t_pairs) = rates[(args.backend, mode)], rates[("transformers", mode)]
                pair_ratio = f"{s_pairs / t_pairs:.2f}x" if t_pairs else "n/a (no pairs in-process)"
                print(f"{args.backend} / transformers, {mode}: nodes/min {s_nodes / t_nodes:.2f}x, pairs/min {pair_ratio}")
        for backend in backends:
            for mode in [m for m in chosen if m != "batched"] if "batched" in chosen else []:
                (b_nodes, b_pairs), (o_nodes, o_pairs) = rates[(backend, "batched")], rates[(backend, mode)]
                pair_ratio = f"{b_pairs / o_pairs:.2f}x" if o_pairs else f"n/a ({mode} made no pairs)"
                print(f"{backend}: batched / {mode}: nodes/min {b_nodes / o_nodes:.2f}x, pairs/min {pair_ratio}")


def run_modes(ctx: RunContext, backend: str, samples: list, chosen: list[str], modes: dict,
              args: argparse.Namespace) -> dict[tuple[str, str], tuple[float, float]]:
    """Each mode's search on ``samples`` through ``ctx.backend``: {(backend, mode): (nodes/min, pairs/min)}."""
    base = dict(simulations=args.simulations, width=args.width, max_depth=args.max_depth,
                step_max_tokens=args.step_max_tokens, rollout_max_tokens=args.rollout_max_tokens, seed=0)
    # warm-up: first-call overheads (kernels, caches, connections) must not count against any run
    puct(ctx, samples[:1], PuctOptions(**{**base, "simulations": 1}))
    rates = {}
    for mode in chosen:
        encoded = getattr(ctx.backend, "encoded_tokens", None)
        started = time.perf_counter()
        trees = puct(ctx, samples, PuctOptions(**base, **modes[mode]))
        minutes = (time.perf_counter() - started) / 60
        pairs = step_pairs(ctx, trees, StepPairOptions())
        nodes = sum(len(t.nodes) - 1 for t in trees)
        calls = trees[0].meta["generate_calls"]
        rates[(backend, mode)] = (nodes / minutes, len(pairs) / minutes)
        tokens = f"{ctx.backend.encoded_tokens - encoded:7d}" if encoded is not None else "      -"
        print(f"{backend:12s} {mode:10s} {minutes * 60:7.1f} s  {calls:4d} generate calls  {tokens} prompt tokens "
              f"encoded  {nodes:4d} nodes ({nodes / minutes:6.1f}/min)  {len(pairs):3d} pairs ({len(pairs) / minutes:6.2f}/min)")
    return rates


if __name__ == "__main__":
    main()
