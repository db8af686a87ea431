"""Building blocks shared by the tree searches: step splitters, a growing tree with mean-value
backpropagation, and waves of generation requests.

A search never talks to the model directly: it collects requests from every open leaf of every sample
and hands them to the backend as one *wave* (``Waves.generate``), so the backend can batch them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from itool.components import Generation, GenerationBackend, GenerationRequest
from itool.context import derived_seed
from itool.errors import ItoolError
from itool.schemas import Sample, SearchNode, SearchTree

# -- step splitters ---------------------------------------------------------------------------------
# A splitter takes a sampled continuation and returns where its first step ends (an index into the
# text); the rest of the continuation is dropped. Returning len(text) makes the whole text one step.

_CALL_BOUNDARY = re.compile(r"\. |, |=|\(")


def split_call_syntax(text: str) -> int:
    """Cut after the second call-syntax boundary (``(``, ``=``, ``, ``, ``. ``), as the official iTool
    code does: a step is then e.g. ``[get_weather(city=`` or ``"Paris", unit=`` -- a value plus the
    next parameter name, the fragments where small models go wrong. Boundaries inside string literals
    count too (the official code does not parse either)."""
    ends = [m.end() for m in _CALL_BOUNDARY.finditer(text)]
    return ends[1] if len(ends) >= 2 else len(text)


def split_call(text: str) -> int:
    """Cut after each complete call (``), ``): one step per function call of a parallel answer."""
    end = text.find("), ")
    return end + 3 if end >= 0 else len(text)


def split_line(text: str) -> int:
    """Cut after the first newline: one step per line (prose answers, multi-line formats)."""
    end = text.find("\n")
    return end + 1 if end >= 0 else len(text)


def split_none(text: str) -> int:
    """Never cut: every expansion is a whole answer (a response-level search)."""
    return len(text)


STEP_SPLITTERS: dict[str, Callable[[str], int]] = {
    "call-syntax": split_call_syntax,
    "call": split_call,
    "line": split_line,
    "none": split_none,
}


def get_splitter(name: str) -> Callable[[str], int]:
    try:
        return STEP_SPLITTERS[name]
    except KeyError:
        raise ItoolError(f"unknown step splitter {name!r} (available: {', '.join(STEP_SPLITTERS)})") from None


def token_aligned(splitter: Callable[[str], int], tokenizer: Any) -> Callable[[str], int]:
    """``splitter`` with each cut moved forward to the end of the token it falls in.

    A character boundary can fall inside a token: SmolLM2 writes ``='`` as one token, so a step cut after
    ``=`` leaves a prefix whose last token the model never produces there, and it continues with an
    unquoted value (``genre=Play``); pairs trained on such prefixes teach behaviour that greedy
    generation never reaches. Cutting at token ends avoids both. (Token healing in ``generate`` would
    mend the rollouts only, not the pairs' prefixes, and on one backend only.) Needs a fast tokenizer's
    offsets; with a slow one the cut is left where the splitter put it."""
    if not getattr(tokenizer, "is_fast", False):
        return splitter

    def split(text: str) -> int:
        cut = splitter(text)
        if cut >= len(text):
            return cut
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return next((end for _, end in offsets if end >= cut), len(text))

    return split


def step_prior(token_logprobs: list[float], n_tokens: int) -> float:
    """p(a|s) = exp(mean log-prob of the step's tokens), the official iTool prior."""
    used = token_logprobs[: max(1, n_tokens)]
    return math.exp(sum(used) / len(used)) if used else 1.0


# -- waves ------------------------------------------------------------------------------------------
class Waves:
    """Sends generation requests to the backend; ``wave_size`` caps requests per call (``None``: the
    whole wave in one call; ``1``: one request per call, the naive baseline). Counts the calls."""

    def __init__(self, backend: GenerationBackend, wave_size: int | None = None):
        self.backend = backend
        self.wave_size = wave_size
        self.calls = 0

    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        if not requests:
            return []
        size = self.wave_size or len(requests)
        out: list[list[Generation]] = []
        for start in range(0, len(requests), size):
            self.calls += 1
            out.extend(self.backend.generate(requests[start : start + size]))
        return out


# -- the growing tree -------------------------------------------------------------------------------
class Tree:
    """A search tree under construction for one sample (``self.schema`` is the SearchTree it becomes).

    Invariant: ``visits(n) = own_visits(n) + sum(visits(children))``, where an own visit is one reward
    evaluated at ``n`` itself (its rollout when created, or a re-visit of a leaf that cannot grow).
    ``value`` is the mean of all rewards backpropagated through the node."""

    def __init__(self, sample: Sample, prompt: str):
        self.sample = sample
        self.schema = SearchTree(sample_id=sample.id, prompt=prompt, nodes=[])
        self.kids: dict[int, list[int]] = {}
        self.value_sum: dict[int, float] = {}
        self.add(None, "", prior=1.0, terminal=False)

    @property
    def prompt(self) -> str:
        return self.schema.prompt

    @property
    def nodes(self) -> list[SearchNode]:
        return self.schema.nodes

    def add(self, parent: int | None, text: str, *, prior: float, terminal: bool, **meta: Any) -> SearchNode:
        depth = 0 if parent is None else self.depth(parent) + 1
        node = SearchNode(id=len(self.nodes), parent=parent, text=text, prior=prior, terminal=terminal,
                          meta={"depth": depth, "own_visits": 0, **meta})
        self.nodes.append(node)
        self.kids[node.id] = []
        self.value_sum[node.id] = 0.0
        if parent is not None:
            self.kids[parent].append(node.id)
        return node

    def children(self, node_id: int) -> list[SearchNode]:
        return [self.nodes[i] for i in self.kids[node_id]]

    def prefix(self, node_id: int) -> str:
        return self.schema.prefix(node_id)

    def depth(self, node_id: int) -> int:
        return self.nodes[node_id].meta["depth"]

    def evaluate(self, node_id: int, reward: float, rollout: str | None = None) -> None:
        """Record a reward evaluated at ``node_id`` (one own visit) and backpropagate it to the root."""
        node = self.nodes[node_id]
        if rollout is not None:
            node.rollout = rollout
            node.meta["reward"] = reward
        node.meta["own_visits"] += 1
        current: SearchNode | None = node
        while current is not None:
            current.visits += 1
            self.value_sum[current.id] += reward
            current.value = self.value_sum[current.id] / current.visits
            current = self.nodes[current.parent] if current.parent is not None else None

    def finish(self, **meta: Any) -> SearchTree:
        self.schema.meta.update(meta)
        return self.schema


def seed_sampling(seed: int | None, samples: list[Sample]) -> None:
    """Reseed torch for a search of ``samples``; ``None`` keeps the seed the loop set for the stage (and
    chunk). The samples' ids are part of the seed: a long stage searches chunk by chunk, and one seed for
    every chunk would repeat the same draws in each."""
    if seed is not None:
        import torch

        torch.manual_seed(derived_seed(seed, *(sample.id for sample in samples)))


def render_prompts(ctx: Any, samples: list[Sample]) -> list[str]:
    """Each sample's prompt, rendered once: every expansion of the sample continues this same text."""
    return [ctx.format.render_prompt(sample, ctx.policy.tokenizer) for sample in samples]


def score_rollouts(ctx: Any, trees: list[Tree], pending: list[tuple[int, int, str]]) -> None:
    """Score ``(tree index, node id, complete answer)`` rollouts with ``ctx.reward`` (one call per
    sample) and backpropagate each reward from its node."""
    by_tree: dict[int, list[tuple[int, str]]] = {}
    for tree_index, node_id, text in pending:
        by_tree.setdefault(tree_index, []).append((node_id, text))
    for tree_index, items in by_tree.items():
        tree = trees[tree_index]
        rewards = ctx.reward.score(tree.sample, [text for _, text in items])
        for (node_id, text), reward in zip(items, rewards, strict=True):
            tree.evaluate(node_id, float(reward), rollout=text)
