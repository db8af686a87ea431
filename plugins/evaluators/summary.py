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

Two ways to treat what was not evaluated (``scoring``):

- ``bfcl`` (default), as the leaderboard: a category that was not evaluated counts as accuracy 0 (in
  ``live`` with the weight of its full BFCL size), and so do the agentic categories (web search,
  memory), which itool does not run: ``agentic`` is 0 and ``overall`` is at most 0.6. Every row that
  feeds ``overall`` is present; ``relevance_detection`` only when live_relevance was evaluated.
- ``itool``: every row is computed over the categories present only (weights renormalised) and a row
  with none of its categories is left out, so ``overall`` is (10·non_live + 10·live +
  10·irrelevance_detection + 30·multi_turn) / 60 when all four are present: comparable between itool
  runs on any subset of categories, not with the leaderboard.

``accuracy`` is the plain share of all valid verdicts.
"""

from __future__ import annotations

from functools import cache
from typing import Iterable, Literal

from itool import report
from itool.schemas import Verdict

Scoring = Literal["bfcl", "itool"]

NON_LIVE_SIMPLE = ["simple_python", "simple_java", "simple_javascript"]
NON_LIVE = ["multiple", "parallel", "parallel_multiple"]
LIVE = ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]
MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]
IRRELEVANCE = ["irrelevance", "live_irrelevance"]
OVERALL_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance_detection": 10, "multi_turn": 30, "agentic": 40}
CATEGORY_ORDER = NON_LIVE_SIMPLE + NON_LIVE + LIVE + IRRELEVANCE + ["live_relevance"] + MULTI_TURN
AGGREGATES = ["overall", "non_live", "non_live_simple", "live", "multi_turn", "agentic", "irrelevance_detection",
              "relevance_detection"]


def _mean(values: list[float], weights: list[float] | None = None) -> float | None:
    if not values:
        return None
    weights = weights or [1.0] * len(values)
    return sum(v * w for v, w in zip(values, weights)) / sum(weights)


@cache
def bfcl_size(category: str) -> int:
    """Entries of a category in the installed BFCL data (the weight BFCL gives a missing live category)."""
    from itool.plugins.datasets.bfcl import data_dir

    with open(data_dir() / f"BFCL_v4_{category}.json", encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def category_counts(verdicts: Iterable[Verdict]) -> dict[str, tuple[int, int]]:
    """category -> (valid, total), in BFCL's category order (unknown categories last)."""
    counts = report.category_counts(verdicts)
    order = {c: i for i, c in enumerate(CATEGORY_ORDER)}
    return {c: counts[c] for c in sorted(counts, key=lambda c: (order.get(c, len(order)), c))}


def summarize(verdicts: list[Verdict], scoring: Scoring = "bfcl") -> dict[str, float]:
    """Aggregate rows first, then one row per category."""
    counts = category_counts(verdicts)
    accuracy = {c: valid / total for c, (valid, total) in counts.items()}
    if not verdicts:
        return {}
    rows = _bfcl_rows(accuracy, counts) if scoring == "bfcl" else _present_rows(accuracy, counts)
    summary = {name: rows[name] for name in AGGREGATES if rows.get(name) is not None}
    summary["accuracy"] = sum(v.valid for v in verdicts) / len(verdicts)
    return {**summary, **accuracy}


def _bfcl_rows(accuracy: dict[str, float], counts: dict[str, tuple[int, int]]) -> dict[str, float | None]:
    """As the leaderboard: a category not evaluated is 0 (weighted by its full size in ``live``)."""
    def score(category: str) -> float:
        return accuracy.get(category, 0.0)

    rows: dict[str, float | None] = {"non_live_simple": _mean([score(c) for c in NON_LIVE_SIMPLE])}
    rows["non_live"] = _mean([rows["non_live_simple"], *(score(c) for c in NON_LIVE)])
    rows["live"] = _mean([score(c) for c in LIVE], [counts[c][1] if c in counts else bfcl_size(c) for c in LIVE])
    rows["multi_turn"] = _mean([score(c) for c in MULTI_TURN])
    rows["agentic"] = 0.0  # web search and memory: not run by itool
    rows["irrelevance_detection"] = _mean([score(c) for c in IRRELEVANCE])
    rows["relevance_detection"] = accuracy.get("live_relevance")
    rows["overall"] = _mean([rows[k] for k in OVERALL_WEIGHTS], list(OVERALL_WEIGHTS.values()))
    return rows


def _present_rows(accuracy: dict[str, float], counts: dict[str, tuple[int, int]]) -> dict[str, float | None]:
    """Over the categories present only, weights renormalised; agentic left out."""
    def unweighted(names: list[str]) -> float | None:
        return _mean([accuracy[c] for c in names if c in accuracy])

    rows: dict[str, float | None] = {"non_live_simple": unweighted(NON_LIVE_SIMPLE)}
    non_live = [rows["non_live_simple"]] + [accuracy.get(c) for c in NON_LIVE]
    rows["non_live"] = _mean([v for v in non_live if v is not None])
    live = [c for c in LIVE if c in accuracy]
    rows["live"] = _mean([accuracy[c] for c in live], [counts[c][1] for c in live])
    rows["multi_turn"] = unweighted(MULTI_TURN)
    rows["irrelevance_detection"] = unweighted(IRRELEVANCE)
    rows["relevance_detection"] = accuracy.get("live_relevance")
    present = {k: w for k, w in OVERALL_WEIGHTS.items() if rows.get(k) is not None}
    rows["overall"] = _mean([rows[k] for k in present], list(present.values()))
    return rows
