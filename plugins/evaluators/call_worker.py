"""The process in which ``safe_dispatch`` runs backend calls (see its docstring for why a process).

Run as a script by path (``python call_worker.py READ_FD WRITE_FD``) so that it imports only the
standard library, mpmath and the backends. It is single-threaded and small, so it can fork cheaply
(about a millisecond) and safely: every call runs in a fresh fork of it, which

- is killed when it runs over the call's time budget (the worker itself lives on, so the next call
  starts at once);
- has its address space capped, so a call needing gigabytes fails fast with ``MemoryError``;
- takes every change of process-wide state with it when it exits: the backends set ``decimal``'s
  context precision (``square_root``), ``mpmath.mp.dps`` (``logarithm``) and write into module-level
  dicts (``get_outside_temperature_from_google``), and no later call sees any of it.

Requests are ``(instance, method, args, kwargs, timeout)``; replies ``(result text, instance after the
call or None)``, each pickled.
"""

import sys

if __name__ == "__main__":
    del sys.path[0]  # this folder holds plugin modules, not libraries the worker should see

import contextlib
import importlib
import json
import os
import pickle
import signal
from multiprocessing.connection import Connection
from typing import Any

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
MEMORY_BYTES = 2 << 30  # the worker's address-space cap
ERROR = "Error during execution"


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


def execute(instance: Any, method: str, args: list, kwargs: dict) -> str:
    """One backend call and its result text (a raised error is the call's result, as in BFCL)."""
    try:
        return result_text(getattr(instance, method)(*args, **kwargs))
    except Exception as exc:
        return f"{ERROR}: {exc}"


def run_forked(request: bytes) -> bytes:
    """The reply to one request, computed in a child process that is killed at the time budget."""
    instance, method, args, kwargs, timeout = pickle.loads(request)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # the call's own process: never returns
        os.close(read_fd)
        try:
            with contextlib.suppress(ImportError, ValueError, OSError):
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
            try:
                reply = pickle.dumps((execute(instance, method, args, kwargs), instance))
            except Exception as exc:  # e.g. MemoryError while pickling: the caller keeps its instance
                reply = pickle.dumps((f"{ERROR}: {type(exc).__name__}", None))
            Connection(write_fd, readable=False).send_bytes(reply)
        finally:
            os._exit(0)
    os.close(write_fd)
    result = Connection(read_fd, writable=False)
    try:
        if result.poll(timeout):
            return result.recv_bytes()
        os.kill(child, signal.SIGKILL)
        return pickle.dumps((f"{ERROR}: the call ran longer than {timeout:g} s and was stopped", None))
    except EOFError:  # the child died without replying (killed by the system)
        return pickle.dumps((f"{ERROR}: the call's process ended without a result", None))
    finally:
        result.close()
        os.waitpid(child, 0)


def serve(read_fd: int, write_fd: int) -> None:
    requests = Connection(read_fd, writable=False)
    replies = Connection(write_fd, readable=False)
    for module in BACKEND_MODULES.values():
        importlib.import_module(f"{BACKEND_PACKAGE}.{module}")
    replies.send_bytes(b"ready")
    while True:
        try:
            request = requests.recv_bytes()
        except EOFError:  # the parent is gone
            return
        replies.send_bytes(run_forked(request))


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
