"""Pair builder ``step``: iTool's fragment-level pairs.

At every node with at least two evaluated children, the best-valued child (mean value ``Q``) is chosen
and the worst-valued one rejected. Both share the prefix up to that node, so the pair differs from the
fragment on: with ``prefix_in_prompt`` (default) the shared prefix is appended to the prompt and the
two responses start at the fragments, so a preference loss only sees where they differ.

Each side is completed to a full answer with a rollout from its child's subtree: the best-rewarded
rollout under the chosen child, the worst-rewarded under the rejected one (for a leaf child that is
its own rollout). A node where either child has no rollout below it gives no pair. A pair whose
completions contradict the values (chosen reward <= rejected reward) is dropped, as are pairs failing
the filters (value gap, chosen value, word overlap of the two fragments) and duplicates.
"""

from __future__ import annotations

from pydantic import Field

from itool import hookimpl
from itool.schemas import PreferencePair, SearchNode, SearchTree
from itool.plugins.pairs.filters import PairFilterOptions, best_and_worst, dedupe, keep


class StepPairOptions(PairFilterOptions):
    prefix_in_prompt: bool = Field(
        True, description="Put the shared answer prefix into the prompt (else at the start of both responses).")


def subtree_rollouts(tree: SearchTree, kids: dict[int, list[SearchNode]], node: SearchNode) -> list[SearchNode]:
    """Nodes with a rollout in the subtree of ``node`` (itself included)."""
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        if current.rollout is not None:
            found.append(current)
        stack.extend(kids.get(current.id, []))
    return found


def tree_pairs(tree: SearchTree, opts: StepPairOptions) -> list[PreferencePair]:
    kids: dict[int, list[SearchNode]] = {}
    for node in tree.nodes:
        if node.parent is not None:
            kids.setdefault(node.parent, []).append(node)
    pairs = []
    for node in tree.nodes:
        children = [c for c in kids.get(node.id, []) if c.visits > 0]
        if len(children) < 2:
            continue
        best, worst = best_and_worst(children, lambda c: c.value)
        if not keep(best.value, worst.value, best.text, worst.text, opts):
            continue
        chosen_side, rejected_side = subtree_rollouts(tree, kids, best), subtree_rollouts(tree, kids, worst)
        if not chosen_side or not rejected_side:  # no complete answer to build a side from
            continue
        chosen = max(chosen_side, key=lambda n: n.meta["reward"])
        rejected = min(rejected_side, key=lambda n: n.meta["reward"])
        if chosen.meta["reward"] <= rejected.meta["reward"]:
            continue
        prefix = tree.prefix(node.id)
        cut = len(prefix) if opts.prefix_in_prompt else 0
        pairs.append(PreferencePair(
            prompt=tree.prompt + prefix[:cut],
            chosen=chosen.rollout[cut:],
            rejected=rejected.rollout[cut:],
            sample_id=tree.sample_id,
            chosen_value=best.value,
            rejected_value=worst.value,
            meta={"builder": "step", "search": tree.meta.get("search"), "node": node.id,
                  "depth": node.meta.get("depth"), "prefix": prefix,
                  "chosen_step": best.text, "rejected_step": worst.text,
                  "chosen_node": chosen.id, "rejected_node": rejected.id,
                  "chosen_reward": chosen.meta["reward"], "rejected_reward": rejected.meta["reward"]},
        ))
    return pairs


def step_pairs(ctx, trees: list[SearchTree], opts: StepPairOptions) -> list[PreferencePair]:
    """Best vs worst child at every branching node, sharing the prefix: fragment-level pairs (iTool)."""
    return dedupe([pair for tree in trees for pair in tree_pairs(tree, opts)])


@hookimpl
def register_pair_builders(register):
    register("step", step_pairs, options=StepPairOptions, accepts={"step-values", "samples"})
