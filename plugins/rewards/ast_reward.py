"""Reward ``ast``: a deterministic ground-truth check of a complete answer.

The answer is parsed with ``ctx.format`` (never executed) and graded by the BFCL checker's partial
credit ``c`` in [0, 1] (function name, parameter names and values each earn a share; ``c = 1`` exactly
when the BFCL evaluator accepts the answer). The reward is ``2c - 1``: 1 for an accepted answer, -1 for
an answer that does not parse or earns nothing, and in between for partly right calls.

Where no call is wanted, BFCL's checker accepts any output that does not decode as calls, a broken call
included; as a reward that pays the search for malformed calls (on round 1 of the BFCL experiment, 168
of the 178 rollouts it paid on no-call samples were call attempts that did not parse). Here an output
that does not parse earns -1 on every sample: declining means saying so, not failing to call.

Samples that carry no BFCL ``possible_answer`` (ToolACE, xLAM, ...) are checked against their own
``answer``: each argument's single accepted value is the ground truth's, calls match in any order.
"""

from __future__ import annotations

from typing import Any

from itool import hookimpl
from itool.errors import ItoolError
from itool.schemas import Sample
from itool.plugins.evaluators.bfcl_ast import Parts, is_relevance_category, partial_credit


def checker_parts(sample: Sample) -> Sample | Parts:
    """The sample itself when it has BFCL's accepted answers, else equivalent parts from ``answer``."""
    if "possible_answer" in sample.meta or is_relevance_category(sample.category):
        return sample
    if not sample.answer:
        return Parts("irrelevance", sample.tools, [])
    accepted = [{call.name: {k: [v] for k, v in call.arguments.items()}} for call in sample.answer]
    return Parts("parallel_multiple", sample.tools, accepted)


class AstReward:
    def __init__(self, format: Any):
        self.format = format

    def score(self, sample: Sample, texts: list[str]) -> list[float]:
        if sample.category.startswith("multi_turn"):
            raise ItoolError(f"the ast reward grades single-turn answers; sample {sample.id} is {sample.category}")
        parts = checker_parts(sample)
        parsed = [self.format.parse(text) for text in texts]
        return [2.0 * partial_credit(parts, p.calls) - 1.0 if p.ok else -1.0 for p in parsed]


def ast_reward(ctx, opts) -> AstReward:
    """Deterministic reward: BFCL AST partial credit of the parsed answer, mapped to [-1, 1]."""
    return AstReward(ctx.format)


@hookimpl
def register_rewards(register):
    register("ast", ast_reward)
