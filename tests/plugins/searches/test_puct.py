"""PUCT selection math on a hand-built tree."""

from __future__ import annotations

import math

import pytest

from itool.schemas import Sample
from itool.plugins.searches.puct import PuctOptions, puct, puct_score, select_leaf, step_splitter
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


def test_steps_end_at_token_ends_unless_asked_for_character_cuts(shared_policy):
    """SmolLM2 writes ``='`` as one token; the default search cuts after it, not inside it."""
    answer = "[find_movies(genre='Play', city='Berkeley')]"
    aligned = step_splitter(PuctOptions(), shared_policy.tokenizer)
    by_character = step_splitter(PuctOptions(token_aligned=False), shared_policy.tokenizer)
    assert answer[:aligned(answer)] == "[find_movies(genre='"
    assert answer[:by_character(answer)] == "[find_movies(genre="


# -- on the real model ------------------------------------------------------------------------------
class CountingBackend:
    """The real backend with its ``generate`` calls counted: a measurement, not a mock."""

    def __init__(self, backend):
        self.backend = backend
        self.generate_calls = 0

    def generate(self, requests):
        self.generate_calls += 1
        return self.backend.generate(requests)

    def score(self, prompts, continuations):
        return self.backend.score(prompts, continuations)


TINY = dict(simulations=2, width=2, max_depth=2, step_max_tokens=10, rollout_max_tokens=32, seed=0)


def counting_bfcl_context(make):
    ctx = make(reward="ast", dataset={"name": "bfcl", "options": {
        "categories": ["simple_python", "parallel"], "split_mode": "all"}})
    ctx.backend = CountingBackend(ctx.backend)
    return ctx


@pytest.fixture
def bfcl_ctx(model_ctx):
    """On the model in the dtype ``auto`` picks: the search in bfloat16 too, with ITOOL_AUTO_DTYPE=bfloat16."""
    return counting_bfcl_context(model_ctx)


@pytest.fixture
def bfcl_ctx_fp32(model_ctx_fp32):
    """On the float32 model: counting calls does not depend on the dtype, and emulated bfloat16 costs minutes."""
    return counting_bfcl_context(model_ctx_fp32)


def two_samples(ctx):
    """A single-call and a parallel-call sample, those with the shortest tool lists (prefill dominates)."""
    samples = ctx.samples("train")
    return [min((s for s in samples if s.category == category), key=lambda s: len(str(s.tools)))
            for category in ("simple_python", "parallel")]


def test_search_on_the_real_model_builds_consistent_trees(bfcl_ctx):
    samples = two_samples(bfcl_ctx)
    trees = puct(bfcl_ctx, samples, PuctOptions(**TINY))
    assert [t.sample_id for t in trees] == [s.id for s in samples]
    for tree in trees:
        assert tree.prompt == bfcl_ctx.format.render_prompt(samples[trees.index(tree)], bfcl_ctx.policy.tokenizer)
        root, nodes = tree.nodes[0], tree.nodes[1:]
        assert nodes and root.visits == sum(n.meta["own_visits"] for n in nodes)
        for node in tree.nodes:
            children = tree.children(node.id)
            assert node.visits == node.meta["own_visits"] + sum(c.visits for c in children)
            assert -1.0 <= node.value <= 1.0
            assert node.meta["depth"] <= TINY["max_depth"]
        for node in nodes:
            assert 0.0 < node.prior <= 1.0 and node.rollout is not None
            assert node.rollout.startswith(tree.prefix(node.id))
            assert node.meta["reward"] == bfcl_ctx.reward.score(samples[trees.index(tree)], [node.rollout])[0]
            if node.terminal:
                assert node.rollout == tree.prefix(node.id) and not tree.children(node.id)
        assert len(tree.children(0)) >= 1


def test_batched_search_makes_two_generate_calls_per_simulation_naive_one_per_request(bfcl_ctx_fp32):
    samples = two_samples(bfcl_ctx_fp32)
    quick = {**TINY, "simulations": 1, "step_max_tokens": 4, "rollout_max_tokens": 8}
    batched = puct(bfcl_ctx_fp32, samples, PuctOptions(**quick))
    batched_calls, bfcl_ctx_fp32.backend.generate_calls = bfcl_ctx_fp32.backend.generate_calls, 0
    naive = puct(bfcl_ctx_fp32, samples, PuctOptions(**quick, wave_size=1))
    assert batched_calls == batched[0].meta["generate_calls"] <= 2 * quick["simulations"]
    # naive: one call per expansion of a leaf and one per rollout of a new non-terminal child
    expanded = sum(1 for t in naive for n in t.nodes if t.children(n.id))
    rolled_out = sum(1 for t in naive for n in t.nodes[1:] if not n.terminal)
    assert bfcl_ctx_fp32.backend.generate_calls == naive[0].meta["generate_calls"] >= expanded + rolled_out
    assert bfcl_ctx_fp32.backend.generate_calls >= 2 * batched_calls
