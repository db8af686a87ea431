"""Summary rows of a BFCL evaluation, aggregated the way BFCL v4's leaderboard does
(bfcl_eval/eval_checker/eval_runner_helper.py, ``generate_leaderboard_csv``).

Per category: accuracy = share of its verdicts that are valid. Then:

- ``non_live_simple`` = unweighted mean of simple_python, simple_java, simple_javascript;
- ``non_live`` = unweighted mean of non_live_simple, multiple, parallel, parallel_multiple
  (irrelevance is not part of it in v4);
- ``live`` = mean of live_simple, live_multiple, live_parallel, live_parallel_multiple weighted by
  the number of samples of each;
- ``multi_turn`` = unweighted mean of multi_turn_base, _miss_func, _miss_param, _long_context;
- ``irrelevance_detection`` (BFCL's hallucination measurement) = unweighted mean of irrelevance and
  live_irrelevance; ``relevance_detection`` = live_relevance;
- ``overall`` = weighted mean with BFCL v4's weights: non_live 10, live 10, irrelevance_detection 10,
  multi_turn 30, agentic 40.

Where BFCL counts a category that was not evaluated as 0, every row here is computed over the
categories present only (weights renormalised), and a row with none of its categories is left out.
Agentic categories (web search, memory) are not evaluated by itool, so ``overall`` here is
(10·non_live + 10·live + 10·irrelevance_detection + 30·multi_turn) / 60 when all four are present: comparable
between itool runs, not with the leaderboard's Overall. ``accuracy`` is the plain share of all valid
verdicts.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from itool.schemas import Verdict

NON_LIVE_SIMPLE = ["simple_python", "simple_java", "simple_javascript"]
NON_LIVE = ["multiple", "parallel", "parallel_multiple"]
LIVE = ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]
MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]
IRRELEVANCE = ["irrelevance", "live_irrelevance"]
OVERALL_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance_detection": 10, "multi_turn": 30}
CATEGORY_ORDER = NON_LIVE_SIMPLE + NON_LIVE + LIVE + IRRELEVANCE + ["live_relevance"] + MULTI_TURN
AGGREGATES = ["overall", "non_live", "non_live_simple", "live", "multi_turn", "irrelevance_detection",
              "relevance_detection"]


def _mean(values: list[float], weights: list[float] | None = None) -> float | None:
    if not values:
        return None
    weights = weights or [1.0] * len(values)
    return sum(v * w for v, w in zip(values, weights)) / sum(weights)


def category_counts(verdicts: Iterable[Verdict]) -> dict[str, tuple[int, int]]:
    """category -> (valid, total), in BFCL's category order (unknown categories last)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in verdicts:
        counts[v.category][0] += v.valid
        counts[v.category][1] += 1
    order = {c: i for i, c in enumerate(CATEGORY_ORDER)}
    return {c: (counts[c][0], counts[c][1]) for c in sorted(counts, key=lambda c: (order.get(c, len(order)), c))}


def summarize(verdicts: list[Verdict]) -> dict[str, float]:
    """Aggregate rows first (those that have data), then one row per category."""
    counts = category_counts(verdicts)
    accuracy = {c: valid / total for c, (valid, total) in counts.items()}

    def unweighted(names: list[str]) -> float | None:
        return _mean([accuracy[c] for c in names if c in accuracy])

    rows: dict[str, float | None] = {}
    rows["non_live_simple"] = unweighted(NON_LIVE_SIMPLE)
    non_live = [rows["non_live_simple"]] + [accuracy.get(c) for c in NON_LIVE]
    rows["non_live"] = _mean([v for v in non_live if v is not None])
    live = [c for c in LIVE if c in accuracy]
    rows["live"] = _mean([accuracy[c] for c in live], [counts[c][1] for c in live])
    rows["multi_turn"] = unweighted(MULTI_TURN)
    rows["irrelevance_detection"] = unweighted(IRRELEVANCE)
    rows["relevance_detection"] = accuracy.get("live_relevance")
    present = {k: w for k, w in OVERALL_WEIGHTS.items() if rows[k] is not None}
    rows["overall"] = _mean([rows[k] for k in present], list(present.values()))
    summary = {name: rows[name] for name in AGGREGATES if rows[name] is not None}
    if verdicts:
        summary["accuracy"] = sum(v.valid for v in verdicts) / len(verdicts)
    return {**summary, **accuracy}
