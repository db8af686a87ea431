"""BFCL multi-turn: run the model turn by turn against BFCL's Python backends, then check it as BFCL's
multi_turn_checker does.

Inference. Each entry gets fresh backend instances loaded from its ``initial_config``. Turn t adds the
user's messages; within a turn the model may take several steps: a step that makes calls has them run
through the ``Dispatcher`` and the results appended as ``tool`` messages before the next generation; a
step without calls (prose, or text that does not parse) ends the turn, as does the cap
``max_steps_per_turn`` (BFCL instead fails an entry after 20 steps). Functions BFCL holds out
(``multi_turn_miss_func``) join the tool list at their turn, with a user message saying so. All active
entries advance together, one batched generation per step.

Checking (pure: it re-runs the recorded calls on fresh instances, so it can be used on any transcript).
Model and ground-truth calls run on separate instances that live across turns. After every turn whose
ground truth is not empty:

- the model must have made at least one call in that turn (``multi_turn:empty_turn_model_response``);
- state: every public attribute of every backend equals the ground truth's
  (``multi_turn:instance_state_mismatch``);
- response: every result of the turn's ground-truth calls appears (as a multiset) among the results of
  all the model's calls so far (``multi_turn:execution_response_mismatch``).

Turns whose ground truth is empty are where the request cannot be served; their calls still run, so
later state checks see them, as in BFCL.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from itool.components import GenerationRequest, ParseResult, kept_prefixes
from itool.plugins.evaluators.bfcl_ast import Check, OK
from itool.plugins.evaluators.safe_dispatch import CallLimits, Dispatcher, parse_call_text
from itool.schemas import Message, Sample, ToolCall, Verdict

ADDED_FUNCTIONS_TEXT = "I have updated some more functions you can choose from. What about now?"

Step = list[ToolCall]  # the calls of one model generation


@dataclass
class MultiTurnEntry:
    """What running and checking one entry needs, read from a ``bfcl`` dataset sample's meta."""

    sample: Sample
    classes: list[str]
    initial_config: dict[str, Any]
    user_turns: list[list[Message]]
    ground_truth: list[list[str]]
    missed: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def long_context(self) -> bool:
        return "long_context" in self.sample.category

    def dispatcher(self, limits: CallLimits | None = None) -> Dispatcher:
        return Dispatcher.for_entry(self.classes, self.initial_config, self.long_context, limits)

    def tools_at(self, turn: int) -> list[dict[str, Any]]:
        """The functions on offer in ``turn``: the sample's tools plus those revealed so far."""
        return [*self.sample.tools, *(f for t, docs in sorted(self.missed.items()) if t <= turn for f in docs)]


def entry_of(sample: Sample) -> MultiTurnEntry:
    """Read the meta the ``bfcl`` dataset keeps for multi-turn samples (``tools`` lacks held-out functions;
    ``missed_function_docs`` maps a turn to the docs revealed then)."""
    meta = sample.meta
    missed = {int(turn): list(docs) for turn, docs in (meta.get("missed_function_docs") or {}).items()}
    user_turns = [[Message(role=m["role"], content=m.get("content") or "") for m in turn] for turn in meta["turns"]]
    return MultiTurnEntry(sample, list(meta["involved_classes"]), dict(meta.get("initial_config") or {}),
                          user_turns, [list(t) for t in meta["ground_truth"]], missed)


def is_multi_turn(sample: Sample) -> bool:
    return sample.category.startswith("multi_turn")


# -- checking ----------------------------------------------------------------------------------
def _state_differences(model: Any, truth: Any) -> list[str]:
    return [name for name, value in vars(truth).items()
            if not name.startswith("_") and getattr(model, name, None) != value]


def _missing(expected: list[str], got: list[str]) -> list[str]:
    return list((Counter(expected) - Counter(got)).elements())


def check_multi_turn(entry: MultiTurnEntry, model_turns: list[list[Step]], limits: CallLimits | None = None) -> Check:
    """Check the model's calls (per turn, per step) against the entry's ground truth."""
    if len(model_turns) != len(entry.ground_truth):
        return Check(False, "multi_turn:force_terminated",
                     f"{len(model_turns)} turns answered of {len(entry.ground_truth)}")
    model, truth = entry.dispatcher(limits), entry.dispatcher(limits)
    model_results: list[str] = []
    for turn, (steps, expected_calls) in enumerate(zip(model_turns, entry.ground_truth)):
        for step in steps:
            model_results += model.run_calls(step)
        expected_results = [r for text in expected_calls for r in truth.run(text)]
        if not expected_calls:
            continue
        if not any(steps):
            return Check(False, "multi_turn:empty_turn_model_response", f"no call in turn {turn}")
        for name, instance in truth.instances.items():
            differences = _state_differences(model.instances[name], instance)
            if differences:
                return Check(False, "multi_turn:instance_state_mismatch",
                             f"turn {turn}: {name} differs from the ground truth in {', '.join(differences)}")
        missing = _missing(expected_results, model_results)
        if missing:
            return Check(False, "multi_turn:execution_response_mismatch",
                         f"turn {turn}: ground-truth results missing from the model's: {missing[:3]!r}")
    return OK


def ground_truth_steps(entry: MultiTurnEntry) -> list[list[Step]]:
    """The ground truth as a model transcript: one step per turn with all of its calls."""
    def calls(text: str) -> list[ToolCall]:
        return [ToolCall(name=name, arguments={**{f"#{i}": a for i, a in enumerate(args)}, **kwargs})
                for name, args, kwargs in parse_call_text(text)]

    return [[[c for text in turn for c in calls(text)]] if turn else [] for turn in entry.ground_truth]


# -- inference ---------------------------------------------------------------------------------
@dataclass
class _Episode:
    entry: MultiTurnEntry
    dispatcher: Dispatcher
    history: list[Message] = field(default_factory=list)
    turns: list[list[Step]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)


def _start_turn(episode: _Episode, turn: int) -> None:
    messages = list(episode.entry.user_turns[turn])
    if turn in episode.entry.missed and not messages:
        messages = [Message(role="user", content=ADDED_FUNCTIONS_TEXT)]
    episode.history += messages
    episode.turns.append([])


def _step(ctx: Any, active: list[_Episode], turn: int, max_new_tokens: int,
          parse: Callable[[str], ParseResult]) -> list[_Episode]:
    """One assistant message for every active episode; its calls run. Returns the episodes that called."""
    prompts = [
        ctx.format.render_prompt(
            e.entry.sample.model_copy(update={"messages": e.history, "tools": e.entry.tools_at(turn)}),
            ctx.policy.tokenizer,
        )
        for e in active
    ]
    outputs = ctx.backend.generate(
        [GenerationRequest(prompt=p, max_new_tokens=max_new_tokens, temperature=0.0) for p in prompts]
    )
    still_calling = []
    for episode, generations in zip(active, outputs):
        text = generations[0].text
        episode.transcript.append(text)
        calls = parse(text).calls
        if not calls:
            episode.history.append(Message(role="assistant", content=text))
            continue
        results = episode.dispatcher.run_calls(calls)
        episode.turns[-1].append(calls)
        episode.history.append(Message(role="assistant", tool_calls=calls))
        episode.history += [Message(role="tool", name=c.name, content=r) for c, r in zip(calls, results)]
        still_calling.append(episode)
    return still_calling


def run_multi_turn(ctx: Any, samples: list[Sample], max_new_tokens: int, max_steps_per_turn: int,
                   limits: CallLimits | None = None, parse: Callable[[str], ParseResult] | None = None) -> list[Verdict]:
    """Generate greedily, turn by turn and step by step (all entries batched), and check each entry.
    ``parse`` reads each step's calls (default: the format's own parser); ``limits`` bound every call."""
    parse = parse or ctx.format.parse
    episodes = [_Episode(e, e.dispatcher(limits)) for e in map(entry_of, samples)]
    n_turns = max((len(e.entry.user_turns) for e in episodes), default=0)
    with kept_prefixes(ctx.backend):  # each step's prompt is the previous one plus the new messages
        for turn in range(n_turns):
            active = [e for e in episodes if turn < len(e.entry.user_turns)]
            for episode in active:
                _start_turn(episode, turn)
            for _ in range(max_steps_per_turn):
                if not active:
                    break
                active = _step(ctx, active, turn, max_new_tokens, parse)
    verdicts = []
    for episode in episodes:
        result = check_multi_turn(episode.entry, episode.turns, limits)
        verdicts.append(Verdict(sample_id=episode.entry.sample.id, category=episode.entry.sample.category,
                                valid=result.valid, error_type=result.error_type, error=result.error,
                                output="\n---\n".join(episode.transcript)))
    return verdicts
