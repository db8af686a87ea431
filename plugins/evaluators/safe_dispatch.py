"""Run tool calls against BFCL's Python backends without ``eval``/``exec``.

BFCL's own multi-turn checker rewrites call strings into ``instance.method(...)`` and ``eval``s them.
Here call text is parsed with ``ast`` into (name, literal arguments): only plain ``name(...)`` calls,
arguments that ``ast.literal_eval`` accepts, and names on the allow-list (the public methods of the
involved backend classes) ever reach a backend. The same path serves model output and the ground
truth, and any tool environment that wants these backends.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from typing import Any, Callable

from itool.schemas import ToolCall

BACKEND_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
# BFCL's multi-turn classes and the modules defining them (standard library + mpmath only).
BACKEND_MODULES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
STATELESS_CLASSES = {"MathAPI"}  # built without a scenario, as BFCL does

MAX_CALL_TEXT = 20_000  # characters; longer text is refused before parsing


class DispatchError(ValueError):
    """The call text is not a plain list of literal calls, or a class is unknown."""


def parse_call_text(text: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """``"[f(a=1), g('x')]"`` or ``"f(a=1)"`` as ``[(name, args, kwargs), ...]``; never evaluates."""
    if len(text) > MAX_CALL_TEXT:
        raise DispatchError(f"call text longer than {MAX_CALL_TEXT} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise DispatchError(f"not Python call syntax: {type(exc).__name__}") from None
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    return [_literal_call(node) for node in nodes]


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise DispatchError(f"argument is not a literal: {ast.unparse(node)[:80]!r}") from None


def _literal_call(node: ast.AST) -> tuple[str, list[Any], dict[str, Any]]:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise DispatchError(f"not a plain function call: {ast.unparse(node)[:80]!r}")
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        raise DispatchError("*args and **kwargs are not allowed")
    return node.func.id, [_literal(a) for a in node.args], {k.arg: _literal(k.value) for k in node.keywords}


def split_positional(arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """``{"#0": a, "#1": b, "k": v}`` -> ``([a, b], {"k": v})``."""
    positional = sorted((int(k[1:]), v) for k, v in arguments.items() if k[:1] == "#" and k[1:].isdigit())
    return [v for _, v in positional], {k: v for k, v in arguments.items() if not (k[:1] == "#" and k[1:].isdigit())}


def result_text(value: Any) -> str:
    """A backend's return value as BFCL records it: strings as they are, dicts as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def load_backends(classes: list[str], initial_config: dict[str, Any] | None = None,
                  long_context: bool = False) -> dict[str, Any]:
    """Fresh backend instances, each loaded with its part of the entry's ``initial_config``."""
    instances = {}
    for name in classes:
        if name not in BACKEND_MODULES:
            raise DispatchError(f"unknown backend class {name!r} (known: {', '.join(BACKEND_MODULES)})")
        module = importlib.import_module(f"{BACKEND_PACKAGE}.{BACKEND_MODULES[name]}")
        instance = getattr(module, name)()
        if name not in STATELESS_CLASSES:
            instance._load_scenario(copy.deepcopy((initial_config or {}).get(name, {})), long_context=long_context)
        instances[name] = instance
    return instances


class Dispatcher:
    """Calls public methods of a fixed set of backend instances by name."""

    def __init__(self, instances: dict[str, Any]):
        self.instances = instances
        self.methods: dict[str, Callable[..., Any]] = {}
        for instance in instances.values():
            for name, method in inspect.getmembers(instance, inspect.ismethod):
                if not name.startswith("_"):
                    self.methods[name] = method

    @classmethod
    def for_entry(cls, classes: list[str], initial_config: dict[str, Any] | None = None,
                  long_context: bool = False) -> "Dispatcher":
        return cls(load_backends(classes, initial_config, long_context))

    def call(self, name: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> str:
        """Run one call; failures (unknown name, bad arguments, backend errors) come back as text."""
        method = self.methods.get(name)
        if method is None:
            return f"Error during execution: function {name!r} is not available"
        try:
            return result_text(method(*(args or []), **(kwargs or {})))
        except Exception as exc:  # a backend error is the call's result, as in BFCL
            return f"Error during execution: {exc}"

    def run(self, call_text: str) -> list[str]:
        """Parse ``call_text`` (raises ``DispatchError`` if it is anything but literal calls) and run
        each call in order; one result string per call."""
        return [self.call(name, args, kwargs) for name, args, kwargs in parse_call_text(call_text)]

    def run_calls(self, calls: list[ToolCall]) -> list[str]:
        """Run parsed calls; arguments keyed ``"#0"``, ``"#1"``... are positional (the formats' convention)."""
        return [self.call(c.name, *split_positional(c.arguments)) for c in calls]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.instances)

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.__init__(copy.deepcopy(snapshot))
