"""The contracts between the loop and its plugins (see ``itool.hookspecs`` for how to register).

Only types live here: every implementation is a plugin.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from itool.schemas import Sample, ToolCall

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Policy(Protocol):
    """The model being trained: a Hugging Face causal LM (possibly peft-wrapped) and its tokenizer."""

    model: Any
    tokenizer: Any

    @property
    def device(self) -> "torch.device": ...

    def merge_adapter(self, path: Path) -> None:
        """Load a PEFT adapter saved at ``path`` and merge it into the weights."""


@dataclass
class GenerationRequest:
    """Sample ``n`` continuations of ``prompt`` (already rendered with the chat template).

    ``enough``: the caller uses only the part of a continuation that makes ``enough(text)`` true (a tree
    search's first step), so a backend may end a sample there, with finish reason "stop". A hint: a
    backend that ignores it returns the same useful part."""

    prompt: str
    n: int = 1
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    enough: Callable[[str], bool] | None = None


@dataclass
class Generation:
    text: str
    token_logprobs: list[float]
    finish_reason: str = "length"  # "stop" (EOS or a stop string) or "length"


@dataclass
class Score:
    logprob_sum: float
    n_tokens: int


class GenerationBackend(Protocol):
    """Optional: ``keep_prefixes()``, a context manager inside which the backend may reuse its encoding of
    earlier prompts in later ``generate`` calls (the weights do not change inside it). Callers that send
    growing prompts (a search's waves, multi-turn dialogues) open it through :func:`kept_prefixes`."""

    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        """One list of ``request.n`` generations per request, in order."""

    def score(self, prompts: list[str], continuations: list[str]) -> list[Score]:
        """Log-prob sum and token count of each continuation given its prompt."""


def kept_prefixes(backend: GenerationBackend, enabled: bool = True) -> AbstractContextManager:
    """The backend's ``keep_prefixes()`` block where it offers one (and ``enabled``), else a no-op."""
    keep = getattr(backend, "keep_prefixes", None)
    return keep() if enabled and keep is not None else nullcontext()


@dataclass
class ParseResult:
    """Calls parsed from model output; ``calls is None`` means the text was not a valid answer."""

    calls: list[ToolCall] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.calls is not None


class ToolFormat(Protocol):
    def render_prompt(self, sample: Sample, tokenizer: Any) -> str:
        """The full prompt text, ending where the assistant's answer starts."""

    def render_answer(self, calls: list[ToolCall]) -> str:
        """The target text of an answer that makes ``calls`` (empty: a no-call answer)."""

    def parse(self, text: str) -> ParseResult:
        """Never raises and never executes anything."""


class Reward(Protocol):
    def score(self, sample: Sample, texts: list[str]) -> list[float]:
        """A value in [-1, 1] for each complete answer text."""


class ToolEnvironment(Protocol):
    """An executable tool backend with snapshot/restore for branching searches."""

    def tools(self) -> list[dict[str, Any]]: ...

    def call(self, text: str) -> list[str]:
        """Parse ``text`` as calls, run each through the allow-list, return one result per call."""

    def snapshot(self) -> Any: ...

    def restore(self, snapshot: Any) -> None: ...


class Retriever(Protocol):
    def rank(self, queries: list[str], tools: list[dict[str, Any]], k: int) -> list[list[int]]:
        """For each query, the indices into ``tools`` of the ``k`` most relevant tools, best first."""


@dataclass
class PreferenceBatch:
    """Per-example inputs of a preference loss (1-D tensors of equal length).

    ``*_logps`` are log-probs summed over response tokens, ``*_lengths`` the response token counts.
    Reference log-probs are set only for losses registered with ``needs_reference=True``."""

    policy_chosen_logps: "torch.Tensor"
    policy_rejected_logps: "torch.Tensor"
    chosen_lengths: "torch.Tensor"
    rejected_lengths: "torch.Tensor"
    reference_chosen_logps: "torch.Tensor | None" = None
    reference_rejected_logps: "torch.Tensor | None" = None


@dataclass
class LossOutput:
    """Per-example losses and the implicit rewards logged as metrics."""

    losses: "torch.Tensor"
    chosen_rewards: "torch.Tensor"
    rejected_rewards: "torch.Tensor"
