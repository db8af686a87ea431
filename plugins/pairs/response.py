"""Pair builder ``response``: one pair per tree, its best-rewarded complete rollout against its worst,
both from the bare prompt (a response-level preference, the usual baseline to iTool's step pairs).
Filters as for ``step``, with the word overlap measured on the whole answers."""

from __future__ import annotations

from itool import hookimpl
from itool.schemas import PreferencePair, SearchTree
from itool.plugins.pairs.filters import PairFilterOptions, best_and_worst, dedupe, keep


def response_pairs(ctx, trees: list[SearchTree], opts: PairFilterOptions) -> list[PreferencePair]:
    """Best vs worst complete rollout of each tree: response-level pairs."""
    pairs = []
    for tree in trees:
        rolled = [n for n in tree.nodes if n.rollout is not None]
        if len(rolled) < 2:
            continue
        best, worst = best_and_worst(rolled, lambda n: n.meta["reward"])
        if not keep(best.meta["reward"], worst.meta["reward"], best.rollout, worst.rollout, opts):
            continue
        pairs.append(PreferencePair(
            prompt=tree.prompt, chosen=best.rollout, rejected=worst.rollout, sample_id=tree.sample_id,
            chosen_value=best.meta["reward"], rejected_value=worst.meta["reward"],
            meta={"builder": "response", "search": tree.meta.get("search"),
                  "chosen_node": best.id, "rejected_node": worst.id},
        ))
    return dedupe(pairs)


@hookimpl
def register_pair_builders(register):
    register("response", response_pairs, options=PairFilterOptions, accepts={"step-values", "samples"})
