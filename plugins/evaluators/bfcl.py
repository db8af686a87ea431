"""Evaluator ``bfcl``: BFCL v4 accuracy of the policy, single-turn by AST check, multi-turn by execution.

Single-turn samples: every prompt is rendered with ``ctx.format`` and sent to ``ctx.backend`` in one
batched, greedy request list; each answer is parsed with ``ctx.format.parse`` (never executed) and
judged by ``bfcl_ast.check``. Multi-turn samples are played against BFCL's backends by
``bfcl_multiturn``. The summary rows follow BFCL v4's aggregation (see ``summary``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import GenerationRequest
from itool.plugins.evaluators.bfcl_ast import check
from itool.plugins.evaluators.bfcl_multiturn import is_multi_turn, run_multi_turn
from itool.plugins.evaluators.summary import summarize
from itool.schemas import EvalReport, Sample, Verdict


class BfclEvalOptions(BaseModel):
    max_new_tokens: int = Field(192, ge=1, description="Generation cap per answer (per multi-turn step); BFCL's longest reference answer has 179 tokens.")
    max_steps_per_turn: int = Field(3, ge=1, description="Multi-turn: model generations allowed per user turn.")
    greedy_parallel: bool = Field(
        False, description="Match parallel calls first-fit like BFCL's checker instead of by a one-to-one assignment."
    )
    underscore_to_dot: bool = Field(
        False, description="Expect dots in function names as underscores (for formats that rewrite them)."
    )


def _single_turn(ctx: Any, samples: list[Sample], opts: BfclEvalOptions) -> list[Verdict]:
    if not samples:
        return []
    tokenizer = ctx.policy.tokenizer
    requests = [
        GenerationRequest(prompt=ctx.format.render_prompt(s, tokenizer), max_new_tokens=opts.max_new_tokens,
                          temperature=0.0)
        for s in samples
    ]
    verdicts = []
    for sample, generations in zip(samples, ctx.backend.generate(requests)):
        text = generations[0].text
        parsed = ctx.format.parse(text)
        result = check(sample, parsed.calls, underscore_to_dot=opts.underscore_to_dot,
                       greedy_parallel=opts.greedy_parallel)
        error = result.error if parsed.error is None else f"{result.error} (parse: {parsed.error})"
        verdicts.append(Verdict(sample_id=sample.id, category=sample.category, valid=result.valid,
                                error_type=result.error_type, error=None if result.valid else error, output=text))
    return verdicts


def evaluate(ctx: Any, samples: list[Sample], opts: BfclEvalOptions) -> EvalReport:
    """BFCL v4: AST checks for single-turn categories, executed backends for multi-turn ones."""
    by_id = {
        v.sample_id: v
        for v in [
            *_single_turn(ctx, [s for s in samples if not is_multi_turn(s)], opts),
            *run_multi_turn(ctx, [s for s in samples if is_multi_turn(s)], opts.max_new_tokens,
                            opts.max_steps_per_turn),
        ]
    }
    verdicts = [by_id[s.id] for s in samples]
    return EvalReport(verdicts=verdicts, summary=summarize(verdicts))


@hookimpl
def register_evaluators(register):
    register("bfcl", evaluate, options=BfclEvalOptions)
