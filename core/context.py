"""What every component receives as ``ctx``: the config, the run directory and lazily built shared
objects (policy, backend, format, reward, data), all resolved through the registry.

A stage must be a pure function of (config, seed, stage name, inputs on disk), so that a resumed run
writes what an unbroken one does. The shared objects are built on first use, inside whichever stage
needs them first: in an unbroken run the model is loaded in the first stage that uses it, in a resumed
one in the first such stage after the resume point. Building them therefore never draws from the
random streams that the loop seeded for the stage (:func:`untouched_rng`).
"""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel

from itool.cache import EvaluationCache, evaluation_cache_root, installed_distributions, model_files, source_digest
from itool.config import COMPONENT_FIELDS, RunConfig
from itool.errors import ItoolError
from itool.processes import is_main
from itool.journal import Journal
from itool.registry import Component, Registry
from itool.rundir import RunDir
from itool.schemas import Sample


def stable_subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """Up to ``limit`` samples chosen by a hash of their ids: spread over categories, and the same
    subset whatever the run seed or the dataset's order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    return sorted(samples, key=lambda s: hashlib.sha256(s.id.encode()).hexdigest())[:limit]


def per_category_subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most ``limit`` samples of each category, chosen by id hash: a stratified subset in which
    small categories are kept whole."""
    by_category: dict[str, list[Sample]] = {}
    for sample in samples:
        by_category.setdefault(sample.category, []).append(sample)
    return [s for group in by_category.values() for s in stable_subset(group, limit)]


def derived_seed(*parts: Any) -> int:
    """A 32-bit seed that is a fixed function of ``parts`` (e.g. the run's seed and a stage name)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed every global random stream a component may draw from: Python, NumPy and torch (CPU, CUDA)."""
    import numpy
    import torch  # imported here so that `itool plugins` and `--help` stay fast

    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def untouched_rng() -> Iterator[None]:
    """Run a block without moving the global random streams (Python, NumPy, torch on CPU and CUDA):
    whatever it draws (a model's initialisation before its weights are loaded, an adapter merge) is
    given back, so the stage that triggered it draws the same numbers as one that did not."""
    import numpy
    import torch

    python_state, numpy_state = random.getstate(), numpy.random.get_state()
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            yield
    finally:
        random.setstate(python_state)
        numpy.random.set_state(numpy_state)


def tree_kinds(component: Component, attr: str) -> frozenset[str] | None:
    """The tree kinds a search ``produces`` or a pair builder ``accepts``; None when it declares none."""
    declared = component.attrs.get(attr)
    if declared is None:
        return None
    return frozenset([declared] if isinstance(declared, str) else declared)


def fits(search: Component, builder: Component) -> bool:
    """Whether ``builder`` can read ``search``'s trees. A component that declares nothing fits anything
    (plugins written before tree kinds existed keep working as they did)."""
    made, read = tree_kinds(search, "produces"), tree_kinds(builder, "accepts")
    return made is None or read is None or made <= read


def _names(components: Iterable[Component]) -> str:
    return ", ".join(c.name for c in components) or "none installed"


def quantize_argument(config: RunConfig) -> dict[str, str]:
    """The ``quantize`` keyword for the model loader: given only when the run quantises, so loaders
    written before the switch existed are called as they always were."""
    return {} if config.quantize == "none" else {"quantize": config.quantize}


class RunContext:
    def __init__(self, config: RunConfig, registry: Registry, run: RunDir):
        self.config = config
        self.registry = registry
        self.run = run
        self.stage: str = ""
        self.continue_with = "itool run --resume"  # the command that continues this run, for messages
        self._sample_cache: dict[str, list[Sample]] = {}
        self.resolved: dict[str, tuple[Component, BaseModel] | None] = {
            field: self._resolve(field) for field in COMPONENT_FIELDS
        }
        self._check_search_feeds_pairs()
        self._check_backend_follows_policy()

    def _resolve(self, field: str) -> tuple[Component, BaseModel] | None:
        spec = getattr(self.config, field)
        if spec is None:
            return None
        component = self.registry.get(COMPONENT_FIELDS[field], spec.name)
        return component, component.parse_options(spec.options)

    def _check_search_feeds_pairs(self) -> None:
        """Refuse, before anything runs, a search whose trees the pair builder cannot read (e.g. the
        agent paths of ``dfsdt`` given to ``step``, which needs rewarded rollouts)."""
        if not self.config.rounds:
            return
        search, builder = self.resolved["search"][0], self.resolved["pairs"][0]
        if fits(search, builder):
            return
        made = ", ".join(sorted(tree_kinds(search, "produces")))
        read = ", ".join(sorted(tree_kinds(builder, "accepts")))
        builders = [b for b in self.registry.components("pairs") if fits(search, b)]
        searches = [s for s in self.registry.components("search") if fits(s, builder)]
        raise ItoolError(
            f"search {search.name!r} makes {made!r} trees, which pair builder {builder.name!r} cannot read "
            f"(it reads {read}); pair builders for {search.name!r}: {_names(builders)}; "
            f"searches for {builder.name!r}: {_names(searches)}")

    def _check_backend_follows_policy(self) -> None:
        """Refuse, before anything runs, a run that trains the policy with a backend that would go on
        serving the weights it started with (a server it does not control): its searches and
        evaluations after training would silently use the untrained model."""
        trains = [part for part, on in (("a warm-up", self.config.warmup is not None),
                                        (f"{self.config.rounds} round(s)", self.config.rounds > 0)) if on]
        if not trains:
            return
        backend, opts = self.resolved["backend"]
        follows = backend.attrs.get("follows_policy", True)
        if not (follows(opts) if callable(follows) else follows):
            raise ItoolError(
                f"backend {backend.name!r} cannot follow a policy that training changes, and this run trains "
                f"({' and '.join(trains)}): see `itool plugins backend {backend.name}` for how it can follow, "
                f"or use it without training (--warmup none --rounds 0, itool eval, itool annotate)")

    def component(self, field: str) -> tuple[Component, BaseModel]:
        """The registered component in config slot ``field`` and its validated options."""
        found = self.resolved[field]
        if found is None:
            raise ItoolError(f"no {field} is configured")
        return found

    @property
    def stage_dir(self) -> Path:
        return self.run.stage_dir(self.stage or "misc")

    def journal(self, name: str, plan: Any) -> Journal:
        """The running stage's journal ``name`` for ``plan`` (see ``itool.journal``): the pieces an earlier,
        interrupted attempt at this stage finished for the same plan."""
        return Journal(self.stage_dir / f"{name}.journal.jsonl", plan)

    def evaluation_cache(self, samples: list[Sample]) -> EvaluationCache | None:
        """Where an evaluation of ``samples`` by the model as it was loaded is cached (``itool.cache``);
        None when adapters are merged into the policy (a trained model is evaluated once, in its run) or
        the cache is off."""
        root = evaluation_cache_root()
        if root is None or self.config.adapters or self.run.adapters:
            return None
        parts = {field: self.component(field) for field in ("loader", "evaluator", "backend", "format")}
        model = self.policy.model
        key = {
            "model": self.config.model, "model_files": model_files(self.config.model),
            "model_revision": getattr(model.config, "_commit_hash", None), "quantize": self.config.quantize,
            "dtype": str(model.dtype), "device": str(self.policy.device), "stage": self.stage, "seed": self.config.seed,
            "components": {field: [c.name, opts.model_dump(mode="json")] for field, (c, opts) in parts.items()},
            "samples": hashlib.sha256("\n".join(s.model_dump_json() for s in samples).encode()).hexdigest(),
            # Every plugin's package, not only these components': a hook (model_loaded) may change the model.
            "source": source_digest([*(c.obj.__module__ for c, _ in parts.values()),
                                     *(getattr(p, "__name__", None) or type(p).__module__
                                       for p in self.registry.pm.get_plugins())]),
            "distributions": installed_distributions(),
        }
        return EvaluationCache(root, key)

    def notify(self, hook: str, /, **arguments: Any) -> None:
        """Call lifecycle hook ``hook`` (see ``itool.hookspecs``) of every plugin that implements it.
        What a plugin draws from the random streams is given back, so watching a run never changes it."""
        caller = getattr(self.registry.pm.hook, hook)
        if caller.get_hookimpls():
            with untouched_rng():
                caller(ctx=self, **arguments)

    @cached_property
    def attempt(self) -> int:
        """Which attempt at this run the process is: 1 for a new run, one more on each ``--resume``.
        Every metrics row carries it, so rows of a killed attempt can be told from the rerun's."""
        return 1 + max((row.get("attempt", 0) for row in self.run.metrics()), default=0)

    def log(self, event: str, /, **metrics: Any) -> None:
        """One row in metrics.jsonl, also handed to every plugin's ``log_event`` hook; by the main process
        only, in a run of several (``itool.processes``), so each event is logged once."""
        if not is_main():
            return
        self.run.log(self.stage, event, **{**metrics, "attempt": self.attempt})
        self.notify("log_event", stage=self.stage, event=event, metrics=metrics)

    def stage_seed(self, stage: str) -> int:
        """A seed per (run seed, stage): a resumed run draws exactly what an unbroken one would."""
        return derived_seed(self.config.seed, stage)

    # -- shared objects, built on first use --------------------------------------------------------
    @cached_property
    def policy(self) -> Any:
        """The model with the configured adapters, then those of the run's completed stages, merged."""
        loader, opts = self.component("loader")
        with untouched_rng():
            policy = loader.obj(self.config.model, opts, device=self.config.device, dtype=self.config.dtype,
                                **quantize_argument(self.config))
            for adapter in [*self.config.adapters, *self.run.adapters]:
                policy.merge_adapter(adapter)
        return policy

    @cached_property
    def backend(self) -> Any:
        factory, opts = self.component("backend")
        policy = self.policy
        with untouched_rng():
            return factory.obj(policy, opts)

    @cached_property
    def format(self) -> Any:
        factory, opts = self.component("format")
        with untouched_rng():
            return factory.obj(opts)

    @cached_property
    def reward(self) -> Any:
        factory, opts = self.component("reward")
        with untouched_rng():
            return factory.obj(self, opts)

    def samples(self, split: str) -> list[Sample]:
        """The dataset's ``train`` or ``test`` split, cut to the configured limit."""
        if split not in self._sample_cache:
            dataset, opts = self.component("dataset")
            limit = self.config.train_limit if split == "train" else self.config.eval_limit
            with untouched_rng():
                self._sample_cache[split] = stable_subset(dataset.obj(split, opts), limit)
        return self._sample_cache[split]
