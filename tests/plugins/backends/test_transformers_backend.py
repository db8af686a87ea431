"""The transformers backend: batched sampling with a shared prompt prefill, stop strings, log-probs, scoring.

Most tests check that batching, shared prefills and kept caches give what each prompt alone gives: a float32
property (in bfloat16, another batch layout rounds differently, enough to flip a greedy token), so they run
on the float32 model. Sampling and scoring are also checked in the dtype ``auto`` picks."""

from __future__ import annotations

import pytest
import torch

from itool.components import GenerationRequest
from itool.plugins.backends.transformers_backend import PrefixStore, TransformersBackend, TransformersBackendOptions


@pytest.fixture(scope="module")
def backend(shared_policy_fp32):
    """On the float32 model: the tests compare batched against unbatched numbers at float32 tolerance."""
    return TransformersBackend(shared_policy_fp32, TransformersBackendOptions(batch_size=8))


def chat(policy, question: str) -> str:
    return policy.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                add_generation_prompt=True)


@pytest.fixture(scope="module")
def prompts(shared_policy_fp32):
    return [chat(shared_policy_fp32, q) for q in ("What is 2+2?", "Name a colour.", "Say hello to Ada in French.")]


@pytest.fixture(scope="module")
def greedy(backend, prompts):
    """Each prompt alone, greedy, 12 tokens."""
    return [backend.generate([GenerationRequest(p, max_new_tokens=12, temperature=0)])[0][0] for p in prompts]


def test_greedy_is_deterministic_and_the_same_alone_or_batched_with_other_prompts(backend, prompts, greedy):
    batched = backend.generate([GenerationRequest(p, n=2, max_new_tokens=12, temperature=0) for p in prompts])
    for alone, pair in zip(greedy, batched):
        assert [g.text for g in pair] == [alone.text, alone.text]
        assert pair[0].token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-3)


def test_prompts_prefilled_in_separate_groups_decode_like_one_batch(shared_policy_fp32, prompts, greedy):
    """prefill_tokens=1 puts every prompt's tail in its own prefill pass; their caches are then joined, left-padded."""
    grouped = TransformersBackend(shared_policy_fp32, TransformersBackendOptions(batch_size=8, prefill_tokens=1))
    out = grouped.generate([GenerationRequest(p, max_new_tokens=12, temperature=0) for p in prompts])
    assert [gens[0].text for gens in out] == [g.text for g in greedy]


def test_a_prompt_alone_is_encoded_in_one_forward_pass(backend, shared_policy_fp32, prompts, greedy, monkeypatch):
    """Nothing to share with: no separate pass for a beginning; the first token comes from that one pass."""
    model = shared_policy_fp32.model
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *args, **kwargs: calls.append(kwargs["input_ids"].shape) or
                        forward(*args, **kwargs))
    (first,), = backend.generate([GenerationRequest(prompts[0], max_new_tokens=1, temperature=0)])
    assert len(calls) == 1 and calls[0][1] == len(shared_policy_fp32.tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    assert first.token_logprobs == pytest.approx(greedy[0].token_logprobs[:1], abs=1e-3)


def test_prompts_with_a_common_beginning_decode_as_if_each_were_alone(backend, shared_policy_fp32):
    """A search's prompts: one question plus different answer prefixes (one prompt is a prefix of another)."""
    question = chat(shared_policy_fp32, "List three prime numbers.")
    prompts = [question, question + "Sure", question + "Sure! Here", question + "No"]
    alone = [backend.generate([GenerationRequest(p, max_new_tokens=8, temperature=0)])[0][0] for p in prompts]
    together = backend.generate([GenerationRequest(p, max_new_tokens=8, temperature=0) for p in prompts])
    for a, (t,) in zip(alone, together):
        assert t.text == a.text
        assert t.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-3)


def test_a_long_answer_grows_the_cache_past_its_spare_room(backend, shared_policy_fp32, prompts):
    """The cache starts with room for 64 more tokens; 90 greedy tokens must match the one-shot forward pass."""
    story = chat(shared_policy_fp32, "Tell me a long story about a lighthouse keeper.")
    out = backend.generate([GenerationRequest(story, max_new_tokens=90, temperature=0)])[0][0]
    assert len(out.token_logprobs) > 64
    ids = shared_policy_fp32.tokenizer(story, add_special_tokens=False)["input_ids"]
    answer = shared_policy_fp32.tokenizer(out.text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = shared_policy_fp32.model(input_ids=torch.tensor([ids + answer])).logits[0, len(ids) - 1: -1]
    assert logits.argmax(-1).tolist() == answer


def test_n_samples_per_request_come_back_in_order_with_one_logprob_per_token(shared_policy, prompts):
    """In the dtype ``auto`` picks (bfloat16 with ITOOL_AUTO_DTYPE=bfloat16)."""
    out = TransformersBackend(shared_policy, TransformersBackendOptions(batch_size=8)).generate([GenerationRequest(prompts[0], n=3, max_new_tokens=6, temperature=1.0),
                            GenerationRequest(prompts[1], n=1, max_new_tokens=4, temperature=1.0)])
    assert [len(gens) for gens in out] == [3, 1]
    for gens, budget in zip(out, (6, 4)):
        for g in gens:
            assert g.finish_reason in ("stop", "length")
            assert 0 < len(g.token_logprobs) <= budget and all(lp <= 0 for lp in g.token_logprobs)
            if g.finish_reason == "length":
                assert len(g.token_logprobs) == budget


def test_a_stop_string_cuts_the_text_before_it(backend, prompts, greedy):
    full = greedy[0].text
    stop = full.split()[1]  # a word from inside the greedy answer
    out = backend.generate([GenerationRequest(prompts[0], max_new_tokens=12, temperature=0, stop=[stop])])[0][0]
    assert out.finish_reason == "stop"
    assert out.text == full[: full.index(stop)]
    assert out.token_logprobs == pytest.approx(greedy[0].token_logprobs[: len(out.token_logprobs)], abs=1e-3)


def test_a_sample_ends_as_soon_as_it_has_enough(backend, prompts, greedy):
    """``enough`` (a search's complete first step): the text stops there, a prefix of the full answer."""
    full = greedy[2]
    out = backend.generate([GenerationRequest(prompts[2], max_new_tokens=12, temperature=0,
                                              enough=lambda text: len(text) >= 5)])[0][0]
    assert out.finish_reason == "stop"
    assert len(out.text) >= 5 and full.text.startswith(out.text) and len(out.text) < len(full.text)
    assert out.token_logprobs == pytest.approx(full.token_logprobs[: len(out.token_logprobs)], abs=1e-3)


# Per token, generating (one token at a time on a cache) and scoring (one pass) differ by float rounding:
# < 1e-3 in float32; in bfloat16 ~0.01 (measured up to 0.008). A wrong token or position costs ~0.2-2.
SCORE_TOLERANCE_PER_TOKEN = {torch.float32: 1e-3, torch.bfloat16: 0.03}


def test_generation_logprobs_equal_score_of_the_same_text(policy_per_dtype, prompts):
    for dtype, policy in policy_per_dtype.items():
        backend = TransformersBackend(policy, TransformersBackendOptions(batch_size=8))
        greedy = [backend.generate([GenerationRequest(p, max_new_tokens=12, temperature=0)])[0][0] for p in prompts]
        scores = backend.score(prompts, [g.text for g in greedy])
        for g, s in zip(greedy, scores):
            assert s.n_tokens == len(g.token_logprobs)
            tolerance = SCORE_TOLERANCE_PER_TOKEN[dtype] * s.n_tokens
            assert s.logprob_sum == pytest.approx(sum(g.token_logprobs), abs=tolerance), dtype


def test_batched_and_unbatched_scores_agree(shared_policy_fp32, prompts):
    continuations = ["4", "Blue is a lovely colour.", "Bonjour Ada !"]
    batched = TransformersBackend(shared_policy_fp32, TransformersBackendOptions(score_batch_size=3)).score(prompts, continuations)
    single = TransformersBackend(shared_policy_fp32, TransformersBackendOptions(score_batch_size=1)).score(prompts, continuations)
    token_counts = [len(shared_policy_fp32.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in continuations]
    assert [s.n_tokens for s in batched] == [s.n_tokens for s in single] == token_counts
    for b, s in zip(batched, single):
        assert b.logprob_sum == pytest.approx(s.logprob_sum, abs=1e-3)
    assert batched[0].logprob_sum > batched[1].logprob_sum  # a short likely answer beats a long one


def test_registered_under_its_name(registry, shared_policy_fp32):
    component = registry.get("backend", "transformers")
    assert isinstance(component.obj(shared_policy_fp32, component.parse_options({"batch_size": 4})), TransformersBackend)


# -- prompts kept across calls ----------------------------------------------------------------------
def test_kept_prefixes_encode_only_the_new_tokens_and_decode_as_if_fresh(shared_policy_fp32, prompts, greedy):
    """A search's second wave: the first wave's prompts plus some answer text. Inside keep_prefixes() the
    prompts are not encoded again, and greedy answers and log-probs match a backend that keeps nothing."""
    fresh = TransformersBackend(shared_policy_fp32, TransformersBackendOptions())
    keeping = TransformersBackend(shared_policy_fp32, TransformersBackendOptions())
    longer = [p + g.text[:8] for p, g in zip(prompts, greedy)]
    requests = [GenerationRequest(p, max_new_tokens=10, temperature=0) for p in longer]
    expected = fresh.generate(requests)
    with keeping.keep_prefixes():
        keeping.generate([GenerationRequest(p, max_new_tokens=2, temperature=0) for p in prompts])
        before = keeping.encoded_tokens
        got = keeping.generate(requests)
        encoded = keeping.encoded_tokens - before
    assert keeping.prefixes is None  # dropped when the block ends
    assert encoded < fresh.encoded_tokens / 4
    for want, have in zip(expected, got):
        assert have[0].text == want[0].text
        assert have[0].token_logprobs == pytest.approx(want[0].token_logprobs, abs=1e-3)


def test_prefix_store_finds_the_longest_common_beginning_and_drops_the_least_recently_used():
    store = PrefixStore(max_tokens=8)
    store.add([1, 2, 3, 4], ["a"])
    store.add([1, 2, 9], ["b"])
    assert store.longest([1, 2, 3, 7]) == (["a"], 3)
    assert store.longest([5]) == (None, 0)
    store.add([6, 6], ["c"])  # 9 tokens > 8: [1, 2, 9] was used least recently
    assert store.longest([1, 2, 9]) == (["a"], 2)
    assert store.tokens == 6


# -- transformers' continuous batching (the engine taken on CUDA) ---------------------------------------
def test_the_engine_is_taken_on_cuda_for_plain_requests_only(shared_policy_fp32, prompts):
    """Decided from the policy's device alone (no GPU needed to check it): kept prefixes and ``enough``
    are the loop's, and the option forces either way."""
    from itool.plugins.models.transformers_loader import TransformersPolicy

    policy = shared_policy_fp32
    on_cuda = TransformersPolicy(policy.model, policy.tokenizer, torch.device("cuda"), policy.dtype)
    plain = [GenerationRequest(p, n=4, temperature=1.0) for p in prompts]
    with_enough = [*plain, GenerationRequest(prompts[0], enough=lambda text: True)]
    cuda_backend = TransformersBackend(on_cuda, TransformersBackendOptions())
    assert cuda_backend.uses_engine(plain) and not cuda_backend.uses_engine(with_enough)
    with cuda_backend.keep_prefixes():
        assert not cuda_backend.uses_engine(plain)
    assert not TransformersBackend(policy, TransformersBackendOptions()).uses_engine(plain)
    assert TransformersBackend(policy, TransformersBackendOptions(engine="continuous-batching")).uses_engine(with_enough)
    assert not TransformersBackend(on_cuda, TransformersBackendOptions(engine="loop")).uses_engine(plain)


def test_the_engine_gives_the_loops_greedy_texts_log_probs_and_endings(shared_policy_fp32, prompts, greedy):
    """Continuous batching runs on the CPU too: the same greedy answers, the model's log-probs, and the
    loop's endings (a stop string cuts the text, ``enough`` ends it, the token budget says "length")."""
    engine = TransformersBackend(shared_policy_fp32, TransformersBackendOptions(engine="continuous-batching"))
    stop = greedy[0].text.split()[1]
    out = engine.generate([GenerationRequest(p, n=2 if k == 1 else 1, max_new_tokens=12, temperature=0)
                           for k, p in enumerate(prompts)]
                          + [GenerationRequest(prompts[0], max_new_tokens=12, temperature=0, stop=[stop]),
                             GenerationRequest(prompts[2], max_new_tokens=12, temperature=0,
                                               enough=lambda text: len(text) >= 5)])
    for alone, generations in zip(greedy, out):
        for generation in generations:
            assert (generation.text, generation.finish_reason) == (alone.text, alone.finish_reason)
            assert generation.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-3)
    cut, early = out[3][0], out[4][0]
    assert cut.finish_reason == "stop" and cut.text == greedy[0].text[: greedy[0].text.index(stop)]
    assert early.finish_reason == "stop" and 5 <= len(early.text) < len(greedy[2].text)
    assert greedy[2].text.startswith(early.text)


def test_engine_samples_follow_the_seed_and_carry_the_models_log_probs(shared_policy_fp32, prompts):
    """Sampled at temperature 1.5, the log-probs are still the model's (what score() gives the text)."""
    engine = TransformersBackend(shared_policy_fp32, TransformersBackendOptions(engine="continuous-batching"))
    request = GenerationRequest(prompts[1], n=3, max_new_tokens=8, temperature=1.5)
    torch.manual_seed(7)
    first = engine.generate([request])[0]
    torch.manual_seed(7)
    assert [g.text for g in engine.generate([request])[0]] == [g.text for g in first]
    scores = engine.score([prompts[1]] * 3, [g.text for g in first])
    same_tokens = [(g, s) for g, s in zip(first, scores) if s.n_tokens == len(g.token_logprobs)]
    assert same_tokens  # texts that re-tokenise to the tokens sampled
    for generation, score in same_tokens:
        assert score.logprob_sum == pytest.approx(sum(generation.token_logprobs), abs=1e-3 * score.n_tokens)
