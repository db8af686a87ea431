"""The ``ast`` reward on real BFCL samples: ground truth 1.0, partly right calls in between, broken -1."""

from __future__ import annotations

import pytest

from itool.schemas import Sample, ToolCall


@pytest.fixture
def ctx(make_ctx):
    return make_ctx(reward="ast", dataset={"name": "bfcl", "options": {
        "categories": ["simple_python", "parallel", "irrelevance"], "split_mode": "all"}})


def first(ctx, category: str) -> Sample:
    return next(s for s in ctx.samples("train") if s.category == category)


def test_ground_truth_scores_one_and_wrong_calls_score_lower(ctx):
    sample = first(ctx, "simple_python")
    truth = ctx.format.render_answer(sample.answer)
    call = sample.answer[0]
    wrong_value = ToolCall(name=call.name, arguments={k: "nonsense-value" for k in call.arguments})
    wrong_name = ToolCall(name="no_such_function", arguments=call.arguments)
    scores = ctx.reward.score(sample, [truth, ctx.format.render_answer([wrong_value]),
                                       ctx.format.render_answer([wrong_name]), truth[:-3], "I cannot help."])
    assert scores[0] == 1.0
    assert -1.0 < scores[1] < scores[0]  # right name and parameter names earn partial credit
    assert scores[2] == scores[3] == scores[4] == -1.0  # wrong function, truncated output, no call


def test_parallel_calls_match_in_any_order(ctx):
    sample = first(ctx, "parallel")
    assert len(sample.answer) > 1
    reordered = ctx.format.render_answer(list(reversed(sample.answer)))
    half = ctx.format.render_answer(sample.answer[:1])
    full, partial = ctx.reward.score(sample, [reordered, half])
    assert full == 1.0 and -1.0 < partial < 1.0  # one of the calls right: partial credit


def test_irrelevance_rewards_declining_to_call(ctx):
    sample = first(ctx, "irrelevance")
    assert ctx.reward.score(sample, ["None of these functions fits.", "[some_function(x=1)]"]) == [1.0, -1.0]


def test_a_call_that_does_not_parse_is_not_declining(ctx):
    # BFCL's irrelevance check accepts these (they do not decode as calls); as a reward they would teach
    # the model to write broken calls where it should say that no function fits.
    sample = first(ctx, "irrelevance")
    broken = ["[get_stats(player_name=Michael Jordan)]", "[get_stats(player_name=Michael.player_name)]", "[get_stats("]
    assert ctx.reward.score(sample, broken) == [-1.0, -1.0, -1.0]


def test_samples_without_bfcl_answers_are_checked_against_their_own_answer(ctx):
    tools = [{"name": "add", "description": "", "parameters": {
        "type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}]
    sample = Sample(id="x", category="toolace", messages=[], tools=tools,
                    answer=[ToolCall(name="add", arguments={"a": 1, "b": 2})])
    assert ctx.reward.score(sample, ["[add(a=1, b=2)]", "[add(a=1, b=3)]", "[add(b=2, a=1)]"]) == [
        1.0, pytest.approx(2 * (1 + 1 + 0.5) / 3 - 1), 1.0]
