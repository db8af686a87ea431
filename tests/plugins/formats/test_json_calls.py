"""The ``json`` format: JSON call lists, with the same parse contract as the python format."""

from __future__ import annotations

import pytest

from itool.schemas import Message, Sample, ToolCall


@pytest.fixture
def fmt(registry):
    component = registry.get("format", "json")
    return component.obj(component.parse_options({}))


def test_answers_round_trip_through_json(fmt):
    calls = [ToolCall(name="math.hypot", arguments={"x": 4, "y": -5.5}),
             ToolCall(name="f", arguments={"q": 'say "hi"', "nested": {"l": [1, None, True]}, "u": "日本"})]
    text = fmt.render_answer(calls)
    assert text.startswith('[{"name": "math.hypot", "arguments": {"x": 4')
    assert fmt.parse(text).calls == calls


@pytest.mark.parametrize(
    "text, names",
    [
        ('Here you go: [{"name": "f", "arguments": {"a": 1}}] done', ["f"]),
        ('```json\n{"name": "g", "arguments": {}}\n```', ["g"]),
        ('[{"name": "f"}]', ["f"]),
        ("[]", []),
        ("No function fits this request.", []),
    ],
)
def test_surrounding_text_fences_single_objects_and_no_calls(fmt, text, names):
    result = fmt.parse(text)
    assert [c.name for c in result.calls] == names


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"name": "f", "arguments": {"a": 1', "truncated"),
        ('[{"name": "f", "argu', "truncated"),
        ('[{"name": "f", "arguments": {"a": 1},}]', "bad JSON"),
        ('[{"name": 3, "arguments": {}}]', "each call"),
        ('[{"name": "f", "arguments": [1]}]', "each call"),
        ("[" * 10_000 + "{", "truncated"),
        ('[{"name": "f", "arguments": {"a": "' + "x" * 1_000_000 + '"}}]', "longer"),
    ],
)
def test_broken_output_is_unparseable_with_a_reason(fmt, text, reason):
    result = fmt.parse(text)
    assert result.calls is None and reason in result.error


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"name": "f", "arguments": {"n": ' + "9" * 4301 + "}}]", "4300 digits"),  # json.loads raises ValueError
        ('[{"name": "f", "arguments": {"s": "\\ud800"}}]', "lone surrogate"),        # could not be written as UTF-8
        ('[{"name": "\\udc00", "arguments": {}}]', "lone surrogate"),
        ('[{"name": "f", "arguments": {"k": [{"\\udfff": 1}]}}]', "lone surrogate"),
    ],
)
def test_values_that_could_not_be_written_on_make_the_answer_unparseable(fmt, text, reason):
    result = fmt.parse(text)
    assert result.calls is None and reason in result.error


def test_surrogate_pairs_and_large_but_printable_numbers_are_fine(fmt):
    text = '[{"name": "f", "arguments": {"s": "\\ud83d\\ude00", "n": ' + "9" * 4300 + "}}]"
    assert fmt.parse(text).calls[0].arguments["s"] == "\U0001F600"


def test_prompt_asks_for_json_calls(fmt, smol_tokenizer):
    sample = Sample(id="s", messages=[Message(role="user", content="hi")], tools=[{"name": "f"}])
    prompt = fmt.render_prompt(sample, smol_tokenizer)
    assert '[{"name": "f"}]' in prompt and '"arguments"' in prompt and prompt.endswith("<|im_start|>assistant\n")
