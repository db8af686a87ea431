"""Evaluator ``bfcl``: BFCL v4 accuracy of the policy, single-turn by AST check, multi-turn by execution.

Single-turn samples: every prompt is rendered with ``ctx.format`` and sent to ``ctx.backend`` in one
batched, greedy request list; each answer is parsed (never executed) and judged by ``bfcl_ast.check``.
Multi-turn samples are played against BFCL's backends by ``bfcl_multiturn``. The summary rows follow
BFCL v4's aggregation (see ``summary``).

``scoring`` chooses between BFCL's own scoring and ours (docs/evaluation.md lists every difference):

- ``bfcl`` (default; numbers comparable with the leaderboard): answers are read as BFCL's prompting
  decoder reads them (the format's ``parse_as_bfcl`` where it has one: keyword arguments only, a bare
  name as a string, tuples as tuples, nothing but the call list), parallel calls are matched
  first-fit, entries whose ground truth leaves a required parameter without any accepted value are
  scored (they always fail), and categories not evaluated count as 0 in the summary;
- ``itool``: answers are read by the format's own parser (prose around the call list and positional
  arguments are fine, a tuple is a list), parallel calls are matched one-to-one, unanswerable entries
  are left out, and the summary averages over the categories evaluated.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import Field

from itool import hookimpl
from itool.components import GenerationRequest, ParseResult
from itool.plugins.evaluators.bfcl_ast import check
from itool.plugins.evaluators.bfcl_multiturn import is_multi_turn, run_multi_turn
from itool.plugins.evaluators.safe_dispatch import CallLimits
from itool.plugins.evaluators.summary import Scoring, summarize
from itool.schemas import EvalReport, Sample, Verdict


class BfclEvalOptions(CallLimits):
    scoring: Scoring = Field(
        "bfcl", description="'bfcl': BFCL's own decoding, matching and aggregation (leaderboard-comparable); "
        "'itool': our parser, one-to-one parallel matching, unanswerable entries left out, averages over the categories run.",
    )
    max_new_tokens: int = Field(192, ge=1, description="Generation cap per answer (per multi-turn step); BFCL's longest reference answer has 179 tokens.")
    max_steps_per_turn: int = Field(3, ge=1, description="Multi-turn: model generations allowed per user turn.")
    greedy_parallel: bool | None = Field(
        None, description="Match parallel calls first-fit like BFCL's checker (true) or by a one-to-one assignment "
        "(false); default: first-fit under scoring=bfcl, one-to-one under scoring=itool.",
    )
    underscore_to_dot: bool = Field(
        False, description="Expect dots in function names as underscores (for formats that rewrite them)."
    )


def decoder(ctx: Any, scoring: Scoring) -> Callable[[str], ParseResult]:
    """How answers are read: as BFCL's prompting decoder would (when the format can) or by the format."""
    return getattr(ctx.format, "parse_as_bfcl", ctx.format.parse) if scoring == "bfcl" else ctx.format.parse


def is_unanswerable(sample: Sample) -> bool:
    """The ground truth leaves a required parameter with no accepted value: no answer can pass."""
    return bool(sample.meta.get("unanswerable"))


def _single_turn(ctx: Any, samples: list[Sample], opts: BfclEvalOptions) -> list[Verdict]:
    if not samples:
        return []
    tokenizer = ctx.policy.tokenizer
    requests = [
        GenerationRequest(prompt=ctx.format.render_prompt(s, tokenizer), max_new_tokens=opts.max_new_tokens,
                          temperature=0.0)
        for s in samples
    ]
    parse = decoder(ctx, opts.scoring)
    greedy = opts.scoring == "bfcl" if opts.greedy_parallel is None else opts.greedy_parallel
    verdicts = []
    for sample, generations in zip(samples, ctx.backend.generate(requests)):
        text = generations[0].text
        parsed = parse(text)
        result = check(sample, parsed.calls, underscore_to_dot=opts.underscore_to_dot, greedy_parallel=greedy)
        error = result.error if parsed.error is None else f"{result.error} (parse: {parsed.error})"
        verdicts.append(Verdict(sample_id=sample.id, category=sample.category, valid=result.valid,
                                error_type=result.error_type, error=None if result.valid else error, output=text))
    return verdicts


def evaluate(ctx: Any, samples: list[Sample], opts: BfclEvalOptions) -> EvalReport:
    """BFCL v4: AST checks for single-turn categories, executed backends for multi-turn ones."""
    if opts.scoring == "itool":
        samples = [s for s in samples if not is_unanswerable(s)]
    by_id = {
        v.sample_id: v
        for v in [
            *_single_turn(ctx, [s for s in samples if not is_multi_turn(s)], opts),
            *run_multi_turn(ctx, [s for s in samples if is_multi_turn(s)], opts.max_new_tokens,
                            opts.max_steps_per_turn, limits=opts, parse=decoder(ctx, opts.scoring)),
        ]
    }
    verdicts = [by_id[s.id] for s in samples]
    return EvalReport(verdicts=verdicts, summary=summarize_verdicts(verdicts, opts))


def summarize_verdicts(verdicts: list[Verdict], opts: BfclEvalOptions) -> dict[str, float]:
    """The summary rows of any list of verdicts: the loop evaluates in chunks and summarises them all."""
    return summarize(verdicts, opts.scoring)


@hookimpl
def register_evaluators(register):
    register("bfcl", evaluate, options=BfclEvalOptions, summarize=summarize_verdicts)
