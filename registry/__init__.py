"""Plugin discovery and lookup: one pluggy manager, entry points of group ``itool``, components by kind.

Built-in plugins come in through the same entry-point group as third-party packages, so this module
names none of them. ``ITOOL_PLUGINS=mod1,mod2`` also loads plain modules (handy while writing one).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy
from pydantic import BaseModel, ValidationError

from itool import hookspecs
from itool.errors import ItoolError, describe_validation_error

ENTRY_POINT_GROUP = "itool"

# kind -> name of the hook that registers it. The kind is what users see (`--loss`, `itool plugins`).
KINDS: dict[str, str] = {
    "model": "register_models",
    "backend": "register_backends",
    "format": "register_formats",
    "dataset": "register_datasets",
    "warmup": "register_warmups",
    "sampler": "register_samplers",
    "search": "register_searches",
    "reward": "register_rewards",
    "pairs": "register_pair_builders",
    "trainer": "register_trainers",
    "loss": "register_losses",
    "evaluator": "register_evaluators",
    "environment": "register_environments",
    "retriever": "register_retrievers",
}


class NoOptions(BaseModel):
    """Used for components that declare no options."""

    model_config = {"extra": "forbid"}


@dataclass
class Component:
    kind: str
    name: str
    obj: Any
    options: type[BaseModel]
    description: str
    package: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def parse_options(self, values: dict[str, Any] | None) -> BaseModel:
        """Validate user options; errors name the field as ``<kind>.options.<field>``.

        Unknown keys and non-finite numbers are refused here for every component, whatever its
        options model allows: a misspelt option silently left at its default is a wasted run."""
        values = values or {}
        known = self.option_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                listing = ", ".join(known) if known else "none"
                raise ItoolError(f"{self.kind}.options: {self.kind} {self.name!r} has no option {key!r} "
                                 f"(options: {listing}){hint}")
        try:
            parsed = self.options.model_validate(values)
        except ValidationError as exc:
            raise ItoolError(describe_validation_error(exc, f"{self.kind}.options")) from None
        for key in values:
            field_name = next((f for f, info in self.options.model_fields.items() if key in (f, info.alias)), key)
            if not _finite(getattr(parsed, field_name, None)):
                raise ItoolError(f"{self.kind}.options.{key}: must be a finite number, got {values[key]!r}")
        return parsed

    def option_names(self) -> list[str]:
        """The keys a user may set: field names, and aliases where a field has one."""
        return [name for field_name, info in self.options.model_fields.items()
                for name in dict.fromkeys([field_name, info.alias]) if isinstance(name, str)]


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a (possibly nested) option value."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_finite(v) for v in value)
    return True


@dataclass
class PluginFailure:
    package: str
    error: str


class Registry:
    """All components offered by the installed plugins, by kind and name."""

    def __init__(self, load_entry_points: bool = True, extra_modules: Iterable[Any] = ()):
        self.pm = pluggy.PluginManager("itool")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self._package_of: dict[str, str] = {}
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        if load_entry_points:
            self._load_entry_points()
        env_modules = [m for m in os.environ.get("ITOOL_PLUGINS", "").split(",") if m.strip()]
        for module in [*env_modules, *extra_modules]:
            self.add_plugin(module)

    # -- loading -------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.value):
            package = ep.dist.name if ep.dist else ep.value
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.failures.append(PluginFailure(f"{package} ({ep.name})", f"{type(exc).__name__}: {exc}"))
                continue
            self._register_module(module, package)

    def add_plugin(self, module: Any, package: str | None = None) -> None:
        """Register a module (or its dotted name) that has ``@hookimpl`` functions."""
        if isinstance(module, str):
            name = module.strip()
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                self.failures.append(PluginFailure(package or name, f"{type(exc).__name__}: {exc}"))
                return
        self._register_module(module, package or getattr(module, "__name__", repr(module)))

    def _register_module(self, module: Any, package: str) -> None:
        if self.pm.is_registered(module):
            return
        plugin_name = self.pm.register(module)
        if plugin_name is None:
            return
        self._package_of[plugin_name] = package
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue
                try:
                    impl.function(register=self._registrar(kind, package))
                except Exception as exc:
                    self.failures.append(PluginFailure(package, f"{hook_name}: {type(exc).__name__}: {exc}"))

    def _registrar(self, kind: str, package: str):
        def register(
            name: str,
            obj: Any,
            *,
            options: type[BaseModel] | None = None,
            description: str | None = None,
            **attrs: Any,
        ) -> None:
            existing = self._components[kind].get(name)
            if existing is not None:
                self.failures.append(
                    PluginFailure(package, f"{kind} {name!r} is already registered by {existing.package}")
                )
                return
            if description is None:
                lines = (inspect.getdoc(obj) or "").strip().splitlines()
                description = lines[0] if lines else ""
            self._components[kind][name] = Component(
                kind=kind,
                name=name,
                obj=obj,
                options=options or NoOptions,
                description=description,
                package=package,
                attrs=attrs,
            )

        return register

    # -- lookup --------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._components[self._check_kind(kind)])

    def components(self, kind: str | None = None) -> list[Component]:
        kinds = [self._check_kind(kind)] if kind else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def has(self, kind: str, name: str) -> bool:
        return name in self._components[self._check_kind(kind)]

    def get(self, kind: str, name: str) -> Component:
        found = self._components[self._check_kind(kind)].get(name)
        if found is not None:
            return found
        known = self.names(kind)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none installed"
        raise ItoolError(f"unknown {kind} {name!r} (available: {listing}){hint}")

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.register_commands(cli=cli)

    @staticmethod
    def _check_kind(kind: str) -> str:
        if kind not in KINDS:
            raise ItoolError(f"unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
        return kind
