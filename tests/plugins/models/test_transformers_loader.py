"""The transformers loader: the bundled GGUF cached as safetensors, device/dtype choice, one-line errors."""

from __future__ import annotations

import time
import warnings

import pytest
import torch
from transformers import DynamicCache

from itool.errors import ItoolError
from itool.plugins.models.small_batch_linear import ROWS
from itool.plugins.models.transformers_loader import (
    TransformersLoaderOptions, bf16_is_native, bundled_gguf, cache_keyword, load, resolve_dtype,
)


def test_first_load_converts_the_gguf_once_and_the_cache_gives_identical_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    gguf = bundled_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    opts = TransformersLoaderOptions(cache_dir=str(tmp_path))

    converted = load("smollm2-135m-instruct", opts, device="cpu", dtype="float32")
    started = time.perf_counter()
    cached = load("smollm2-135m-instruct", opts, device="cpu", dtype="float32")
    reload_seconds = time.perf_counter() - started

    # Longer than the small-batch linear's rows, so both models run the same kernels and agree bit for bit.
    ids = converted.tokenizer("Call get_weather(city='Paris') " * 8, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > max(ROWS)
    weights = reference.state_dict()
    for policy in (converted, cached):
        assert {name: torch.equal(w, weights[name]) for name, w in policy.model.state_dict().items()} == {
            name: True for name in weights}
    with torch.no_grad():
        expected = reference(ids).logits
        assert torch.equal(converted.model(ids).logits, expected)
        assert torch.equal(cached.model(ids).logits, expected)
    assert reload_seconds < 10  # ~1 s on an idle machine; the GGUF path takes ~12 s
    # Exactly one cache entry, no temporary leftovers from the atomic write.
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.iterdir()).name]
    assert not next(tmp_path.iterdir()).name.startswith(".")


def test_policy_pads_on_the_left_with_a_pad_token(shared_policy):
    assert shared_policy.tokenizer.padding_side == "left"
    assert shared_policy.tokenizer.pad_token_id is not None
    assert shared_policy.model.device.type == shared_policy.device.type == "cpu"


def test_auto_dtype_is_bf16_only_where_bf16_is_native():
    expected = torch.bfloat16 if bf16_is_native("cpu") else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("spec", ["/nonexistent/model", "./no-such-model-dir", "a/b/c"])
def test_a_missing_model_is_one_line_error(spec):
    with pytest.raises(ItoolError) as err:
        load(spec, TransformersLoaderOptions(), device="cpu", dtype="float32")
    assert "\n" not in str(err.value) and spec in str(err.value)


def test_a_folder_that_is_not_a_model_is_one_line_error(tmp_path):
    with pytest.raises(ItoolError) as err:
        load(str(tmp_path), TransformersLoaderOptions(), device="cpu", dtype="float32")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, opts, message",
    [
        ({"dtype": "int3"}, {}, "unknown dtype"),
        ({"device": "tpu-ish"}, {}, "unknown device"),
        ({}, {"load_in_4bit": True}, "CUDA"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, opts, message):
    if opts.get("load_in_4bit") and torch.cuda.is_available():
        pytest.skip("4-bit loading is allowed on CUDA")
    with pytest.raises(ItoolError, match=message):
        load("smollm2-135m-instruct", TransformersLoaderOptions(**opts), **{"device": "cpu", "dtype": "auto", **kwargs})


def test_merging_something_that_is_not_an_adapter_is_one_line_error(shared_policy, tmp_path):
    with pytest.raises(ItoolError, match="not a PEFT adapter"):
        shared_policy.merge_adapter(tmp_path)


def test_the_cache_goes_by_the_keyword_the_model_forward_takes(shared_policy):
    class Renamed:
        def forward(self, input_ids, cache=None): ...

    class Before:
        def forward(self, input_ids, past_key_values=None): ...

    assert cache_keyword(Renamed()) == "cache"
    assert cache_keyword(Before()) == "past_key_values"
    cache, ids = DynamicCache(), shared_policy.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", FutureWarning)  # the old keyword still works, with a deprecation warning
        shared_policy.model(input_ids=ids, use_cache=True, **{cache_keyword(shared_policy.model): cache})
    assert cache.get_seq_length() == ids.shape[1]
