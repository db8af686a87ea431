"""PUCT selection math on a hand-built tree."""

from __future__ import annotations

import math

import pytest

from itool.schemas import Sample
from itool.plugins.searches.puct import PuctOptions, puct_score, select_leaf
from itool.plugins.searches.tree import Tree


def hand_built_tree() -> Tree:
    """root ─ a (Q=0.5, p=0.2, N=3 through its child a1) ─ a1
            └ b (Q=0.0, p=0.9, N=1)"""
    tree = Tree(Sample(id="s", messages=[]), prompt="")
    a = tree.add(0, "a", prior=0.2, terminal=False)
    b = tree.add(0, "b", prior=0.9, terminal=False)
    a1 = tree.add(a.id, "a1", prior=1.0, terminal=False)
    tree.evaluate(a.id, 0.5, rollout="a..")
    tree.evaluate(b.id, 0.0, rollout="b..")
    tree.evaluate(a1.id, 0.5, rollout="a1..")
    tree.evaluate(a1.id, 0.5)
    return tree


def test_puct_score_is_q_plus_prior_weighted_exploration():
    tree = hand_built_tree()
    root, a, b = tree.nodes[0], tree.nodes[1], tree.nodes[2]
    assert (root.visits, a.visits, b.visits) == (4, 3, 1)
    assert puct_score(root, a, 1.0) == pytest.approx(0.5 + 1.0 * 0.2 * math.sqrt(4) / (1 + 3))
    assert puct_score(root, b, 1.0) == pytest.approx(0.0 + 1.0 * 0.9 * math.sqrt(4) / (1 + 1))


def test_selection_trades_value_against_prior_and_visits():
    tree = hand_built_tree()
    # c=1: a scores 0.5 + 0.1 = 0.6, b scores 0 + 0.9 = 0.9 -> explore b
    assert select_leaf(tree, c_puct=1.0) == 2
    # c=0: pure exploitation -> a, then down to its only child a1
    assert select_leaf(tree, c_puct=0.0) == 3


def test_selection_of_a_fresh_tree_is_the_root():
    assert select_leaf(Tree(Sample(id="s", messages=[]), prompt=""), 1.0) == 0


def test_options_reject_an_unknown_splitter():
    with pytest.raises(ValueError, match="unknown step splitter"):
        PuctOptions(splitter="words")
