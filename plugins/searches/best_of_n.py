"""Search ``best-of-n``: the response-level baseline. ``n`` complete answers per sample, all samples in
one wave, stored as a root with ``n`` children (each child is a whole answer and its own rollout), so
the same pair builders apply: the ``step`` builder at the root is then best vs worst response."""

from __future__ import annotations

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import GenerationRequest
from itool.schemas import Sample, SearchTree
from itool.plugins.searches.tree import Tree, Waves, render_prompts, score_rollouts, seed_sampling, step_prior


class BestOfNOptions(BaseModel):
    n: int = Field(4, ge=1, description="Complete answers sampled per sample.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens allowed per answer.")
    seed: int | None = Field(None, description="Seed for sampling; default: the seed the run set for this stage.")
    wave_size: int | None = Field(None, ge=1, description="Max requests per backend call; 1 = one sample per call.")


def best_of_n(ctx, samples: list[Sample], opts: BestOfNOptions) -> list[SearchTree]:
    """n sampled answers per sample, scored by the reward (response-level baseline)."""
    seed_sampling(opts.seed, samples)
    waves = Waves(ctx.backend, opts.wave_size)
    trees = [Tree(sample, prompt) for sample, prompt in zip(samples, render_prompts(ctx, samples), strict=True)]
    answers = waves.generate([
        GenerationRequest(prompt=tree.prompt, n=opts.n, max_new_tokens=opts.max_new_tokens,
                          temperature=opts.temperature, top_p=opts.top_p)
        for tree in trees
    ])
    pending = []
    for index, (tree, gens) in enumerate(zip(trees, answers, strict=True)):
        for gen in gens:
            child = tree.add(0, gen.text, prior=step_prior(gen.token_logprobs, len(gen.token_logprobs)),
                             terminal=True, finish_reason=gen.finish_reason)
            pending.append((index, child.id, gen.text))
    score_rollouts(ctx, trees, pending)
    return [tree.finish(search="best-of-n", n=opts.n, generate_calls=waves.calls) for tree in trees]


@hookimpl
def register_searches(register):
    register("best-of-n", best_of_n, options=BestOfNOptions, produces="samples")
