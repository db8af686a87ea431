"""The ``self-judge`` reward: the policy's own A-D grade, read from letter log-probs."""

from __future__ import annotations

import pytest

from itool.plugins.rewards.self_judge import ANSWER_OPENING, SelfJudge, SelfJudgeOptions


@pytest.fixture
def ctx(model_ctx):
    return model_ctx(reward="self-judge", dataset={"name": "bfcl", "options": {
        "categories": ["simple_python"], "split_mode": "all"}})


def test_rewards_are_expected_grades_in_range(ctx):
    sample = ctx.samples("train")[0]
    texts = [ctx.format.render_answer(sample.answer), "[wrong_function(x=1)]"]
    rewards = ctx.reward.score(sample, texts)
    assert len(rewards) == 2 and all(-1.0 <= r <= 1.0 for r in rewards)
    assert rewards[0] != rewards[1]  # the grades depend on the candidate
    # the grade probabilities are renormalised over A-D: equal weights give exactly that weight
    flat = SelfJudge(ctx, SelfJudgeOptions(weights=[0.5] * 4))
    assert flat.score(sample, texts[:1]) == pytest.approx([0.5])


def test_the_judge_prompt_shows_reference_and_candidate_and_opens_the_grade(ctx):
    prompt = ctx.reward.judge_prompt("[f(a=1)]", "[g(b=2)]")
    assert "Reference answer: [f(a=1)]" in prompt and "Candidate answer: [g(b=2)]" in prompt
    assert prompt.endswith(ANSWER_OPENING)


def test_weights_must_be_four_values_in_range():
    with pytest.raises(ValueError, match="four weights"):
        SelfJudgeOptions(weights=[1.0, 2.0, 0.0, -1.0])
