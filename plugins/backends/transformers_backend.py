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

On CUDA, requests that need none of that (no ``enough``, outside ``keep_prefixes``: an evaluation's
greedy answers, best-of-n samples) go to transformers' own engine instead of the per-step Python loop:
continuous batching (``model.continuous_batching_context_manager``: paged attention, requests joining
and leaving the batch every step, CUDA graphs). Its tokens are finished exactly as the loop finishes
them (EOS, stop strings, ``enough``, token budget), and their log-probs are the model's, computed by one
forward pass over prompt and text, since the engine's own are taken after temperature. Option
``engine`` forces one way or the other.

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
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import Generation, GenerationRequest, Score
from itool.plugins.models.transformers_loader import cache_keyword
from itool.plugins.training import mask_positions, score_completions


class TransformersBackendOptions(BaseModel):
    batch_size: int = Field(48, ge=1, description="Sequences decoded together (samples of a prompt count one each).")
    kv_tokens: int = Field(65536, ge=1, description="Cap on rows × (prompt + new tokens) in one decode batch (cache memory).")
    prefill_tokens: int = Field(4096, ge=1, description="Padded prompt tokens per prefill forward pass (beyond a shared prefix).")
    score_batch_size: int = Field(8, ge=1, description="Prompt+continuation rows per forward pass in score().")
    max_length: int | None = Field(None, ge=1, description="Truncate prompt+continuation to this many tokens in score().")
    progress_min_rows: int = Field(16, ge=1, description="Show a progress bar for waves of at least this many rows.")
    kept_prefix_tokens: int = Field(
        32768, ge=0, description="Prompt tokens whose keys/values keep_prefixes() holds (least recently used go first).")
    engine: Literal["auto", "loop", "continuous-batching"] = Field(
        "auto", description="How generate() decodes: 'loop' is ours (shared prefills, kept prefixes, early ends), "
        "'continuous-batching' is transformers' engine (paged attention, CUDA graphs); 'auto' takes the engine "
        "on CUDA for requests that use neither kept prefixes nor `enough`.")


# One forward pass costs about as much as 32 more tokens in it: at batch 1 the pass is bound by streaming
# the weights (≈80 ms for the 135M model on the 2-core CPU, where prefill runs ≈400 tokens/s). Pieces of
# a prefill share a pass while the padding they add stays below this.
_PASS_TOKENS = 32


@dataclass
class _Piece:
    """Token ids to encode on top of ``past``: per layer the keys/values (batch 1) whose first
    ``past_len`` positions precede them, or ``None`` when ``past_len`` is 0."""

    ids: list[int]
    past: list[tuple[Any, Any]] | None
    past_len: int


def _real_rows(cache: Any, mask: Any, row: int) -> list[tuple[Any, Any]]:
    """Row ``row`` of a batch cache without its padding: per layer (keys, values) of batch 1."""
    real = mask[row].nonzero().squeeze(-1)  # index_select: several times faster than a boolean index
    return [(layer.keys[row:row + 1].index_select(2, real), layer.values[row:row + 1].index_select(2, real))
            for layer in cache.layers]


@dataclass
class _Row:
    """One sample being generated: where it goes back and how it is sampled."""

    request: int
    sample: int
    params: GenerationRequest
    rank: int = 0  # place in its batch by prompt, then sample: which random draw it takes, wherever it sits
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

        if self.uses_engine(requests):
            return self._generate_with_engine(requests)
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

    def uses_engine(self, requests: list[GenerationRequest]) -> bool:
        """Whether ``generate(requests)`` goes to transformers' continuous batching rather than our loop."""
        if self.opts.engine != "auto":
            return self.opts.engine == "continuous-batching"
        return (self.policy.device.type == "cuda" and self.prefixes is None
                and not any(request.enough for request in requests))

    def _generate_with_engine(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        """Every sample one request of transformers' continuous batching, one engine session per
        (temperature, top_p); the samples of a prompt share its cache blocks there. The engine's seed
        is drawn from torch's generator, which the loop seeds for each stage."""
        import torch

        tokenizer = self.policy.tokenizer
        prompt_ids = {r.prompt: tokenizer(r.prompt, add_special_tokens=False)["input_ids"] for r in requests}
        results: list[list[Generation | None]] = [[None] * r.n for r in requests]
        groups: dict[tuple[float, float], list[_Row]] = {}
        for i, request in enumerate(requests):
            for j in range(request.n):
                groups.setdefault((request.temperature, request.top_p), []).append(_Row(i, j, request))
        for (temperature, top_p), rows in groups.items():
            prompts = [prompt_ids[row.params.prompt] for row in rows]
            seed = int(torch.randint(2**31 - 1, ()).item())
            tokens = self._engine_tokens(prompts, [row.params.max_new_tokens for row in rows], temperature, top_p, seed)
            for row, ids, logprobs in zip(rows, tokens, self._model_logprobs(prompts, tokens)):
                results[row.request][row.sample] = self._finish(row, ids, logprobs)
        return results  # type: ignore[return-value]

    def _finish(self, row: _Row, ids: list[int], logprobs: list[float]) -> Generation:
        """The Generation the loop would make of these tokens: they are appended one by one until one ends it."""
        for token, logprob in zip(ids, logprobs, strict=True):
            finished = self._append(row, token, logprob)
            if finished is not None:
                return finished
        return Generation(self._decode(row.ids), row.logprobs, "length")

    def _engine_tokens(self, prompts: list[list[int]], budgets: list[int], temperature: float, top_p: float,
                       seed: int) -> list[list[int]]:
        """The tokens transformers' continuous batching generates after each prompt (its EOS included)."""
        import torch
        from transformers import ContinuousBatchingConfig, GenerationConfig

        sampling = (dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0
                    else dict(do_sample=False))
        config = GenerationConfig(max_new_tokens=max(budgets), eos_token_id=sorted(self.eos_ids),
                                  pad_token_id=self.policy.tokenizer.pad_token_id, **sampling)
        # Left to itself the engine sizes its cache from the device's free memory (on a CPU: most of the RAM);
        # room for every request at once is all these requests can use.
        engine = ContinuousBatchingConfig(seed=seed)
        page = getattr(engine, "page_size", None) or engine.block_size  # renamed in transformers 5.2x
        engine.num_blocks = sum(-(-(len(p) + b) // page) for p, b in zip(prompts, budgets))
        tokens: dict[int, list[int]] = {}
        with torch.inference_mode(), self.policy.model.continuous_batching_context_manager(
                generation_config=config, continuous_batching_config=engine) as manager:
            for k, (prompt, budget) in enumerate(zip(prompts, budgets)):
                manager.add_request(prompt, request_id=str(k), max_new_tokens=budget)
            while len(tokens) < len(prompts):
                output = manager.get_result(timeout=1)
                if output is None:
                    if not manager.is_running():
                        break
                elif output.is_finished():
                    if output.error is not None:
                        raise RuntimeError(f"continuous batching failed on a request: {output.error}")
                    tokens[int(output.request_id)] = list(output.generated_tokens)
        if len(tokens) < len(prompts):
            raise RuntimeError(f"continuous batching stopped with {len(prompts) - len(tokens)} requests unfinished")
        return [tokens[k] for k in range(len(prompts))]

    def _model_logprobs(self, prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
        """The model's log-prob of each completion token given its prompt and the tokens before it (before
        temperature: what the loop records), ``score_batch_size`` rows of similar length per forward pass."""
        import torch

        from itool.plugins.training import collate

        model, pad = self.policy.model, self.policy.tokenizer.pad_token_id
        order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]) + len(completions[k]))
        found: dict[int, list[float]] = {}
        with torch.inference_mode():
            for start in range(0, len(order), self.opts.score_batch_size):
                rows = order[start: start + self.opts.score_batch_size]
                batch = collate([(prompts[k], completions[k]) for k in rows], pad, self.policy.device)
                keep = 1 + max(len(completions[k]) for k in rows)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               position_ids=batch["position_ids"], logits_to_keep=keep).logits[:, :-1].float()
                targets = batch["input_ids"][:, batch["input_ids"].shape[1] - keep + 1:]
                logps = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
                for position, k in enumerate(rows):
                    found[k] = logps[position, logps.shape[1] - len(completions[k]):].tolist()
        return [found[k] for k in range(len(prompts))]

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

    @staticmethod
    def _shared_prefix_groups(prompts: list[list[int]], kept: list[int]) -> Iterator[tuple[int, int, int]]:
        """(start, end, shared): runs of ``prompts`` (sorted by token ids) whose first ``shared`` tokens
        are encoded once for the whole run; every prompt keeps at least one tail token. ``kept[k]``:
        tokens of prompt ``k`` whose encoding is already kept; a run never shares less than that.

        A run takes the next prompt while that encodes fewer tokens in all: the run's members lose
        ``shared - common`` each from their shared part, the newcomer saves ``common``. So the prompts of
        an evaluation share their system prompt, and a search's requests for one sample share its prompt
        and answer prefix instead of merely the system prompt they have in common with other samples. A
        run of one prompt shares only what is kept of it."""
        start = 0
        while start < len(prompts):
            end, shared = start + 1, len(prompts[start]) - 1
            while end < len(prompts):
                common = min(shared, len(prompts[end]) - 1, len(os.path.commonprefix([prompts[start], prompts[end]])))
                if (end - start - 1) * (shared - common) >= common or common < max(kept[start: end + 1]):
                    break
                shared, end = common, end + 1
            if end - start == 1:  # shared with nobody: the whole rest is its tail, one forward pass instead of two
                shared = kept[start]
            yield start, end, shared
            start = end

    def _prefill(self, prompts: list[list[int]], copies: list[int]) -> tuple[Any, Any, Any, Any, list[int]]:
        """Encode each prompt once and give prompt ``k`` ``copies[k]`` rows; return (last-position logits,
        mask, positions, cache, the prompt of each row), a prompt's rows side by side.

        ``prompts`` must be sorted by token ids, so prompts with a common beginning sit together. Two
        steps, each batched across prompts by ``_encode``: first every run's common beginning (a system
        prompt, or a search's prompt plus answer prefix) on top of what is kept of it, then every prompt's
        tail on top of its run's beginning. The batches' caches are laid side by side, left-padded to the
        widest, and the mask and position ids skip padding. Rows are laid out in the order the tails were
        encoded, so the cache is copied once (to repeat prompts, or to join batches) or not at all.
        """
        import torch
        from transformers.cache_utils import Cache

        from itool.plugins.backends.kv_cache import GrowingLayer

        store = self.prefixes if self.prefixes is not None and self.prefixes.model is self.policy.model else None
        found = [store.longest(p[:-1]) if store else (None, 0) for p in prompts]
        groups = list(self._shared_prefix_groups(prompts, [length for _, length in found]))
        beginnings: list[_Piece] = []
        for start, end, shared in groups:
            layers, kept = max(found[start:end], key=lambda f: f[1])
            kept = min(kept, shared)
            beginnings.append(_Piece(prompts[start][kept:shared], layers, kept))
        to_encode = [b for b in beginnings if b.ids]
        for batch, (cache, mask, _) in self._encode(to_encode):
            for k, index in enumerate(batch):
                piece = to_encode[index]
                piece.past, piece.past_len = _real_rows(cache, mask, k), len(piece.ids) + piece.past_len
        tails = [_Piece(prompts[k][shared:], beginning.past, shared)
                 for beginning, (start, end, shared) in zip(beginnings, groups) for k in range(start, end)]
        order, logits, parts = [], [], []
        for batch, (cache, mask, last) in self._encode(tails):
            order += batch
            logits.append(last)
            parts.append((cache, mask))
            if store is not None:
                for k, index in enumerate(batch):
                    store.add(prompts[index], _real_rows(cache, mask, k))
        select = [position for position, k in enumerate(order) for _ in range(copies[k])]
        if len(parts) == 1 and isinstance(parts[0][0].layers[0], GrowingLayer):
            (cache, mask), = parts  # one batch with room to grow: copied only to repeat prompts
            if len(select) > len(order):
                cache.batch_select_indices(torch.tensor(select, device=mask.device))
        else:
            width = max(mask.shape[1] for _, mask in parts)
            mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, m in parts])
            cache = Cache(layers=[GrowingLayer.side_by_side(
                [(c.layers[i].keys, c.layers[i].values, m.shape[1]) for c, m in parts], width, rows=select)
                for i in range(len(parts[0][0].layers))])
        index = torch.tensor(select, device=mask.device)
        mask = mask[index]
        return torch.cat(logits)[index], mask, mask_positions(mask), cache, [order[p] for p in select]

    def _encode(self, pieces: list[_Piece]):
        """Run ``pieces`` through the model in batches; yield (indices of the batch's pieces, (cache, mask, logits)).

        A batch's cache row is [past, left-padded][new tokens, left-padded]. Pieces are taken shortest
        first, and a piece joins the batch while the padding it adds costs no more than a forward pass of
        its own (``_PASS_TOKENS``), and the batch stays within ``prefill_tokens``: so a search's short
        tails go through together, and long prompts of different lengths each go alone, unpadded."""
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import Cache

        model, device = self.policy.model, self.policy.device
        order = sorted(range(len(pieces)), key=lambda k: len(pieces[k].ids))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order):
                longest, before = len(pieces[order[end]].ids), len(pieces[order[end - 1]].ids)
                if ((end - start) * (longest - before) > _PASS_TOKENS
                        or (end + 1 - start) * longest > self.opts.prefill_tokens):
                    break
                end += 1
            batch = [pieces[k] for k in order[start:end]]
            past_width = max(p.past_len for p in batch)
            new_width = max(len(p.ids) for p in batch)
            mask = torch.zeros((len(batch), past_width + new_width), dtype=torch.long)
            ids = torch.full((len(batch), new_width), self.policy.tokenizer.pad_token_id, dtype=torch.long)
            for k, piece in enumerate(batch):
                mask[k, past_width - piece.past_len: past_width] = 1
                mask[k, past_width + new_width - len(piece.ids):] = 1
                ids[k, new_width - len(piece.ids):] = torch.tensor(piece.ids)
            cache = (Cache(layers=self._past_side_by_side(batch, past_width, new_width)) if past_width
                     else DynamicCache())
            mask = mask.to(device)
            positions = mask_positions(mask)
            out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions[:, past_width:],
                        use_cache=True, logits_to_keep=1, **{cache_keyword(model): cache})
            self.encoded_tokens += len(batch) * new_width
            yield order[start:end], (cache, mask, out.logits[:, -1].float())
            start = end

    @staticmethod
    def _past_side_by_side(batch: list[_Piece], width: int, coming: int) -> list[Any]:
        """Per layer, the pieces' pasts left-padded to ``width`` in a cache with room for ``coming`` more."""
        from itool.plugins.backends.kv_cache import GrowingLayer

        template = next(p.past for p in batch if p.past_len)
        layers = []
        for i, (keys, _) in enumerate(template):
            empty = keys.new_zeros((1, keys.shape[1], 0, keys.shape[3]))
            layers.append(GrowingLayer.side_by_side(
                [(p.past[i][0][:, :, :p.past_len], p.past[i][1][:, :, :p.past_len], p.past_len) if p.past_len
                 else (empty, empty, 0) for p in batch], width, coming))
        return layers

    def _generate_chunk(self, chunk: list[tuple[str, list[_Row]]], prompt_ids: dict[str, list[int]], done) -> None:
        """Prefill each prompt once, copy its cache to its rows, then decode to the end.

        A finished row stays in the batch (its output ignored) until a quarter of the batch has finished:
        dropping rows moves every later row's cache up, which costs more than a few idle rows."""
        import torch

        model, device = self.policy.model, self.policy.device
        chunk = sorted(chunk, key=lambda item: prompt_ids[item[0]])  # common beginnings side by side
        with torch.inference_mode():
            logits, mask, positions, cache, layout = self._prefill([prompt_ids[p] for p, _ in chunk],
                                                                   [len(rows) for _, rows in chunk])
            for rank, row in enumerate(row for _, rows in chunk for row in rows):
                row.rank = rank
            pending = [iter(rows) for _, rows in chunk]
            rows: list[_Row | None] = [next(pending[k]) for k in layout]
            next_pos = positions[:, -1] + 1
            while True:
                alive = [k for k, row in enumerate(rows) if row is not None]
                tokens, logps = self._sample(logits[alive] if len(alive) < len(rows) else logits,
                                             [rows[k] for k in alive])
                for k, token, logp in zip(alive, tokens, logps, strict=True):
                    finished = self._append(rows[k], token, logp)
                    if finished is not None:
                        done(rows[k], finished)
                        rows[k] = None
                alive = [k for k in alive if rows[k] is not None]
                if not alive:
                    return
                if 4 * (len(rows) - len(alive)) >= len(rows):
                    index = torch.tensor(alive, device=device)
                    cache.batch_select_indices(index)
                    rows, mask, next_pos = [rows[k] for k in alive], mask[index], next_pos[index]
                pad = self.policy.tokenizer.pad_token_id
                step_ids = torch.tensor([[row.ids[-1] if row else pad] for row in rows], device=device)
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
                logits = model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos[:, None],
                               use_cache=True, **{cache_keyword(model): cache}).logits[:, -1].float()
                next_pos = next_pos + 1

    @staticmethod
    def _sample(logits: Any, rows: list[_Row]) -> tuple[list[int], list[float]]:
        """One token per row (greedy at temperature 0, else temperature + top-p) and its model log-prob.

        A sample inverts the cumulative distribution with one uniform draw per row: exact, and over a 49k
        vocabulary on the CPU about 30× faster than ``torch.multinomial``; only top-p < 1 needs a sort.
        Draws go to rows by ``rank``, so a seed gives the same samples however the rows are laid out."""
        import torch

        logps = torch.log_softmax(logits, dim=-1)
        temps = torch.tensor([row.params.temperature for row in rows], device=logits.device)
        top_ps = torch.tensor([row.params.top_p for row in rows], device=logits.device)
        chosen = logits.argmax(-1)
        sampled = temps > 0
        if sampled.any():
            probs = torch.softmax(logits[sampled] / temps[sampled, None], dim=-1)
            order = None
            if (top_ps[sampled] < 1).any():
                probs, order = probs.sort(dim=-1, descending=True)
                # Keep the smallest set of top tokens whose mass reaches top_p (always at least one).
                probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_ps[sampled, None], 0.0)
            cumulative = probs.cumsum(-1)
            ranks = torch.tensor([row.rank for row, s in zip(rows, sampled.tolist()) if s], device=logits.device)
            draw = torch.rand((len(cumulative), 1), device=logits.device)[ranks.argsort().argsort()]
            draw = draw * cumulative[:, -1:]
            picks = torch.searchsorted(cumulative, draw, right=True).clamp(max=probs.shape[-1] - 1)
            chosen[sampled] = (order.gather(-1, picks) if order is not None else picks).squeeze(-1)
        token_logps = logps.gather(-1, chosen[:, None]).squeeze(-1)
        return chosen.tolist(), token_logps.tolist()

    def _append(self, row: _Row, token: int, logp: float) -> Generation | None:
        """Add a token; return the finished Generation when the row is done."""
        if token in self.eos_ids:
            return Generation(self._decode(row.ids), row.logprobs, "stop")
        row.ids.append(token)
        row.logprobs.append(logp)
        if row.params.stop or row.params.enough:
            text = self._decode(row.ids)
            cut = min((i for i in (text.find(s) for s in row.params.stop if s) if i >= 0), default=-1)
            if cut >= 0:
                kept = len(row.ids)
                while kept > 0 and len(self._decode(row.ids[:kept])) > cut:
                    kept -= 1
                return Generation(text[:cut], row.logprobs[:kept], "stop")
            if row.params.enough and row.params.enough(text):
                return Generation(text, row.logprobs, "stop")
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
