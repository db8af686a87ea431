"""Reward ``self-judge``: the policy grades its own answer against the ground truth, as the official
iTool code does.

The judge prompt (our wording of the official one) shows the reference answer (the sample's ``answer``
rendered by ``ctx.format``) and the candidate, lists the criteria (function names, argument count,
names, values/types, meaning) and offers four grades, (A) excellent ... (D) poor. The assistant turn is
opened with ``The grade is (`` and ``ctx.backend.score`` gives the log-prob of each letter as the next
token. The letter probabilities, renormalised over A-D, weight the grades' values:

    reward = sum_g p(g) * weight(g),   weights (A, B, C, D) = (1, 1/3, -1/3, -1) by default

so the reward is an expected grade in [-1, 1]. (The official code sums top-4 token probabilities with
weights 1, 0.1, -1, -2 divided by 4; we keep its order but use an even scale that spans [-1, 1].)
It costs one scoring pass per answer and grade, no generation. A small policy is a noisy judge: the
``ast`` reward is the deterministic alternative.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, field_validator

from itool import hookimpl
from itool.schemas import Sample

GRADES = ("A", "B", "C", "D")
JUDGE_SYSTEM = "You grade the answers that an assistant gives to function-calling requests."
JUDGE_PROMPT = (
    "Reference answer: {truth}\n"
    "Candidate answer: {candidate}\n\n"
    "How good is the candidate compared with the reference? A candidate that is a correct part of the "
    "reference is also excellent. Look at:\n"
    "1. the names of the functions called;\n"
    "2. the number of arguments of each call;\n"
    "3. the names of the arguments;\n"
    "4. the values and types of the arguments;\n"
    "5. whether it means the same as the reference.\n\n"
    "Pick one grade:\n"
    "(A) Excellent: meets every point and is almost the same as the reference.\n"
    "(B) Acceptable: meets most points, with small differences.\n"
    "(C) Fair: meets some points but has serious problems.\n"
    "(D) Poor: misses most or all points.\n"
    "Answer with the letter of the grade."
)
ANSWER_OPENING = "The grade is ("


class SelfJudgeOptions(BaseModel):
    weights: list[float] = Field([1.0, 1 / 3, -1 / 3, -1.0], description="Reward of grades A, B, C, D, each in [-1, 1].")

    @field_validator("weights")
    @classmethod
    def _four_in_range(cls, weights: list[float]) -> list[float]:
        if len(weights) != len(GRADES) or any(not -1.0 <= w <= 1.0 for w in weights):
            raise ValueError("give four weights (A, B, C, D), each in [-1, 1]")
        return weights


class SelfJudge:
    def __init__(self, ctx, opts: SelfJudgeOptions):
        self.ctx = ctx
        self.weights = opts.weights

    def judge_prompt(self, truth: str, candidate: str) -> str:
        messages = [{"role": "system", "content": JUDGE_SYSTEM},
                    {"role": "user", "content": JUDGE_PROMPT.format(truth=truth, candidate=candidate)}]
        chat = self.ctx.policy.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return chat + ANSWER_OPENING

    def score(self, sample: Sample, texts: list[str]) -> list[float]:
        truth = self.ctx.format.render_answer(sample.answer)
        prompts = [self.judge_prompt(truth, text) for text in texts]
        scores = self.ctx.backend.score([p for p in prompts for _ in GRADES], [g for _ in prompts for g in GRADES])
        rewards = []
        for start in range(0, len(scores), len(GRADES)):
            logps = [s.logprob_sum for s in scores[start : start + len(GRADES)]]
            top = max(logps)
            probs = [math.exp(lp - top) for lp in logps]
            rewards.append(sum(p * w for p, w in zip(probs, self.weights)) / sum(probs))
        return rewards


def self_judge(ctx, opts: SelfJudgeOptions) -> SelfJudge:
    """The policy grades its answer against the ground truth (A-D letter log-probs), as in iTool's code."""
    return SelfJudge(ctx, opts)


@hookimpl
def register_rewards(register):
    register("self-judge", self_judge, options=SelfJudgeOptions)
