"""Response-level pairs: best vs worst complete rollout per tree."""

from __future__ import annotations

from itool.schemas import Sample
from itool.plugins.pairs.filters import PairFilterOptions
from itool.plugins.pairs.response import response_pairs
from itool.plugins.searches.tree import Tree


def best_of_three(rewards: list[float]):
    tree = Tree(Sample(id="s", messages=[]), prompt="P")
    for i, reward in enumerate(rewards):
        node = tree.add(0, f"[f(a={i})]", prior=1.0, terminal=True)
        tree.evaluate(node.id, reward, rollout=node.text)
    return tree.finish(search="best-of-n")


def test_best_and_worst_rollouts_of_each_tree_make_one_pair_from_the_bare_prompt():
    (pair,) = response_pairs(None, [best_of_three([0.2, 1.0, -1.0])], PairFilterOptions())
    assert (pair.prompt, pair.chosen, pair.rejected) == ("P", "[f(a=1)]", "[f(a=2)]")
    assert (pair.chosen_value, pair.rejected_value) == (1.0, -1.0)
    assert pair.meta["builder"] == "response"


def test_filters_apply_to_rewards():
    assert response_pairs(None, [best_of_three([0.5, 0.45, 0.42])], PairFilterOptions()) == []
    assert response_pairs(None, [best_of_three([-0.6, -0.9, -1.0])], PairFilterOptions()) == []  # chosen below min_chosen
