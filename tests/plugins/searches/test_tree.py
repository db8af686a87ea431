"""Step splitters and the growing tree's bookkeeping (no model needed; the default model's tokenizer for
token-aligned cuts)."""

from __future__ import annotations

import math

import pytest

from itool.errors import ItoolError
from itool.schemas import Sample
from itool.plugins.searches.tree import (
    Tree, Waves, get_splitter, seed_sampling, split_call, split_call_syntax, split_line, split_none, step_prior,
    token_aligned,
)


def steps(text: str, splitter) -> list[str]:
    """Cut a whole answer into consecutive steps, the way repeated expansions would."""
    out = []
    while text:
        cut = splitter(text)
        out.append(text[:cut])
        text = text[cut:]
    return out


def test_call_syntax_steps_pair_a_value_with_the_next_parameter_name():
    answer = '[get_weather(city="Paris", unit="celsius"), get_time(zone="CET")]'
    assert steps(answer, split_call_syntax) == [
        "[get_weather(city=", '"Paris", unit=', '"celsius"), get_time(', 'zone="CET")]',
    ]


def test_call_syntax_keeps_a_text_with_fewer_than_two_boundaries_whole():
    assert split_call_syntax('"celsius")]') == len('"celsius")]')
    assert split_call_syntax("") == 0


def test_other_splitters():
    assert steps("[f(a=1), g(b=2), h()]", split_call) == ["[f(a=1), ", "g(b=2), ", "h()]"]
    assert steps("one\ntwo\n", split_line) == ["one\n", "two\n"]
    assert split_none("[f(a=1), g(b=2)]") == len("[f(a=1), g(b=2)]")


def test_token_aligned_cuts_end_where_the_models_tokens_end(shared_policy):
    """SmolLM2 writes ``='`` as one token: the step takes the quote with it, so the next step starts
    where the model's own next token would."""
    tokenizer = shared_policy.tokenizer
    answer = "[get_weather(city='Paris', unit='celsius')]"
    aligned = steps(answer, token_aligned(split_call_syntax, tokenizer))
    assert aligned == ["[get_weather(city='", "Paris', unit='", "celsius')]"]
    token_ends = {end for _, end in tokenizer(answer, add_special_tokens=False,
                                                return_offsets_mapping=True)["offset_mapping"]}
    assert len(aligned[0]) in token_ends and len(aligned[0] + aligned[1]) in token_ends
    assert steps(answer, split_call_syntax)[0] == "[get_weather(city="  # the character cut, inside ``='``


def test_token_aligned_keeps_whole_texts_and_slow_tokenizers_cuts(shared_policy):
    assert token_aligned(split_call_syntax, shared_policy.tokenizer)("Paris')]") == len("Paris')]")
    assert token_aligned(split_call_syntax, object()) is split_call_syntax


def test_unknown_splitter_is_a_one_line_error():
    with pytest.raises(ItoolError, match="unknown step splitter 'comma'.*call-syntax"):
        get_splitter("comma")


def test_prior_is_exp_of_the_mean_logprob_of_the_steps_tokens():
    assert step_prior([-1.0, -3.0, -100.0], 2) == pytest.approx(math.exp(-2.0))
    assert step_prior([], 0) == 1.0


def test_visits_are_own_plus_childrens_and_values_are_means():
    tree = Tree(Sample(id="s", messages=[]), prompt="P")
    a = tree.add(0, "[f(a=", prior=0.5, terminal=False)
    b = tree.add(0, "[g(b=", prior=0.5, terminal=False)
    c = tree.add(a.id, "1)]", prior=0.9, terminal=True)
    tree.evaluate(a.id, 0.2, rollout="[f(a=2)]")
    tree.evaluate(b.id, -1.0, rollout="[g(b=2)]")
    tree.evaluate(c.id, 1.0, rollout="[f(a=1)]")
    tree.evaluate(c.id, 1.0)  # a terminal leaf re-visited: its reward again, rollout kept
    assert tree.prefix(c.id) == "[f(a=1)]"
    assert [n.visits for n in tree.nodes] == [4, 3, 1, 2]
    for node in tree.nodes:
        assert node.visits == node.meta["own_visits"] + sum(k.visits for k in tree.children(node.id))
    assert tree.nodes[a.id].value == pytest.approx((0.2 + 1.0 + 1.0) / 3)
    assert tree.nodes[0].value == pytest.approx((0.2 - 1.0 + 2.0) / 4)
    assert tree.nodes[c.id].rollout == "[f(a=1)]"
    assert tree.finish(search="x").model_dump()["meta"] == {"search": "x"}


class RecordingBackend:
    """Answers every request with its prompt echoed, and records the size of each call."""

    def __init__(self):
        self.call_sizes = []

    def generate(self, requests):
        self.call_sizes.append(len(requests))
        return [[r.prompt] for r in requests]


def test_waves_keep_order_and_split_by_wave_size():
    from itool.components import GenerationRequest

    requests = [GenerationRequest(prompt=str(i)) for i in range(5)]
    backend = RecordingBackend()
    batched, naive = Waves(backend), Waves(backend, wave_size=2)
    assert batched.generate(requests) == naive.generate(requests) == [[str(i)] for i in range(5)]
    assert backend.call_sizes == [5, 2, 2, 1]
    assert (batched.calls, naive.calls) == (1, 3)
    assert batched.generate([]) == [] and batched.calls == 1


def test_a_search_seed_draws_the_same_for_the_same_samples_and_differently_for_another_chunk():
    import torch

    def draws(seed, ids):
        seed_sampling(seed, [Sample(id=i, messages=[]) for i in ids])
        return torch.rand(4)

    assert torch.equal(draws(7, ["a", "b"]), draws(7, ["a", "b"]))
    assert not torch.equal(draws(7, ["a", "b"]), draws(7, ["c", "d"]))  # the next chunk of the stage
    assert not torch.equal(draws(7, ["a", "b"]), draws(8, ["a", "b"]))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    seed_sampling(None, [])  # no seed: the stream the loop seeded is left alone
    assert torch.equal(torch.rand(4), expected)
