"""The run configuration: defaults < preset < config file (YAML/TOML) < command-line flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from itool.errors import ItoolError, describe_validation_error
from itool.rundir import read_user_text

PRESETS_DIR = Path(__file__).parent / "presets"
MAX_ROUNDS = 1000  # far beyond any useful run, far below what a typo costs in memory
MAX_SAMPLES = 10_000_000


class ComponentSpec(BaseModel):
    """Which registered component fills a slot, and its options. A bare string means the name."""

    model_config = ConfigDict(extra="forbid")

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


# Config field -> registry kind, in the order the loop uses them.
COMPONENT_FIELDS: dict[str, str] = {
    "loader": "model",
    "backend": "backend",
    "format": "format",
    "dataset": "dataset",
    "warmup": "warmup",
    "sampler": "sampler",
    "search": "search",
    "reward": "reward",
    "pairs": "pairs",
    "trainer": "trainer",
    "loss": "loss",
    "evaluator": "evaluator",
}


class RunConfig(BaseModel):
    """Everything a run needs; saved as ``config.yaml`` in the run directory."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    name: str | None = Field(default=None, description="Run name; the run lives in <runs_dir>/<name>.")
    runs_dir: Path = Field(default=Path("runs"), description="Parent folder of run directories.")
    seed: int = Field(default=0, description="Seed for sampling, shuffling and initialisation.")
    model: str = Field(
        default="smollm2-135m-instruct",
        description="Model to train: an alias known to the loader, a local path or a hub id.",
    )
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda[:N]'.")
    dtype: str = Field(default="auto", description="'auto' (bf16 where it works), 'bfloat16', 'float32'.")
    quantize: Literal["none", "4bit", "8bit"] = Field(
        default="none",
        description="Load the model quantised (bitsandbytes, CUDA only) and train LoRA adapters on it: "
                    "'4bit' is QLoRA (NF4), '8bit' LLM.int8(). One switch: the loader and the trainers both read it.")
    rounds: int = Field(default=1, ge=0, le=MAX_ROUNDS, description="Reinforcement rounds after the warm-up.")
    train_limit: int | None = Field(default=32, ge=1, le=MAX_SAMPLES, description="Use at most this many train samples.")
    eval_limit: int | None = Field(default=16, ge=1, le=MAX_SAMPLES, description="Evaluate on at most this many samples.")
    eval_base: bool = Field(default=True, description="Evaluate the untrained model first.")
    adapters: list[Path] = Field(
        default_factory=list,
        description="PEFT adapters merged into the model before the run, in order (e.g. another run's warm-up).",
    )

    loader: ComponentSpec = ComponentSpec(name="transformers")
    backend: ComponentSpec = ComponentSpec(name="transformers")
    format: ComponentSpec = ComponentSpec(name="python")
    dataset: ComponentSpec = ComponentSpec(name="bfcl")
    warmup: ComponentSpec | None = ComponentSpec(name="curriculum")
    sampler: ComponentSpec = ComponentSpec(name="perplexity")
    search: ComponentSpec = ComponentSpec(name="puct")
    reward: ComponentSpec = ComponentSpec(name="ast")
    pairs: ComponentSpec = ComponentSpec(name="step")
    trainer: ComponentSpec = ComponentSpec(name="lora")
    loss: ComponentSpec = ComponentSpec(name="simpo")
    evaluator: ComponentSpec = ComponentSpec(name="bfcl")

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str | None) -> str | None:
        """The run lives in <runs_dir>/<name>: a name that is a path could put it anywhere."""
        if name is not None and (name in ("", ".", "..") or any(c in name for c in "/\\\0")):
            raise ValueError(f"name {name!r} must be a plain folder name (no '/', not '.' or '..')")
        return name

    @field_validator("adapters")
    @classmethod
    def _adapters_exist(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.is_dir():
                raise ValueError(f"adapter folder not found: {path}")
        return paths

    @model_validator(mode="before")
    @classmethod
    def _none_warmup(cls, values: Any) -> Any:
        if isinstance(values, dict):
            warmup = values.get("warmup")
            name = warmup.get("name") if isinstance(warmup, dict) else warmup
            if name in ("none", "off"):
                values = {**values, "warmup": None}
        return values


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) file as a dict, or one clear error."""
    path = Path(path)
    if not path.is_file():
        raise ItoolError(f"config file not found: {path}")
    text = read_user_text(path, "config file")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ItoolError(f"config file {path}: use a .yaml, .yml or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ItoolError(f"config file {path} is not valid {path.suffix[1:].upper()}: {first}") from None
    if not isinstance(data, dict):
        raise ItoolError(f"config file {path}: expected a mapping at the top level")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_preset(name: str) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ItoolError(f"unknown preset {name!r} (available: {', '.join(preset_names()) or 'none'})")
    return read_config_file(path)


def _as_spec(value: Any) -> Any:
    return {"name": value, "options": {}} if isinstance(value, str) else value


def merge(base: dict[str, Any], override: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """Recursive dict merge. Naming a different component drops the options set for the old one."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if top and key in COMPONENT_FIELDS:
            old, value = _as_spec(old), _as_spec(value)
            if isinstance(old, dict) and isinstance(value, dict) and value.get("name", old.get("name")) != old.get("name"):
                old = None
        out[key] = merge(old, value, top=False) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def defaults() -> dict[str, Any]:
    """The component slots of a default config: the bottom layer that options merge into."""
    slots = {f: RunConfig.model_fields[f].default for f in COMPONENT_FIELDS}
    return {f: spec.model_dump() if spec is not None else None for f, spec in slots.items()}


def parse_option(text: str, flag: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML, so ``2.5``, ``true`` and ``[1, 2]`` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ItoolError(f"{flag} expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_config(layers: list[dict[str, Any]]) -> RunConfig:
    merged = defaults()
    for layer in layers:
        merged = merge(merged, layer)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise ItoolError(describe_validation_error(exc)) from None


def config_data(config: RunConfig) -> dict[str, Any]:
    """The config as plain data: what ``config.yaml`` holds and ``state.json`` records."""
    return config.model_dump(mode="json")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two configs as data (``loss.options.beta``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [changed for key in dict.fromkeys([*old, *new])
                for changed in changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [prefix or "config"]
