"""Search ``puct``: iTool's step-level Monte-Carlo tree search over the answer text.

A node is a *step*, a fragment of the answer appended to its parent's prefix (cut by a step splitter,
see ``itool.plugins.searches.tree``, at the end of a token). One simulation, for every sample at once:

1. selection: from the root, follow ``argmax Q + c·p·sqrt(N_parent)/(1+N)`` down to a leaf, where ``Q``
   is the child's mean value, ``N`` visit counts and ``p = exp(mean token log-prob of the step)``;
2. expansion: sample ``width`` continuations of the leaf's prefix, cut each at its first step, one
   child per distinct step (a step that ends the answer, i.e. the model stopped, makes a terminal node);
   a sample ends as soon as its first step is complete (``GenerationRequest.enough``);
3. rollout: complete every new non-terminal child to a full answer (greedy by default);
4. evaluation: score each complete answer with ``ctx.reward`` and backpropagate it (mean value).

A leaf that cannot grow (terminal, or at ``max_depth``) is re-evaluated instead: its reward is
backpropagated once more, so visit counts still grow where the search keeps going.

Batching: the searches of all samples advance in lock-step and each phase sends the requests of every
open leaf across the batch to ``ctx.backend.generate`` in one call (a *wave*): two calls per
simulation, whatever the number of samples. ``wave_size=1`` gives the naive one-request-per-call
search, for comparison (benchmarks/search_throughput.py).
"""

from __future__ import annotations

import math
import time

from pydantic import BaseModel, Field, field_validator
from tqdm.auto import tqdm

from itool import hookimpl
from itool.components import Generation, GenerationRequest, kept_prefixes
from itool.schemas import Sample, SearchNode, SearchTree
from itool.plugins.searches.tree import (
    STEP_SPLITTERS, Tree, Waves, get_splitter, render_prompts, score_rollouts, seed_sampling, step_prior,
    token_aligned,
)


class PuctOptions(BaseModel):
    simulations: int = Field(5, ge=1, description="Simulations (select → expand → rollout → backpropagate) per sample.")
    width: int = Field(3, ge=1, description="Continuations sampled per expansion (children per node, before dedupe).")
    max_depth: int = Field(3, ge=1, description="Deepest step level that is created; leaves there are not expanded.")
    c_puct: float = Field(1.0, ge=0, description="Exploration weight c of the PUCT rule.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of expansions (official code: 1.5).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of expansions.")
    step_max_tokens: int = Field(32, ge=1, description="Tokens generated per expansion before the step is cut.")
    rollout_max_tokens: int = Field(128, ge=1, description="Tokens allowed to complete a rollout.")
    rollout_temperature: float = Field(0.0, ge=0, description="Rollout temperature; 0 = greedy.")
    splitter: str = Field("call-syntax", description=f"Step splitter: {', '.join(STEP_SPLITTERS)}.")
    token_aligned: bool = Field(
        True, description="Move each step's cut to the end of the token it falls in (false: cut at the "
                          "splitter's character, as the official code does; prefixes then end inside a token).")
    seed: int | None = Field(None, description="Seed for sampling; default: the seed the run set for this stage.")
    wave_size: int | None = Field(None, ge=1, description="Max requests per backend call; 1 = naive (no batching).")
    keep_prefixes: bool = Field(
        True, description="Let the backend keep encoded prompts between waves (false: the naive baseline).")

    @field_validator("splitter")
    @classmethod
    def _known_splitter(cls, name: str) -> str:
        if name not in STEP_SPLITTERS:
            raise ValueError(f"unknown step splitter {name!r} (available: {', '.join(STEP_SPLITTERS)})")
        return name


def puct_score(parent: SearchNode, child: SearchNode, c_puct: float) -> float:
    """``Q(s,a) + c · p(a|s) · sqrt(N(s)) / (1 + N(s,a))``."""
    return child.value + c_puct * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


def select_leaf(tree: Tree, c_puct: float) -> int:
    """Walk from the root to a leaf, taking the child with the best PUCT score (first on ties)."""
    node = tree.nodes[0]
    while tree.kids[node.id]:
        node = max(tree.children(node.id), key=lambda child: puct_score(node, child, c_puct))
    return node.id


def expand(tree: Tree, leaf: int, generations: list[Generation], splitter, count_tokens) -> list[SearchNode]:
    """Add one child per distinct first step of the sampled continuations."""
    added: list[SearchNode] = []
    seen: set[str] = set()
    for gen in generations:
        cut = splitter(gen.text)
        step = gen.text[:cut]
        whole = cut >= len(gen.text)
        terminal = whole and gen.finish_reason == "stop"
        if step in seen or (not step and not terminal):
            continue
        seen.add(step)
        n_tokens = len(gen.token_logprobs) if whole else count_tokens(step)
        added.append(tree.add(leaf, step, prior=step_prior(gen.token_logprobs, n_tokens), terminal=terminal))
    return added


def step_splitter(opts: PuctOptions, tokenizer):
    """The options' splitter, its cuts moved to token ends unless ``token_aligned`` is off."""
    splitter = get_splitter(opts.splitter)
    return token_aligned(splitter, tokenizer) if opts.token_aligned else splitter


def puct(ctx, samples: list[Sample], opts: PuctOptions) -> list[SearchTree]:
    """Step-level MCTS with PUCT selection (iTool), batched across samples in waves."""
    seed_sampling(opts.seed, samples)
    tokenizer = ctx.policy.tokenizer
    splitter = step_splitter(opts, tokenizer)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    waves = Waves(ctx.backend, opts.wave_size)
    trees = [Tree(sample, prompt) for sample, prompt in zip(samples, render_prompts(ctx, samples), strict=True)]
    with kept_prefixes(ctx.backend, opts.keep_prefixes):
        for simulation in tqdm(range(opts.simulations), desc="puct", unit="sim", disable=not samples):
            simulate(ctx, trees, waves, opts, splitter, count_tokens, simulation)
    return [tree.finish(search="puct", simulations=opts.simulations, generate_calls=waves.calls) for tree in trees]


def simulate(ctx, trees: list[Tree], waves: Waves, opts: PuctOptions, splitter, count_tokens, simulation: int) -> None:
    """One simulation for every tree: select, expand (one wave), roll out (one wave), backpropagate."""
    started = time.perf_counter()
    open_leaves: list[tuple[int, int]] = []
    for index, tree in enumerate(trees):
        leaf = select_leaf(tree, opts.c_puct)
        node = tree.nodes[leaf]
        if node.terminal or tree.depth(leaf) >= opts.max_depth:
            tree.evaluate(leaf, node.meta["reward"])
        else:
            open_leaves.append((index, leaf))

    expansions = waves.generate([
        GenerationRequest(prompt=trees[i].prompt + trees[i].prefix(leaf), n=opts.width,
                          max_new_tokens=opts.step_max_tokens, temperature=opts.temperature, top_p=opts.top_p,
                          enough=lambda text: splitter(text) < len(text))
        for i, leaf in open_leaves
    ])
    children = [(i, child) for (i, leaf), gens in zip(open_leaves, expansions, strict=True)
                for child in expand(trees[i], leaf, gens, splitter, count_tokens)]

    to_roll = [(i, child) for i, child in children if not child.terminal]
    rollouts = waves.generate([
        GenerationRequest(prompt=trees[i].prompt + trees[i].prefix(child.id), n=1,
                          max_new_tokens=opts.rollout_max_tokens, temperature=opts.rollout_temperature)
        for i, child in to_roll
    ])
    completions = {(i, child.id): gens[0].text for (i, child), gens in zip(to_roll, rollouts, strict=True)}
    score_rollouts(ctx, trees, [
        (i, child.id, trees[i].prefix(child.id) + completions.get((i, child.id), ""))
        for i, child in children
    ])
    ctx.log("simulation", simulation=simulation, open_leaves=len(open_leaves), new_nodes=len(children),
            generate_calls=waves.calls, seconds=round(time.perf_counter() - started, 3))


@hookimpl
def register_searches(register):
    register("puct", puct, options=PuctOptions, produces="step-values")
