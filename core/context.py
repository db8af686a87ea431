"""What every component receives as ``ctx``: the config, the run directory and lazily built shared
objects (policy, backend, format, reward, data), all resolved through the registry."""

from __future__ import annotations

import hashlib
import random
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from itool.config import COMPONENT_FIELDS, RunConfig
from itool.errors import ItoolError
from itool.registry import Component, Registry
from itool.rundir import RunDir
from itool.schemas import Sample


def stable_subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """Up to ``limit`` samples chosen by a hash of their ids: spread over categories, and the same
    subset whatever the run seed or the dataset's order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    return sorted(samples, key=lambda s: hashlib.sha256(s.id.encode()).hexdigest())[:limit]


def seed_everything(seed: int) -> None:
    import torch  # imported here so that `itool plugins` and `--help` stay fast

    random.seed(seed)
    torch.manual_seed(seed)


class RunContext:
    def __init__(self, config: RunConfig, registry: Registry, run: RunDir):
        self.config = config
        self.registry = registry
        self.run = run
        self.stage: str = ""
        self._sample_cache: dict[str, list[Sample]] = {}
        self.resolved: dict[str, tuple[Component, BaseModel] | None] = {
            field: self._resolve(field) for field in COMPONENT_FIELDS
        }

    def _resolve(self, field: str) -> tuple[Component, BaseModel] | None:
        spec = getattr(self.config, field)
        if spec is None:
            return None
        component = self.registry.get(COMPONENT_FIELDS[field], spec.name)
        return component, component.parse_options(spec.options)

    def component(self, field: str) -> tuple[Component, BaseModel]:
        """The registered component in config slot ``field`` and its validated options."""
        found = self.resolved[field]
        if found is None:
            raise ItoolError(f"no {field} is configured")
        return found

    @property
    def stage_dir(self) -> Path:
        return self.run.stage_dir(self.stage or "misc")

    def log(self, event: str, /, **metrics: Any) -> None:
        self.run.log(self.stage, event, **metrics)

    def stage_seed(self, stage: str) -> int:
        """A seed per (run seed, stage): a resumed run draws exactly what an unbroken one would."""
        digest = hashlib.sha256(f"{self.config.seed}:{stage}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    # -- shared objects, built on first use --------------------------------------------------------
    @cached_property
    def policy(self) -> Any:
        loader, opts = self.component("loader")
        policy = loader.obj(self.config.model, opts, device=self.config.device, dtype=self.config.dtype)
        for adapter in [*self.config.adapters, *self.run.adapters]:
            policy.merge_adapter(adapter)
        return policy

    @cached_property
    def backend(self) -> Any:
        factory, opts = self.component("backend")
        return factory.obj(self.policy, opts)

    @cached_property
    def format(self) -> Any:
        factory, opts = self.component("format")
        return factory.obj(opts)

    @cached_property
    def reward(self) -> Any:
        factory, opts = self.component("reward")
        return factory.obj(self, opts)

    def samples(self, split: str) -> list[Sample]:
        """The dataset's ``train`` or ``test`` split, cut to the configured limit."""
        if split not in self._sample_cache:
            dataset, opts = self.component("dataset")
            limit = self.config.train_limit if split == "train" else self.config.eval_limit
            self._sample_cache[split] = stable_subset(dataset.obj(split, opts), limit)
        return self._sample_cache[split]
