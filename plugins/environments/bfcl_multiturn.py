"""Environment ``bfcl-multiturn``: BFCL's multi-turn Python backends (file system, messaging, trading,
travel, ...) as an executable tool environment, one fresh set of instances per entry.

Every call goes through ``itool.plugins.evaluators.safe_dispatch.Dispatcher``: call text is parsed with
``ast``, only public methods of the entry's backend classes can be reached and only literal arguments
are accepted; nothing is ``eval``-ed. Text that is not a plain literal call list is refused with one
error result and touches no state. Each call is bounded by the options ``call_timeout`` (seconds; a
call over it is stopped and answered with an error result, the state stays as it was) and
``max_int_digits``/``max_string_chars``/``max_items``/``max_depth`` (larger arguments are refused), and
runs in a throw-away process, so the process-wide precision that BFCL's math backend sets never
reaches the next call.

For agent searches (``dfsdt``, ``react``) the registration also carries ``turns_of`` (the user
messages per turn), ``tools_at`` (the functions on offer in a turn: held-out functions of
``multi_turn_miss_func`` join at their turn) and ``check`` (the evaluator's own multi-turn comparison:
state and execution results against the ground truth's after each turn so far).

Branching searches keep each branch's state apart with ``snapshot()`` (a deep copy of the instances)
and ``restore(snapshot)`` (the instances become a deep copy of it, so one snapshot can be restored many
times): a search snapshots a node's state before trying its children and restores it before each one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from itool import hookimpl
from itool.errors import ItoolError
from itool.plugins.evaluators.bfcl_ast import Check
from itool.plugins.evaluators.bfcl_multiturn import ADDED_FUNCTIONS_TEXT, check_multi_turn, entry_of
from itool.plugins.evaluators.safe_dispatch import CallLimits, DispatchError, Dispatcher
from itool.schemas import Message, Sample, ToolCall

REFUSED = "Error: call refused"


class BfclMultiTurnOptions(CallLimits):
    involved_classes: list[str] = Field(default_factory=list, description="Backend classes of the entry, e.g. ['GorillaFileSystem'].")
    initial_config: dict[str, Any] = Field(default_factory=dict, description="The entry's initial_config (state per class).")
    long_context: bool = Field(False, description="Load the long-context variant of each scenario.")
    tools: list[dict[str, Any]] = Field(default_factory=list, description="Function docs shown to the model.")


class BfclMultiTurnEnvironment:
    """The backends of one BFCL multi-turn entry, reachable only through the safe dispatcher."""

    def __init__(self, opts: BfclMultiTurnOptions):
        self.opts = opts
        try:
            self.dispatcher = Dispatcher.for_entry(opts.involved_classes, opts.initial_config, opts.long_context, opts)
        except DispatchError as exc:
            raise ItoolError(f"bfcl-multiturn: {exc}") from None

    @property
    def instances(self) -> dict[str, Any]:
        """The live backend instances (the state compared with the ground truth's)."""
        return self.dispatcher.instances

    def tools(self) -> list[dict[str, Any]]:
        return list(self.opts.tools)

    def call(self, text: str) -> list[str]:
        """Run a literal call list; text that is anything else gets one ``Error: call refused`` result."""
        try:
            return self.dispatcher.run(text)
        except DispatchError as exc:
            return [f"{REFUSED}: {exc}"]

    def snapshot(self) -> dict[str, Any]:
        return self.dispatcher.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.dispatcher.restore(snapshot)


def factory(opts: BfclMultiTurnOptions) -> BfclMultiTurnEnvironment:
    """BFCL multi-turn backends (fs, messaging, trading, travel...) behind the eval-free dispatcher."""
    return BfclMultiTurnEnvironment(opts)


def options_for(sample: Sample) -> dict[str, Any]:
    """The per-entry options of a ``bfcl`` multi-turn sample (its classes, initial state and tools)."""
    return {
        "involved_classes": sample.meta.get("involved_classes", []),
        "initial_config": sample.meta.get("initial_config", {}),
        "long_context": bool(sample.meta.get("long_context", False)),
        "tools": sample.tools,
    }


def _entry(sample: Sample):
    if not sample.meta.get("turns"):
        raise ItoolError(f"bfcl-multiturn: sample {sample.id} is not a BFCL multi-turn entry "
                         "(use --dataset-opt categories=[multi_turn_base])")
    return entry_of(sample)


def turns_of(sample: Sample) -> list[list[Message]]:
    """User messages per turn; a turn that only reveals held-out functions says so, as BFCL does."""
    entry = _entry(sample)
    return [messages or ([Message(role="user", content=ADDED_FUNCTIONS_TEXT)] if turn in entry.missed else [])
            for turn, messages in enumerate(entry.user_turns)]


def tools_at(sample: Sample, turn: int) -> list[dict[str, Any]]:
    return _entry(sample).tools_at(turn)


def check(sample: Sample, steps: list[list[list[ToolCall]]]) -> Check:
    """Compare the calls of the turns answered so far (per turn, per message) with the ground truth."""
    entry = _entry(sample)
    answered = dataclasses.replace(entry, ground_truth=entry.ground_truth[: len(steps)])
    return check_multi_turn(answered, steps)


@hookimpl
def register_environments(register):
    register("bfcl-multiturn", factory, options=BfclMultiTurnOptions, options_for=options_for,
             turns_of=turns_of, tools_at=tools_at, check=check)
