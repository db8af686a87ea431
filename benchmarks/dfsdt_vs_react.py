"""DFSDT against the ReAct baseline on BFCL multi-turn entries with the same model, budget and options.

Both run through ``itool annotate``'s machinery (RunContext, the bfcl dataset, the bfcl-multiturn
environment) on the same entries; the script prints each search's pass rate (entries whose whole
conversation matches the ground truth's state and results), the user turns solved, the model calls
spent, and DFSDT's ratio over ReAct.

    .venv/bin/python benchmarks/dfsdt_vs_react.py --limit 20 --opt max_queries=8 --opt retriever=minilm
"""

from __future__ import annotations

import argparse
import tempfile
import time

from itool.config import build_config, parse_option
from itool.context import RunContext, stable_subset
from itool.registry import Registry
from itool.rundir import RunDir, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="entries (chosen by id hash)")
    parser.add_argument("--category", default="multi_turn_base")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="search option for both")
    parser.add_argument("--out", default=None, help="folder for the trees (default: a temp dir)")
    args = parser.parse_args()
    options = dict(parse_option(o, "--opt") for o in args.opt)
    registry = Registry()
    out = args.out or tempfile.mkdtemp(prefix="dfsdt-vs-react-")
    rows = {}
    for search in ("react", "dfsdt"):
        config = build_config([{"runs_dir": out, "name": search, "warmup": "none", "rounds": 0,
                                "search": {"name": search, "options": options},
                                "dataset": {"name": "bfcl", "options": {"categories": [args.category], "split_mode": "all"}}}])
        ctx = RunContext(config, registry, RunDir.create(config.runs_dir, config.name))
        ctx.stage = "search"
        dataset, data_opts = ctx.component("dataset")
        samples = stable_subset(dataset.obj("all", data_opts), args.limit)
        searcher, opts = ctx.component("search")
        started = time.perf_counter()
        trees = searcher.obj(ctx, samples, opts)
        write_jsonl(ctx.stage_dir / "trees.jsonl", trees)
        rows[search] = {
            "passed": sum(t.meta["passed"] for t in trees), "entries": len(trees),
            "turns_solved": sum(t.meta["turns_solved"] for t in trees), "turns": sum(t.meta["turns"] for t in trees),
            "queries": sum(t.meta["queries"] for t in trees), "minutes": (time.perf_counter() - started) / 60,
        }
        r = rows[search]
        print(f"{search}: pass rate {r['passed']}/{r['entries']} = {100 * r['passed'] / r['entries']:.1f}%, "
              f"turns solved {r['turns_solved']}/{r['turns']}, {r['queries']} model calls, {r['minutes']:.1f} min; "
              f"trees: {ctx.stage_dir / 'trees.jsonl'}", flush=True)
    for key in ("passed", "turns_solved"):
        base = rows["react"][key]
        ratio = f"{rows['dfsdt'][key] / base:.2f}x" if base else "n/a (react solved none)"
        print(f"dfsdt / react {key}: {rows['dfsdt'][key]} / {base} = {ratio}")


if __name__ == "__main__":
    main()
