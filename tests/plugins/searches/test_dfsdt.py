"""DFSDT (and its one-chain ReAct baseline) over the real bfcl-multiturn environment.

Most tests script the model's messages (a replay backend), so that the search's rules can be checked
exactly: give-up backs up two levels, a rejected answer tries the sibling, the diversity prompt lists
earlier siblings, each branch starts from its parent's state, the budget holds. The environment, the
format, the prompts and the ground-truth check are the real ones. The last test runs the real model."""

from __future__ import annotations

import pytest

from itool.components import Generation
from itool.plugins.searches.agent import solution_messages
from itool.schemas import Message


class Replay:
    """A backend that answers each request with the next scripted message and records the prompts."""

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        self.prompts: list[str] = []
        self.calls = 0

    def generate(self, requests):
        self.calls += 1
        self.prompts += [r.prompt for r in requests]
        return [[Generation(text=self.messages.pop(0), token_logprobs=[-0.1], finish_reason="stop")] for _ in requests]


@pytest.fixture(scope="module")
def first_turn_entry(registry):
    """multi_turn_base_1 cut to its first turn ("list everything here"; truth: ls(a=True))."""
    dataset = registry.get("dataset", "bfcl")
    sample = next(s for s in dataset.obj("all", dataset.parse_options({"categories": ["multi_turn_base"], "split_mode": "all"}))
                  if s.id == "multi_turn_base_1")
    return sample.model_copy(update={"meta": {**sample.meta, "turns": sample.meta["turns"][:1],
                                               "ground_truth": sample.meta["ground_truth"][:1]}})


SCRIPT = [
    "Thought: make room first.\n[mkdir(dir_name='junk')]",   # 1: child of the root
    "[cd(folder='junk')]",                                     # 2: child of 1
    "Finish(return_type='give_up_and_restart')",               # 3: give up -> abandons 3 and 2
    "Nothing else to do.",                                     # 4: second child of 1: an answer, wrong state
    "[ls(a=True)]",                                            # 5: second child of the root
    "Finish(return_type='give_answer', final_answer='Here is the listing.')",  # 6: accepted
]


def search(model_ctx, name, sample, script, **options):
    ctx = model_ctx(warmup="none", rounds=0, search={"name": name, "options": options})
    ctx.backend = Replay(script)
    searcher, opts = ctx.component("search")
    return searcher.obj(ctx, [sample], opts)[0], ctx.backend


def test_dfsdt_backtracks_and_finds_the_answer(model_ctx, first_turn_entry):
    tree, backend = search(model_ctx, "dfsdt", first_turn_entry, SCRIPT)
    kinds = [(n.id, n.parent, n.meta["kind"]) for n in tree.nodes]
    assert kinds == [(0, None, "root"), (1, 0, "call"), (2, 1, "call"), (3, 2, "give_up"),
                     (4, 1, "answer"), (5, 0, "call"), (6, 5, "answer")]
    assert tree.nodes[3].value == -1 and tree.nodes[3].meta["pruned"]
    assert tree.nodes[4].meta["rejected"] and tree.nodes[4].meta["check"] == "multi_turn:instance_state_mismatch"
    # node 6 passed the state check although node 1 made a directory: the second branch started from
    # the root's snapshot, not from the first branch's state
    assert tree.meta["chosen_path"] == [0, 5, 6] and tree.meta["solved"] and tree.meta["passed"]
    assert [tree.nodes[i].value for i in (0, 5, 6)] == [1, 1, 1] and tree.nodes[6].terminal
    assert tree.meta["queries"] == 6 and tree.nodes[0].visits == 6 and tree.nodes[1].visits == 4


def test_diversity_prompt_lists_earlier_siblings(model_ctx, first_turn_entry):
    _, backend = search(model_ctx, "dfsdt", first_turn_entry, SCRIPT)
    assert "Earlier attempts" not in backend.prompts[0]
    assert "Earlier attempts" in backend.prompts[3] and "cd(folder='junk')" in backend.prompts[3]
    assert "mkdir(dir_name='junk')" in backend.prompts[4].split("Earlier attempts")[1]
    assert "Finish" in backend.prompts[0]  # the Finish function is on offer


def test_solution_path_is_a_training_conversation(model_ctx, first_turn_entry):
    tree, _ = search(model_ctx, "dfsdt", first_turn_entry, SCRIPT)
    messages = solution_messages(tree)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1].tool_calls[0].name == "ls" and messages[2].name == "ls"
    assert messages[3] == Message(role="assistant", content="Here is the listing.")


def test_react_is_one_chain_without_backtracking(model_ctx, first_turn_entry):
    tree, _ = search(model_ctx, "react", first_turn_entry, SCRIPT)
    assert [n.meta["kind"] for n in tree.nodes] == ["root", "call", "call", "give_up"]
    assert not tree.meta["solved"] and tree.meta["queries"] == 3 and tree.meta["chosen_path"] == []


def test_query_budget_stops_the_search(model_ctx, first_turn_entry):
    tree, _ = search(model_ctx, "dfsdt", first_turn_entry, SCRIPT, max_queries=2)
    assert tree.meta["queries"] == 2 and len(tree.nodes) == 3 and not tree.meta["solved"]


def test_depth_limit_prunes(model_ctx, first_turn_entry):
    tree, _ = search(model_ctx, "react", first_turn_entry, SCRIPT, max_depth=1)
    assert tree.nodes[1].meta["pruned"] and tree.meta["queries"] == 1


def test_unparseable_message_is_shown_as_an_error_and_the_search_goes_on(model_ctx, first_turn_entry):
    script = ["[ls(a=True", "[ls(a=True)]", "Finish(return_type='give_answer', final_answer='ok')"]
    tree, backend = search(model_ctx, "react", first_turn_entry, script)
    assert tree.nodes[1].meta["kind"] == "invalid" and "could not be read" in backend.prompts[1]
    assert tree.meta["passed"]
    assert [m.role for m in solution_messages(tree)] == ["user", "assistant", "tool", "assistant"]


def test_multi_turn_entry_searches_turn_by_turn(model_ctx, registry):
    """An accepted answer to turn 1 carries its state into turn 2, whose user message joins the prompt."""
    dataset = registry.get("dataset", "bfcl")
    sample = next(s for s in dataset.obj("all", dataset.parse_options({"categories": ["multi_turn_base"], "split_mode": "all"}))
                  if s.id == "multi_turn_base_1")
    sample = sample.model_copy(update={"meta": {**sample.meta, "turns": sample.meta["turns"][:2],
                                                 "ground_truth": sample.meta["ground_truth"][:2]}})
    script = ["[ls(a=True)]", "Done.", "[cd(folder='workspace'), mv(source='log.txt', destination='archive')]", "Moved."]
    tree, backend = search(model_ctx, "dfsdt", sample, script)
    assert [(n.meta["turn"], n.meta["kind"]) for n in tree.nodes[1:]] == [(0, "call"), (0, "answer"), (1, "call"), (1, "answer")]
    assert sample.meta["turns"][1][0]["content"][:40] in backend.prompts[2]
    assert tree.meta["passed"] and tree.meta["turns_solved"] == 2


def test_dfsdt_on_the_real_model(model_ctx, registry, first_turn_entry):
    """The default model, two entries in one wave: valid trees within the budget."""
    ctx = model_ctx(warmup="none", rounds=0, search={"name": "dfsdt", "options": {"max_queries": 1, "max_new_tokens": 8, "max_depth": 2, "retriever": "minilm", "top_k": 2}})
    calls = []
    real = ctx.backend

    class Counting:
        def generate(self, requests):
            calls.append(len(requests))
            return real.generate(requests)

    ctx.backend = Counting()
    searcher, opts = ctx.component("search")
    other = first_turn_entry.model_copy(update={"id": "copy"})
    trees = searcher.obj(ctx, [first_turn_entry, other], opts)
    for tree in trees:
        assert tree.meta["queries"] == 1 and tree.nodes[0].visits == tree.meta["queries"]
        assert all(n.meta["kind"] in {"root", "call", "answer", "give_up", "invalid"} for n in tree.nodes)
        assert all(n.value in (-1.0, 0.0, 1.0) for n in tree.nodes)
    assert calls[0] == 2  # both entries' first messages went to the backend together
