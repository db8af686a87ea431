"""Recall@k of the ``minilm`` tool retriever on BFCL ``multiple`` and ``live_multiple``.

The tools of all samples of a category are pooled (one tool per function name); each sample's query
is its user text and the relevant tools are the functions its ground-truth calls name. The baseline is a random
ranking of the same pool in the same run; the script prints recall@1/3/5 for both and the ratio.

    .venv/bin/python benchmarks/retriever_recall.py [--limit N]
"""

from __future__ import annotations

import argparse
import random
import time

from itool.context import stable_subset
from itool.plugins.retrievers.embedding import MiniLMOptions, factory, recall_at_k
from itool.registry import Registry


def pooled(samples):
    """(pool of tools, one per name; per-sample query; per-sample set of relevant pool indices)."""
    index: dict[str, int] = {}
    pool = []
    for tool in (t for sample in samples for t in sample.tools):
        if tool.get("name") not in index:
            index[tool.get("name")] = len(pool)
            pool.append(tool)
    queries = [" ".join(m.content for m in s.messages if m.role == "user") for s in samples]
    relevant = [{index[c.name] for c in s.answer if c.name in index} for s in samples]
    return pool, queries, relevant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="samples per category (default: all)")
    args = parser.parse_args()
    registry = Registry()
    dataset = registry.get("dataset", "bfcl")
    retriever = factory(MiniLMOptions())
    rng = random.Random(0)
    for category in ("multiple", "live_multiple"):
        samples = stable_subset(dataset.obj("all", dataset.parse_options({"categories": [category], "split_mode": "all"})), args.limit)
        pool, queries, relevant = pooled(samples)
        started = time.perf_counter()
        ranked = retriever.rank(queries, pool, 5)
        seconds = time.perf_counter() - started
        baseline = [rng.sample(range(len(pool)), min(5, len(pool))) for _ in queries]
        ours, chance = recall_at_k(ranked, relevant), recall_at_k(baseline, relevant)
        print(f"{category}: {len(samples)} queries, pool of {len(pool)} tools, ranked in {seconds:.1f}s")
        for k in ours:
            ratio = f"{ours[k] / chance[k]:.0f}x" if chance[k] else "n/a (random found none)"
            print(f"  recall@{k}: minilm {ours[k]:.3f}  random {chance[k]:.3f}  ratio {ratio}")


if __name__ == "__main__":
    main()
