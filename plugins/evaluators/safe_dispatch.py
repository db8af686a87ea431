"""Run tool calls against BFCL's Python backends without ``eval``/``exec``, within limits.

BFCL's own multi-turn checker rewrites call strings into ``instance.method(...)`` and ``eval``s them.
Here call text is parsed with ``ast`` into (name, literal arguments): only plain ``name(...)`` calls,
arguments that ``ast.literal_eval`` accepts, and names on the allow-list (the public methods of the
involved backend classes) ever reach a backend. The same path serves model output and the ground
truth, and any tool environment that wants these backends.

Every call is bounded (``CallLimits``). Its arguments are size-checked first (integer digits, string
length, container items, nesting). Then it runs in a process of its own with a wall-clock budget
(``call_timeout``): a 40-character call such as ``power(base=10, exponent=10000000000)`` or
``square_root(number=2, precision=10**9)`` spends its time inside one C-level big-number operation,
which no signal or thread can interrupt, so only a process can be stopped. The alternatives fail as
follows: a thread cannot be killed and would keep burning CPU and mutating the instance;
``signal.setitimer`` works only in the main thread and its handler only runs between bytecodes, i.e.
after the C operation returns; a worker that owned the instances would lose every entry's state when
it is killed, and the snapshots searches take would have to cross the process boundary; forking this
(large, multi-threaded) process per call is slow and unsafe; starting a fresh interpreter after each
killed call costs a second on a busy machine.

So this process keeps the instances (snapshots and restores stay plain deep copies) and sends the one
instance a call needs, with the call, to a small single-threaded worker (``call_worker.py``, started
once per process); the worker forks a child per call, kills it at the budget, and sends back the
result and the changed instance (pickled: well under a millisecond for BFCL's scenarios). A call over
its budget is answered with an error result and leaves the instance as it was. Since each call runs
in a throw-away process, the process-wide state the backends set (``decimal``'s context precision,
``mpmath.mp.dps``) never reaches the next call, nor this process.
"""

from __future__ import annotations

import ast
import atexit
import copy
import importlib
import inspect
import os
import pickle
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from pydantic import BaseModel, Field

from itool.errors import ItoolError
from itool.plugins.evaluators import call_worker
from itool.plugins.evaluators.call_worker import BACKEND_MODULES, BACKEND_PACKAGE, ERROR
from itool.schemas import ToolCall

STATELESS_CLASSES = {"MathAPI"}  # built without a scenario, as BFCL does

MAX_CALL_TEXT = 20_000  # characters; longer text is refused before parsing
WORKER_START_TIMEOUT = 120.0  # seconds for a fresh worker to import the backends
WORKER_GRACE = 30.0  # seconds the worker may take beyond a call's budget before it is deemed stuck


class DispatchError(ValueError):
    """The call text is not a plain list of literal calls, or a class is unknown."""


class CallLimits(BaseModel):
    """Bounds on every dispatched call (options of the environments and evaluators that run calls)."""

    call_timeout: float = Field(
        0.5, gt=0, le=3600,
        description="Seconds a call may run (wall clock) before it is stopped and answered with an error; "
        "BFCL's calls take well under a millisecond.",
    )
    max_int_digits: int = Field(100, ge=1, description="Integer arguments with more decimal digits are refused.")
    max_string_chars: int = Field(10_000, ge=1, description="Longer string arguments are refused.")
    max_items: int = Field(1_000, ge=1, description="Most list/dict/tuple elements in one call's arguments, all levels together.")
    max_depth: int = Field(16, ge=1, description="Deepest container nesting in a call's arguments.")


def check_arguments(args: list[Any], kwargs: dict[str, Any], limits: CallLimits) -> None:
    """Raise ``DispatchError`` when an argument is larger than ``limits`` allow (walked without recursion)."""
    int_bound = 10 ** limits.max_int_digits
    items = 0
    pending: list[tuple[Any, int]] = [(value, 1) for value in [*args, *kwargs.values()]]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, bool) or value is None or isinstance(value, (float, complex)):
            continue
        if isinstance(value, int):
            if abs(value) >= int_bound:
                raise DispatchError(f"integer argument longer than {limits.max_int_digits} digits")
        elif isinstance(value, (str, bytes)):
            if len(value) > limits.max_string_chars:
                raise DispatchError(f"string argument longer than {limits.max_string_chars} characters")
        elif isinstance(value, (list, tuple, set, frozenset, dict)):
            if depth > limits.max_depth:
                raise DispatchError(f"arguments nested deeper than {limits.max_depth}")
            elements = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
            items += len(elements)
            if items > limits.max_items:
                raise DispatchError(f"arguments with more than {limits.max_items} elements")
            pending += [(element, depth + 1) for element in elements]
        else:
            raise DispatchError(f"argument of type {type(value).__name__} is not accepted")


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


# -- the worker process ------------------------------------------------------------------------
class _Worker:
    """A child interpreter running ``call_worker.py``, reached through two pipes (its stdout stays free
    for anything the backends print)."""

    def __init__(self) -> None:
        to_child, to_parent = os.pipe(), os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, call_worker.__file__, str(to_child[0]), str(to_parent[1])],
            pass_fds=(to_child[0], to_parent[1]), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        os.close(to_child[0])
        os.close(to_parent[1])
        self.requests = Connection(to_child[1], readable=False)
        self.replies = Connection(to_parent[0], writable=False)
        self.ready = False

    def wait_ready(self) -> None:
        try:
            self.ready = self.replies.poll(WORKER_START_TIMEOUT) and self.replies.recv_bytes() == b"ready"
        except (EOFError, OSError):
            pass
        if not self.ready:
            self.close()
            raise ItoolError(f"the tool-call worker did not start ({sys.executable} could not import the BFCL backends)")

    def run(self, instance: Any, method: str, args: list[Any], kwargs: dict[str, Any], timeout: float) -> tuple[str, Any] | None:
        """The reply, or None when the worker itself stopped answering (it is then unusable)."""
        if not self.ready:
            self.wait_ready()
        self.requests.send_bytes(pickle.dumps((instance, method, args, kwargs, timeout)))
        if not self.replies.poll(timeout + WORKER_GRACE):
            return None
        return pickle.loads(self.replies.recv_bytes())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.requests.close()
        self.replies.close()


class _SharedWorker:
    """The process's one worker, started on first use; calls from several threads take turns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker: _Worker | None = None
        self.pid = 0

    def run(self, instance: Any, method: str, args: list[Any], kwargs: dict[str, Any], timeout: float) -> tuple[str, Any]:
        """(result text, the instance after the call); a call over ``timeout`` gets an error result and
        leaves the instance as it was."""
        with self.lock:
            if self.worker is None or self.pid != os.getpid():  # none yet, or inherited through fork
                self.worker, self.pid = _Worker(), os.getpid()
            try:
                reply = self.worker.run(instance, method, args, kwargs, timeout)
            except (EOFError, OSError):
                reply = None
            if reply is None:
                self.close()
                return f"{ERROR}: the tool-call worker stopped; the call had no effect", instance
            text, changed = reply
            return text, instance if changed is None else changed

    def close(self) -> None:
        if self.worker is not None and self.pid == os.getpid():
            self.worker.close()
        self.worker = None


_shared_worker = _SharedWorker()
atexit.register(_shared_worker.close)


def run_isolated(instance: Any, method: str, args: list[Any], kwargs: dict[str, Any], timeout: float) -> tuple[str, Any]:
    """``instance.method(*args, **kwargs)`` in a throw-away process within ``timeout`` seconds: (result
    text, the instance after the call). Over the budget the result is an error and the instance is the
    one given. No argument checks: ``Dispatcher.call`` makes them."""
    return _shared_worker.run(instance, method, args, kwargs, timeout)


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
    """Calls public methods of a fixed set of backend instances by name, each call within ``limits``."""

    def __init__(self, instances: dict[str, Any], limits: CallLimits | None = None):
        self.limits = limits or CallLimits()
        self._set(instances)

    def _set(self, instances: dict[str, Any]) -> None:
        self.instances = instances
        self.owners: dict[str, str] = {}  # public method name -> the key of the instance that has it
        for key, instance in instances.items():
            for name, _ in inspect.getmembers(instance, inspect.ismethod):
                if not name.startswith("_"):
                    self.owners[name] = key

    @classmethod
    def for_entry(cls, classes: list[str], initial_config: dict[str, Any] | None = None,
                  long_context: bool = False, limits: CallLimits | None = None) -> "Dispatcher":
        return cls(load_backends(classes, initial_config, long_context), limits)

    def call(self, name: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> str:
        """Run one call; failures (unknown name, arguments over the limits, bad arguments, backend
        errors, running out of time) come back as text."""
        owner = self.owners.get(name)
        if owner is None:
            return f"{ERROR}: function {name!r} is not available"
        args, kwargs = list(args or []), dict(kwargs or {})
        try:
            check_arguments(args, kwargs, self.limits)
        except DispatchError as exc:
            return f"{ERROR}: {exc}"
        text, self.instances[owner] = run_isolated(self.instances[owner], name, args, kwargs, self.limits.call_timeout)
        return text

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
        self._set(copy.deepcopy(snapshot))
