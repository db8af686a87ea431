"""Sampler ``perplexity``: iTool's complex-sample selection.

Each sample's reference answer (``ctx.format.render_answer(sample.answer)``) is scored under the current
policy after its prompt, answer tokens only, in batched ``ctx.backend.score`` calls of ``SCORE_CHUNK``
samples, each chunk journaled (``itool.loop.in_chunks``) so that a stopped selection resumes;
perplexity = ``exp(-logprob_sum / n_tokens)``. The highest-perplexity ``fraction`` is kept: the samples
the policy finds hardest. With ``stratify`` (the official code's way) answers that call a tool and
answers that call none are ranked and cut separately, each keeping ``fraction`` of its group, so the
no-call answers (often long prose with a high perplexity) do not crowd out the calls.

Writes ``perplexity.jsonl`` (id, kind, perplexity, selected) into the stage folder and logs the
distribution (mean, median, min, max) of each group.
"""

from __future__ import annotations

import math
import statistics

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.loop import in_chunks
from itool.rundir import write_jsonl
from itool.schemas import Sample
from itool.plugins.samplers.simple import DEFAULT_FRACTION, keep_count


# Answers scored per journaled chunk: on 2 CPU cores one takes about 2 minutes, so a stop loses at most
# that; several decode batches each, so chunking costs no batching.
SCORE_CHUNK = 64


class PerplexityOptions(BaseModel):
    fraction: float = Field(DEFAULT_FRACTION, gt=0, le=1, description="Share of the samples to keep (official code 0.3; paper 0.1).")
    stratify: bool = Field(True, description="Select call and no-call answers separately, each with the fraction.")


def answer_perplexities(ctx, samples: list[Sample]) -> list[float]:
    """Perplexity of each sample's reference answer under the policy (answer tokens only; NaN for an
    empty answer)."""
    tokenizer = ctx.policy.tokenizer

    def score(chunk: list[Sample]) -> list[float | None]:  # None: JSON has no NaN
        prompts = [ctx.format.render_prompt(s, tokenizer) for s in chunk]
        answers = [ctx.format.render_answer(s.answer) for s in chunk]
        return [math.exp(-s.logprob_sum / s.n_tokens) if s.n_tokens else None
                for s in ctx.backend.score(prompts, answers)]

    with in_chunks(ctx, "perplexity", samples, SCORE_CHUNK, score) as rows:
        return [math.nan if value is None else value for value in rows]


def perplexity_sampler(ctx, samples: list[Sample], opts: PerplexityOptions) -> list[Sample]:
    """The highest-perplexity fraction of the samples under the current policy (iTool's selection)."""
    ppl = answer_perplexities(ctx, samples)
    kinds = ["call" if s.answer else "no-call" for s in samples] if opts.stratify else ["all"] * len(samples)
    selected: set[int] = set()
    for kind in sorted(set(kinds)):
        group = [i for i, k in enumerate(kinds) if k == kind]
        ranked = sorted(group, key=lambda i: -ppl[i] if not math.isnan(ppl[i]) else math.inf)
        selected.update(ranked[: keep_count(len(group), opts.fraction)])
        values = [ppl[i] for i in group if not math.isnan(ppl[i])]
        if values:
            ctx.log("perplexity", group=kind, n=len(group), kept=keep_count(len(group), opts.fraction),
                    mean=statistics.fmean(values), median=statistics.median(values),
                    min=min(values), max=max(values))
    write_jsonl(ctx.stage_dir / "perplexity.jsonl", [
        {"id": s.id, "kind": kinds[i], "perplexity": None if math.isnan(ppl[i]) else ppl[i],
         "selected": i in selected}
        for i, s in enumerate(samples)
    ])
    return [s for i, s in enumerate(samples) if i in selected]


@hookimpl
def register_samplers(register):
    register("perplexity", perplexity_sampler, options=PerplexityOptions)
