"""Generation backend ``transformers``: batched sampling and scoring with a Hugging Face model.

Requests that share a prompt share its prefill: each distinct prompt is encoded once, then its KV cache
is copied to all of its ``n`` samples (``batch_select_indices``). Prompts that merely begin alike (the
same system prompt; a tree search's prompt plus different answer prefixes) encode the common beginning
once. Rows that finish (EOS, a stop string, their token budget) leave the batch, so long-running rows
do not drag finished ones along.

Log-probs: ``Generation.token_logprobs`` are the *model's* log-probs of the generated tokens, i.e.
``log_softmax(logits)`` before temperature and top-p are applied. They are the same quantity ``score``
returns, whatever temperature sampled the text, so a search can compare priors across temperatures.
They cover the tokens of ``text`` only (not the EOS token, nor tokens cut off with a stop string).

Across calls: inside ``with backend.keep_prefixes():`` (a tree search opens it) every encoded prompt
is kept, and a later prompt that begins like a kept one encodes only the rest. A search's next wave
asks for its earlier prompts plus a few more answer tokens, so most of each prompt is encoded once per
search instead of once per wave.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import Generation, GenerationRequest, Score
from itool.plugins.training import score_completions


class TransformersBackendOptions(BaseModel):
    batch_size: int = Field(48, ge=1, description="Sequences decoded together (samples of a prompt count one each).")
    kv_tokens: int = Field(65536, ge=1, description="Cap on rows × (prompt + new tokens) in one decode batch (cache memory).")
    prefill_tokens: int = Field(4096, ge=1, description="Padded prompt tokens per prefill forward pass (beyond a shared prefix).")
    score_batch_size: int = Field(8, ge=1, description="Prompt+continuation rows per forward pass in score().")
    max_length: int | None = Field(None, ge=1, description="Truncate prompt+continuation to this many tokens in score().")
    progress_min_rows: int = Field(16, ge=1, description="Show a progress bar for waves of at least this many rows.")
    kept_prefix_tokens: int = Field(
        32768, ge=0, description="Prompt tokens whose keys/values keep_prefixes() holds (least recently used go first).")


@dataclass
class _Row:
    """One sample being generated: where it goes back and how it is sampled."""

    request: int
    sample: int
    params: GenerationRequest
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class PrefixStore:
    """Keys/values of whole prompts, by token ids, least recently used dropped first beyond ``max_tokens``;
    ``model`` is the model whose weights computed them.

    Written here because the cache classes of transformers hold one batch's cache, not a lookup of many
    prompts' caches by their longest common beginning."""

    def __init__(self, max_tokens: int, model: Any = None):
        self.max_tokens = max_tokens
        self.model = model
        self.entries: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        self.tokens = 0

    def longest(self, ids: list[int]) -> tuple[list[tuple[Any, Any]] | None, int]:
        """The kept entry sharing the longest beginning with ``ids`` and that length (0: none)."""
        best, length, ids = None, 0, tuple(ids)
        for key in self.entries:
            common = len(os.path.commonprefix([key, ids]))
            if common > length:
                best, length = key, common
        if best is None:
            return None, 0
        self.entries.move_to_end(best)
        return self.entries[best], length

    def add(self, ids: list[int], layers: list[tuple[Any, Any]]) -> None:
        key = tuple(ids)
        if key in self.entries or len(key) > self.max_tokens:
            return
        self.entries[key] = layers
        self.tokens += len(key)
        while self.tokens > self.max_tokens:
            dropped, _ = self.entries.popitem(last=False)
            self.tokens -= len(dropped)


class TransformersBackend:
    """Samples and scores with ``policy.model`` (always the current one: merged adapters are seen)."""

    def __init__(self, policy: Any, opts: TransformersBackendOptions):
        self.policy = policy
        self.opts = opts
        tokenizer = policy.tokenizer
        eos = getattr(policy.model.generation_config, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        self.prefixes: PrefixStore | None = None
        self.encoded_tokens = 0  # prompt tokens run through the model by generate(): what kept prefixes save

    @contextmanager
    def keep_prefixes(self) -> Iterator[None]:
        """Reuse the encoding of prompts across ``generate`` calls inside this block (a search's waves).

        The kept keys/values belong to the weights they were computed with, so they are dropped when the
        block ends, and ignored if ``policy.model`` is replaced (an adapter merged) inside it."""
        previous = self.prefixes
        self.prefixes = PrefixStore(self.opts.kept_prefix_tokens, self.policy.model)
        try:
            yield
        finally:
            self.prefixes = previous

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        from tqdm.auto import tqdm

        results: list[list[Generation | None]] = [[None] * r.n for r in requests]
        by_prompt: dict[str, list[_Row]] = {}
        for i, request in enumerate(requests):
            for j in range(request.n):
                by_prompt.setdefault(request.prompt, []).append(_Row(i, j, request))
        prompt_ids = {p: self.policy.tokenizer(p, add_special_tokens=False)["input_ids"] for p in by_prompt}
        total = sum(r.n for r in requests)
        with tqdm(total=total, desc="generate", leave=False, disable=total < self.opts.progress_min_rows) as bar:
            def done(row: _Row, generation: Generation) -> None:
                results[row.request][row.sample] = generation
                bar.update(1)

            for chunk in self._chunks(by_prompt, prompt_ids):
                self._generate_chunk(chunk, prompt_ids, done)
        return results  # type: ignore[return-value]

    def _chunks(self, by_prompt: dict[str, list[_Row]], prompt_ids: dict[str, list[int]]):
        """Decode batches of (prompt, rows), prompts of similar length together.

        A batch holds at most ``batch_size`` rows and at most ``kv_tokens`` cached tokens (rows × (longest
        prompt + longest token budget)), so one very long prompt does not inflate the cache of many rows.
        """
        chunk: list[tuple[str, list[_Row]]] = []
        rows_in, width, budget = 0, 0, 0
        for prompt in sorted(by_prompt, key=lambda p: len(prompt_ids[p])):
            rows = by_prompt[prompt]
            for start in range(0, len(rows), self.opts.batch_size):
                part = rows[start: start + self.opts.batch_size]
                new_width = max(width, len(prompt_ids[prompt]))
                new_budget = max(budget, max(r.params.max_new_tokens for r in part))
                too_big = (rows_in + len(part) > self.opts.batch_size
                           or (rows_in + len(part)) * (new_width + new_budget) > self.opts.kv_tokens)
                if chunk and too_big:
                    yield chunk
                    chunk, rows_in, new_width = [], 0, len(prompt_ids[prompt])
                    new_budget = max(r.params.max_new_tokens for r in part)
                chunk.append((prompt, part))
                rows_in, width, budget = rows_in + len(part), new_width, new_budget
        if chunk:
            yield chunk

    def _shared_prefix_groups(self, prompts: list[list[int]], kept: list[int]) -> Iterator[tuple[int, int, int]]:
        """(start, end, shared): runs of ``prompts`` (sorted by token ids) that share their first ``shared``
        tokens; every prompt keeps at least one tail token. ``kept[k]``: tokens of prompt ``k`` whose
        encoding is already kept; a run never shares less than that, so no kept encoding is wasted.

        A run grows while that costs fewer encoded tokens (shared prefix once, then every tail padded to
        the longest) than encoding the next prompt on its own, and its tails fit in ``prefill_tokens``.
        So a search's rollouts of one sample share its prompt, and unrelated prompts share at most a
        system-prompt header when their lengths are close."""
        start = 0
        while start < len(prompts):
            end, shared, longest = start + 1, len(prompts[start]) - 1, len(prompts[start])
            while end < len(prompts):
                common = min(shared, len(prompts[end]) - 1, len(os.path.commonprefix([prompts[start], prompts[end]])))
                widest = max(longest, len(prompts[end]))
                tails = (end + 1 - start) * (widest - common)
                alone = shared + (end - start) * (longest - shared) + len(prompts[end])
                if tails > self.opts.prefill_tokens or common + tails > alone or common < max(kept[start: end + 1]):
                    break
                shared, longest, end = common, widest, end + 1
            yield start, end, shared
            start = end

    def _prefill(self, prompts: list[list[int]]) -> tuple[Any, Any, Any, Any]:
        """Encode each prompt once and return (last-position logits, mask, positions, cache) for decoding.

        ``prompts`` must be sorted by token ids, so prompts with a common beginning sit together: the
        common part (a system prompt, or a search's prompt plus answer prefix) is encoded once, then the
        tails of the run together on top of it. Each run's cache is [shared prefix][padding][tail]; the
        runs are laid side by side, left-padded to the widest, and the mask and position ids skip padding.
        """
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import Cache

        from itool.plugins.backends.kv_cache import GrowingLayer

        model, device = self.policy.model, self.policy.device
        store = self.prefixes if self.prefixes is not None and self.prefixes.model is model else None
        found = [store.longest(p[:-1]) if store else (None, 0) for p in prompts]
        logits, parts = [], []
        for start, end, shared in self._shared_prefix_groups(prompts, [length for _, length in found]):
            rows = prompts[start:end]
            cache = DynamicCache()
            kept_layers, kept = max(found[start:end], key=lambda f: f[1])
            if kept:
                kept = min(kept, shared)
                for i, (keys, values) in enumerate(kept_layers):
                    cache.update(keys[:, :, :kept], values[:, :, :kept], i)
            if shared > kept:
                model(input_ids=torch.tensor([rows[0][kept:shared]], device=device), past_key_values=cache,
                      use_cache=True, logits_to_keep=1)
            if shared:
                cache.batch_repeat_interleave(len(rows))
            tail_width = max(len(p) for p in rows) - shared
            self.encoded_tokens += shared - kept + len(rows) * tail_width
            ids = torch.full((len(rows), tail_width), self.policy.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), shared + tail_width), dtype=torch.long)
            mask[:, :shared] = 1
            for k, prompt in enumerate(rows):
                ids[k, tail_width - (len(prompt) - shared):] = torch.tensor(prompt[shared:])
                mask[k, shared + tail_width - (len(prompt) - shared):] = 1
            mask = mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions[:, shared:],
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
            if store is not None:
                for k, prompt in enumerate(rows):
                    real = mask[k].bool()
                    store.add(prompt, [(layer.keys[k:k + 1, :, real], layer.values[k:k + 1, :, real])
                                       for layer in cache.layers])
            logits.append(out.logits[:, -1].float())
            parts.append((cache, mask))
        width = max(mask.shape[1] for _, mask in parts)
        mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, m in parts])
        layers = [GrowingLayer.side_by_side([(c.layers[i].keys, c.layers[i].values, m.shape[1]) for c, m in parts],
                                            width) for i in range(len(parts[0][0].layers))]
        return torch.cat(logits), mask, (mask.cumsum(-1) - 1).clamp(min=0), Cache(layers=layers)

    def _generate_chunk(self, chunk: list[tuple[str, list[_Row]]], prompt_ids: dict[str, list[int]], done) -> None:
        """Prefill each prompt once, copy its cache to its rows, then decode to the end."""
        import torch

        model, device = self.policy.model, self.policy.device
        chunk = sorted(chunk, key=lambda item: prompt_ids[item[0]])  # common beginnings side by side
        with torch.inference_mode():
            logits, mask, positions, cache = self._prefill([prompt_ids[p] for p, _ in chunk])
            owner = torch.tensor([k for k, (_, rows) in enumerate(chunk) for _ in rows], device=device)
            rows = [row for _, rows in chunk for row in rows]
            cache.batch_select_indices(owner)
            logits, mask, next_pos = logits[owner], mask[owner], positions[owner, -1] + 1
            while rows:
                tokens, logps = self._sample(logits, rows)
                keep: list[int] = []
                for k, row in enumerate(rows):
                    finished = self._append(row, tokens[k], logps[k])
                    if finished is None:
                        keep.append(k)
                    else:
                        done(row, finished)
                if not keep:
                    return
                index = torch.tensor(keep, device=device)
                if len(keep) < len(rows):
                    cache.batch_select_indices(index)
                rows = [rows[k] for k in keep]
                mask = torch.cat([mask[index], torch.ones((len(keep), 1), dtype=mask.dtype, device=device)], dim=1)
                step_ids = torch.tensor([[row.ids[-1]] for row in rows], device=device)
                next_pos = next_pos[index]
                logits = model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos[:, None],
                               past_key_values=cache, use_cache=True).logits[:, -1].float()
                next_pos = next_pos + 1

    @staticmethod
    def _sample(logits: Any, rows: list[_Row]) -> tuple[list[int], list[float]]:
        """One token per row (greedy at temperature 0, else temperature + top-p) and its model log-prob."""
        import torch

        logps = torch.log_softmax(logits, dim=-1)
        temps = torch.tensor([row.params.temperature for row in rows], device=logits.device)
        top_ps = torch.tensor([row.params.top_p for row in rows], device=logits.device)
        chosen = logits.argmax(-1)
        sampled = temps > 0
        if sampled.any():
            probs = torch.softmax(logits[sampled] / temps[sampled, None], dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest set of top tokens whose mass reaches top_p (always at least one).
            outside = sorted_probs.cumsum(-1) - sorted_probs >= top_ps[sampled, None]
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            picks = torch.multinomial(sorted_probs, 1)
            chosen[sampled] = order.gather(-1, picks).squeeze(-1)
        token_logps = logps.gather(-1, chosen[:, None]).squeeze(-1)
        return chosen.tolist(), token_logps.tolist()

    def _append(self, row: _Row, token: int, logp: float) -> Generation | None:
        """Add a token; return the finished Generation when the row is done."""
        if token in self.eos_ids:
            return Generation(self._decode(row.ids), row.logprobs, "stop")
        row.ids.append(token)
        row.logprobs.append(logp)
        if row.params.stop:
            text = self._decode(row.ids)
            cut = min((i for i in (text.find(s) for s in row.params.stop if s) if i >= 0), default=-1)
            if cut >= 0:
                kept = len(row.ids)
                while kept > 0 and len(self._decode(row.ids[:kept])) > cut:
                    kept -= 1
                return Generation(text[:cut], row.logprobs[:kept], "stop")
        if len(row.ids) >= row.params.max_new_tokens:
            return Generation(self._decode(row.ids), row.logprobs, "length")
        return None

    def _decode(self, ids: list[int]) -> str:
        return self.policy.tokenizer.decode(ids, skip_special_tokens=True)

    # -- scoring ------------------------------------------------------------------------------------
    def score(self, prompts: list[str], continuations: list[str]) -> list[Score]:
        from itool.plugins.training import autocast

        with autocast(self.policy.dtype, self.policy.device):
            scores = score_completions(self.policy.model, self.policy.tokenizer, prompts, continuations,
                                       batch_size=self.opts.score_batch_size, max_length=self.opts.max_length)
        return [Score(logprob_sum=s, n_tokens=n) for s, n in scores]


def transformers_backend(policy: Any, opts: TransformersBackendOptions) -> TransformersBackend:
    """Batched sampling and scoring with log-probs; prompts with a common beginning encode it once (Hugging Face)."""
    return TransformersBackend(policy, opts)


@hookimpl
def register_backends(register):
    register("transformers", transformers_backend, options=TransformersBackendOptions)
