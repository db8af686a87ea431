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


def test_tied_rewards_pair_two_different_rollouts_never_one_with_itself():
    no_gap = PairFilterOptions(min_gap=0, min_chosen=-1, max_overlap=1)
    (pair,) = response_pairs(None, [best_of_three([-1.0, -1.0, -1.0])], no_gap)
    assert (pair.chosen, pair.rejected) == ("[f(a=0)]", "[f(a=1)]")


def test_a_pair_with_the_same_text_on_both_sides_is_dropped_whatever_the_filters_allow():
    tree = Tree(Sample(id="s", messages=[]), prompt="P")
    for reward in (1.0, -1.0):
        node = tree.add(0, "[f(a=1)]", prior=1.0, terminal=True)
        tree.evaluate(node.id, reward, rollout=node.text)
    no_gap = PairFilterOptions(min_gap=0, min_chosen=-1, max_overlap=1)
    assert response_pairs(None, [tree.finish(search="best-of-n")], no_gap) == []
