"""Data that flows between stages. Every stage output on disk is one of these, as JSON or JSONL."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ToolCall(BaseModel):
    """One function call: ``name(**arguments)``. Positional arguments are not part of the schema."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    name: str | None = Field(default=None, description="For role 'tool': which function answered.")


class Sample(BaseModel):
    """One training or test example: a conversation, the tools on offer and the expected calls.

    ``answer`` empty means the right response calls no tool (irrelevance). Multi-turn samples keep
    one answer list per user turn in ``turns``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    category: str = ""
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    answer: list[ToolCall] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class PreferencePair(BaseModel):
    """A TRL-format preference pair (``prompt``/``chosen``/``rejected``) plus provenance."""

    prompt: str
    chosen: str
    rejected: str
    sample_id: str = ""
    chosen_value: float | None = None
    rejected_value: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchNode(BaseModel):
    """A node of a search tree. ``text`` is the step this node appends to its parent's prefix."""

    id: int
    parent: int | None = None
    text: str = ""
    prior: float = 1.0
    visits: int = 0
    value: float = 0.0
    terminal: bool = False
    rollout: str | None = Field(default=None, description="A complete answer that continues this node.")
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchTree(BaseModel):
    """A finished search for one sample: the nodes in creation order, root first."""

    sample_id: str
    prompt: str
    nodes: list[SearchNode]
    meta: dict[str, Any] = Field(default_factory=dict)

    def children(self, node_id: int) -> list[SearchNode]:
        return [n for n in self.nodes if n.parent == node_id]

    def prefix(self, node_id: int) -> str:
        """The answer text from the root down to and including ``node_id``."""
        by_id = {n.id: n for n in self.nodes}
        parts: list[str] = []
        node: SearchNode | None = by_id[node_id]
        while node is not None:
            parts.append(node.text)
            node = by_id.get(node.parent) if node.parent is not None else None
        return "".join(reversed(parts))


class Verdict(BaseModel):
    """The evaluator's judgement of one sample."""

    sample_id: str
    category: str
    valid: bool
    error_type: str | None = None
    error: str | None = None
    output: str = ""


class EvalReport(BaseModel):
    """Per-sample verdicts plus summary rows (name -> accuracy in [0, 1])."""

    verdicts: list[Verdict]
    summary: dict[str, float]
