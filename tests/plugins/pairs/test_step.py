"""Fragment-level pairs from hand-built search trees."""

from __future__ import annotations

from itool.schemas import Sample, SearchNode, SearchTree
from itool.plugins.pairs.filters import word_overlap
from itool.plugins.pairs.step import StepPairOptions, step_pairs
from itool.plugins.searches.tree import Tree

PROMPT = "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"


def branching_tree() -> SearchTree:
    """root ─ "[get_weather(city="       (Q≈0.67) ─ '"Paris")]' (r=1)  and  '"Rome")]' (r=0, Q=0)
            └ "[get_time(zone="          (r=-1)"""
    tree = Tree(Sample(id="s1", messages=[]), prompt=PROMPT)
    good = tree.add(0, "[get_weather(city=", prior=0.6, terminal=False)
    bad = tree.add(0, "[get_time(zone=", prior=0.3, terminal=False)
    tree.evaluate(good.id, 1.0, rollout='[get_weather(city="Paris")]')
    tree.evaluate(bad.id, -1.0, rollout='[get_time(zone="CET")]')
    paris = tree.add(good.id, '"Paris")]', prior=0.8, terminal=True)
    rome = tree.add(good.id, '"Rome")]', prior=0.1, terminal=True)
    tree.evaluate(paris.id, 1.0, rollout='[get_weather(city="Paris")]')
    tree.evaluate(rome.id, 0.0, rollout='[get_weather(city="Rome")]')
    return tree.finish(search="puct")


def test_each_branching_node_gives_best_vs_worst_child_sharing_the_prefix():
    pairs = step_pairs(None, [branching_tree()], StepPairOptions())
    assert len(pairs) == 2
    root_pair, deep_pair = pairs
    assert root_pair.prompt == PROMPT
    assert root_pair.chosen == '[get_weather(city="Paris")]' and root_pair.rejected == '[get_time(zone="CET")]'
    # deeper: the prefix "[get_weather(city=" moves into the prompt, the responses are the fragments on
    assert deep_pair.prompt == PROMPT + "[get_weather(city="
    assert (deep_pair.chosen, deep_pair.rejected) == ('"Paris")]', '"Rome")]')
    assert deep_pair.meta["prefix"] == "[get_weather(city="
    assert (deep_pair.chosen_value, deep_pair.rejected_value) == (1.0, 0.0)
    for pair in pairs:
        assert pair.sample_id == "s1" and pair.meta["builder"] == "step" and pair.meta["search"] == "puct"
        assert pair.chosen_value - pair.rejected_value >= 0.1


def test_prefix_can_stay_in_both_responses():
    deep = step_pairs(None, [branching_tree()], StepPairOptions(prefix_in_prompt=False))[1]
    assert deep.prompt == PROMPT
    assert deep.chosen == '[get_weather(city="Paris")]' and deep.rejected == '[get_weather(city="Rome")]'


def test_filters_drop_small_gaps_weak_chosen_and_overlapping_fragments():
    tree = branching_tree()
    assert len(step_pairs(None, [tree], StepPairOptions(min_gap=1.1))) == 1  # only the root's gap (1.67) is left
    assert step_pairs(None, [tree], StepPairOptions(min_chosen=1.01)) == []
    # the deep fragments '"Paris")]' and '"Rome")]' share no word; the root ones neither
    assert word_overlap('"Paris")]', '"Rome")]') == 0.0
    assert word_overlap("a b c", "a b") == 1.0 and word_overlap("a b", "a c") == 0.5
    assert len(step_pairs(None, [tree], StepPairOptions(max_overlap=0.0))) == 2
    same_words = Tree(Sample(id="s2", messages=[]), prompt=PROMPT)
    for text, reward in (("[f(x= 1, y=", 1.0), ("[f(x= 1,  y=", -1.0)):
        node = same_words.add(0, text, prior=1.0, terminal=False)
        same_words.evaluate(node.id, reward, rollout=text + "2)]")
    assert step_pairs(None, [same_words.finish()], StepPairOptions()) == []


def test_a_pair_whose_completions_contradict_the_values_is_dropped():
    """The chosen child's subtree holds only a rollout worse than the rejected one's: no pair."""
    tree = Tree(Sample(id="s", messages=[]), prompt=PROMPT)
    a = tree.add(0, "[f(a=", prior=1.0, terminal=False)
    b = tree.add(0, "[g(b=", prior=1.0, terminal=False)
    tree.evaluate(a.id, -0.2, rollout="[f(a=0)]")
    tree.evaluate(b.id, -0.1, rollout="[g(b=0)]")
    tree.evaluate(b.id, -1.0)  # b re-visited with a worse value: Q(b) < Q(a) but b's rollout beats a's
    assert step_pairs(None, [tree.finish()], StepPairOptions()) == []


def test_duplicate_pairs_are_dropped():
    tree = branching_tree()
    assert len(step_pairs(None, [tree, tree], StepPairOptions())) == 2


def test_a_branching_node_whose_children_have_no_rollout_below_gives_no_pair():
    """Trees from a search that leaves no complete answers (the agent paths of ``dfsdt``: values 1 on
    the chosen path, -1 where pruned, no rollouts) give no pairs rather than a crash mid-run."""
    agent_path = SearchTree(sample_id="s", prompt=PROMPT, nodes=[
        SearchNode(id=0, visits=3), SearchNode(id=1, parent=0, text="[ls(a=True)]", visits=1, value=1.0),
        SearchNode(id=2, parent=0, text="[cd(folder='x')]", visits=2, value=-1.0),
        SearchNode(id=3, parent=2, text="Finish(return_type='give_up_and_restart')", visits=1, value=-1.0)])
    assert step_pairs(None, [agent_path], StepPairOptions()) == []
    one_side = Tree(Sample(id="s", messages=[]), prompt=PROMPT)
    rolled = one_side.add(0, "[f(a=", prior=1.0, terminal=False)
    bare = one_side.add(0, "[g(b=", prior=1.0, terminal=False)
    one_side.evaluate(rolled.id, 1.0, rollout="[f(a=1)]")
    one_side.evaluate(bare.id, -1.0)  # valued, but no complete answer below it
    assert step_pairs(None, [one_side.finish()], StepPairOptions()) == []
