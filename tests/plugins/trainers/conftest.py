"""Real preference pairs from BFCL: the accepted answer against the same call with one wrong value
(the fragment-level mistake iTool's pairs isolate), rendered with the python format."""

from __future__ import annotations

import pytest

from itool.schemas import PreferencePair, ToolCall


def wrong_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 3 + 7
    if isinstance(value, str):
        return f"{value} unknown"
    return None


def with_wrong_value(calls: list[ToolCall]) -> list[ToolCall]:
    first = calls[0]
    name, value = next(iter(first.arguments.items()))
    return [first.model_copy(update={"arguments": {**first.arguments, name: wrong_value(value)}}), *calls[1:]]


def bfcl_pairs(registry, tokenizer, n: int) -> list[PreferencePair]:
    dataset = registry.get("dataset", "bfcl")
    fmt_component = registry.get("format", "python")
    fmt = fmt_component.obj(fmt_component.parse_options({}))
    samples = dataset.obj("train", dataset.parse_options({"categories": ["simple_python"]}))
    samples = [s for s in samples if s.answer and s.answer[0].arguments][:n]
    return [PreferencePair(prompt=fmt.render_prompt(s, tokenizer), chosen=fmt.render_answer(s.answer),
                           rejected=fmt.render_answer(with_wrong_value(s.answer)), sample_id=s.id) for s in samples]


@pytest.fixture
def make_bfcl_pairs(registry):
    """``make_bfcl_pairs(tokenizer, n)``: n real BFCL pairs (chosen = accepted answer)."""
    return lambda tokenizer, n: bfcl_pairs(registry, tokenizer, n)
