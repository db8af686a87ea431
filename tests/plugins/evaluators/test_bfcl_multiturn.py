"""Multi-turn BFCL: the checker accepts the ground truth and rejects wrong or missing calls; the runner
plays turns and steps against the real backends, batched across entries."""

from __future__ import annotations

import pytest

from itool.components import Generation
from itool.plugins.datasets.bfcl import BfclOptions, load
from itool.plugins.evaluators.bfcl_multiturn import (check_multi_turn, entry_of, ground_truth_steps,
                                                     run_multi_turn)
from itool.schemas import ToolCall

MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]


@pytest.fixture(scope="module")
def samples():
    return {s.id: s for s in load("all", BfclOptions(categories=MULTI_TURN, split_mode="all"))}


@pytest.mark.parametrize("category", MULTI_TURN)
def test_ground_truth_replayed_as_the_model_passes(samples, category):
    for sample in [s for s in samples.values() if s.category == category][:25]:
        entry = entry_of(sample)
        assert check_multi_turn(entry, ground_truth_steps(entry)).valid, sample.id


def test_wrong_missing_and_extra_calls_fail_with_bfcls_error_types(samples):
    entry = entry_of(samples["multi_turn_base_0"])
    steps = ground_truth_steps(entry)
    first = steps[0][0]
    dropped = [[first[:-1]], *steps[1:]]
    assert check_multi_turn(entry, dropped).error_type == "multi_turn:instance_state_mismatch"
    silent = [[], *steps[1:]]
    assert check_multi_turn(entry, silent).error_type == "multi_turn:empty_turn_model_response"
    wrong_value = [[[*first[:-1], first[-1].model_copy(update={"arguments": {"#0": "nowhere"}})]], *steps[1:]]
    assert not check_multi_turn(entry, wrong_value).valid
    assert check_multi_turn(entry, steps[:-1]).error_type == "multi_turn:force_terminated"


def test_a_read_only_turn_is_checked_by_its_results(samples):
    """A turn whose ground truth only reads (e.g. ``cat``) changes no state: the results must match."""
    for sample in samples.values():
        entry = entry_of(sample)
        steps = ground_truth_steps(entry)
        readers = [t for t, turn in enumerate(entry.ground_truth) if turn and all(c.startswith(("cat(", "ls(")) for c in turn)]
        if readers and sample.category == "multi_turn_base":
            t = readers[0]
            wrong = [*steps[:t], [[ToolCall(name="pwd")]], *steps[t + 1:]]
            assert check_multi_turn(entry, wrong).error_type == "multi_turn:execution_response_mismatch"
            return
    pytest.fail("no read-only turn found")


class ReplayBackend:
    """Answers the first step of each user turn with given call text, then says it is done."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers  # user message -> answer text
        self.answered: set[str] = set()
        self.batches: list[int] = []

    def generate(self, requests):
        self.batches.append(len(requests))
        out = []
        for request in requests:
            latest = max(self.answers, key=lambda u: request.prompt.rfind(u))
            text = "Done." if latest in self.answered else self.answers[latest]
            self.answered.add(latest)
            out.append([Generation(text=text, token_logprobs=[], finish_reason="stop")])
        return out


class Ctx:
    def __init__(self, format_, tokenizer, backend):
        self.format, self.backend = format_, backend
        self.policy = type("P", (), {"tokenizer": tokenizer})()


def test_runner_plays_every_turn_batched_and_grades_it(samples, registry, shared_policy):
    chosen = [samples["multi_turn_base_0"], samples["multi_turn_base_1"]]
    answers = {}
    for sample in chosen:
        entry = entry_of(sample)
        for user, calls in zip(entry.user_turns, entry.ground_truth):
            answers[user[-1].content] = f"[{', '.join(calls)}]" if calls else "I cannot do that."
    factory = registry.get("format", "python")
    backend = ReplayBackend(answers)
    verdicts = run_multi_turn(Ctx(factory.obj(factory.parse_options({})), shared_policy.tokenizer, backend),
                              chosen, max_new_tokens=64, max_steps_per_turn=3)
    assert [v.valid for v in verdicts] == [True, True], [v.error for v in verdicts]
    assert backend.batches[0] == 2  # both entries' first steps went out together
    assert "Done." in verdicts[0].output

    # The same run where the model stops calling after the first turn fails at the second.
    first_only = {u: (a if i == 0 else "Done.") for i, (u, a) in enumerate(answers.items())}
    verdicts = run_multi_turn(Ctx(factory.obj(factory.parse_options({})), shared_policy.tokenizer,
                                  ReplayBackend(first_only)), chosen[:1], max_new_tokens=64, max_steps_per_turn=3)
    assert verdicts[0].error_type == "multi_turn:empty_turn_model_response"


def test_under_bfcls_decoder_positional_arguments_are_dropped(samples, registry, shared_policy):
    """scoring=bfcl reads each step as BFCL's decoder does: the ground truth's ``touch('result.txt')``
    becomes ``touch()``, so replaying it fails there and passes with our parser."""
    sample = samples["multi_turn_base_32"]
    entry = entry_of(sample)
    answers = {user[-1].content: f"[{', '.join(calls)}]" for user, calls in zip(entry.user_turns, entry.ground_truth)}
    assert "touch('result.txt')" in "".join(answers.values())
    factory = registry.get("format", "python")
    fmt = factory.obj(factory.parse_options({}))
    ours, bfcl = (run_multi_turn(Ctx(fmt, shared_policy.tokenizer, ReplayBackend(answers)), [sample],
                                 max_new_tokens=64, max_steps_per_turn=3, parse=parse)[0]
                  for parse in (fmt.parse, fmt.parse_as_bfcl))
    assert ours.valid, ours.error
    assert not bfcl.valid and bfcl.error_type == "multi_turn:instance_state_mismatch"
