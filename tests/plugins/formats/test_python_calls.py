"""The ``python`` format: BFCL-style prompts, and a parser corpus of clean, sloppy and hostile output."""

from __future__ import annotations

import copy
import json

import pytest

from itool.schemas import Message, Sample, ToolCall

WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def fmt(registry):
    component = registry.get("format", "python")
    return component.obj(component.parse_options({}))


def sample(**overrides) -> Sample:
    fields = {"id": "s1", "messages": [Message(role="user", content="Weather in Paris?")], "tools": [WEATHER]}
    return Sample(**{**fields, **overrides})


# -- round trips ----------------------------------------------------------------------------------
ROUND_TRIPS = [
    [ToolCall(name="get_weather", arguments={"city": "Paris"})],
    [ToolCall(name="math.factorial", arguments={"number": 5}), ToolCall(name="g", arguments={})],
    [ToolCall(name="f", arguments={"xs": [1, [2, -3.5]], "d": {"k": None, "n": {"t": True}}, "e": []})],
    [ToolCall(name="f", arguments={"q": 'it\'s a "quote"\n', "u": "héllo ✓ 日本"})],
    [ToolCall(name="sort", arguments={"#0": "final_report.pdf", "reverse": False})],
]


@pytest.mark.parametrize("calls", ROUND_TRIPS)
def test_rendered_answers_parse_back_to_the_same_calls(fmt, calls):
    text = fmt.render_answer(calls)
    assert fmt.parse(text).calls == calls


def test_answer_looks_like_bfcl_and_positional_arguments_render_positionally(fmt):
    calls = [ToolCall(name="f", arguments={"#0": "x", "a": 1}), ToolCall(name="g", arguments={"b": "x"})]
    assert fmt.render_answer(calls) == "[f('x', a=1), g(b='x')]"


def test_no_call_answer_is_plain_text_that_parses_as_no_calls(fmt):
    text = fmt.render_answer([])
    assert "[" not in text and text.strip()
    assert fmt.parse(text).calls == []


# -- tolerated output -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Sure! [get_weather(city='Paris')] Hope that helps.", [("get_weather", {"city": "Paris"})]),
        ("get_weather(city='Paris')", [("get_weather", {"city": "Paris"})]),
        ("Calling now:\nf(a=1), g(b=\"two\")", [("f", {"a": 1}), ("g", {"b": "two"})]),
        ("```python\n[f(a=(1, 2))]\n```", [("f", {"a": [1, 2]})]),
        ("[f(s='a]b)c'), g(s=\"[x(\")]", [("f", {"s": "a]b)c"}), ("g", {"s": "[x("})]),
        ("[f(n=-1, m=+2, x=1e3)]", [("f", {"n": -1, "m": 2, "x": 1000.0})]),
        ("get_weather(city='Paris').", [("get_weather", {"city": "Paris"})]),
    ],
)
def test_prose_fences_bare_calls_and_brackets_inside_strings(fmt, text, expected):
    result = fmt.parse(text)
    assert result.error is None
    assert [(c.name, c.arguments) for c in result.calls] == expected


@pytest.mark.parametrize("text", ["[]", "I cannot help with that: no function fits.", "", "The answer is (probably) 42."])
def test_text_without_any_call_is_a_no_call_answer(fmt, text):
    assert fmt.parse(text).calls == []


# -- rejected output ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "[get_weather(city='Par",                      # truncated mid-string
        "[get_weather(city='Paris'), get_time(",       # truncated call list
        "get_weather(city='Paris'",                    # truncated bare call
        "[f(a=1) g(b=2)]",                             # not a list
        "[f(a=1), 3]",                                 # not a call
        "[__import__('os').system('x')]",              # call in the function position
        "[f(a=__import__('os'))]",                     # call as a value
        "[f(a=lambda: 1)]",
        "[f(a=[i for i in range(3)])]",
        "[f(a=os.environ)]",                           # attribute chain as a value
        "[f(a=x)]",                                    # a name as a value
        "[f(a=f'{x}')]",
        "[f(**kwargs)]",
        "[f(a={1, 2})]",                               # sets are not JSON values
        "[f(a=b'bytes')]",
        "[f(" + "[" * 200 + "]" * 200 + ")]",         # deeply nested
        "[f(a='" + "x" * 1_000_000 + "')]",            # 10^6 characters
        "[f(a=1" + "0" * 5000 + ")]",                  # an integer beyond Python's digit limit
        "[f(a=0x" + "f" * 4000 + ")]",                 # parses, but could never be printed in decimal
        "[f(a='\\ud800')]",                           # a lone surrogate could not be written as UTF-8
        "[f(a=[{'k': '\\udfff'}])]",
        "[f(a=" + "-" * 5000 + "1)]",                 # within the depth limit, beyond the recursion limit
    ],
)
def test_broken_or_hostile_output_is_unparseable_with_a_reason(fmt, text):
    result = fmt.parse(text)
    assert result.calls is None and not result.ok
    assert result.error


def test_parsing_hostile_text_runs_nothing(fmt, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.chdir(tmp_path)
    for text in [f"[__import__('os').system('touch {marker}')]", f"[f(a=open('{marker}', 'w'))]",
                 f"__import__('pathlib').Path('{marker}').touch()"]:
        assert fmt.parse(text).calls is None
    assert not marker.exists()


def test_unparseable_depth_and_length_limits_are_options(registry):
    component = registry.get("format", "python")
    strict = component.obj(component.parse_options({"max_depth": 3, "max_chars": 50}))
    assert strict.parse("[f(a=[1])]").ok  # list, call, argument list: depth 3
    assert "nesting" in strict.parse("[f(a=[[1]])]").error
    assert "longer" in strict.parse("[f(a='" + "x" * 60 + "')]").error


# -- prompts --------------------------------------------------------------------------------------
def test_prompt_lists_tools_as_json_and_ends_at_the_assistant_turn(fmt, smol_tokenizer):
    prompt = fmt.render_prompt(sample(), smol_tokenizer)
    assert json.dumps([WEATHER]) in prompt
    assert "[func_name1(param1=value1, param2=value2), func_name2(param=value)]" in prompt
    assert prompt.index("<|im_start|>system") < prompt.index("Weather in Paris?")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_prompt_renders_earlier_calls_tool_results_and_the_samples_own_system_text(fmt, smol_tokenizer):
    messages = [
        Message(role="system", content="You are a travel agent."),
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})]),
        Message(role="tool", name="get_weather", content="sunny"),
        Message(role="user", content="And in Rome?"),
    ]
    prompt = fmt.render_prompt(sample(messages=messages), smol_tokenizer)
    system = prompt.split("<|im_end|>")[0]
    assert "You are a travel agent." in system and "get_weather" in system
    assert "<|im_start|>assistant\n[get_weather(city='Paris')]<|im_end|>" in prompt
    assert "<|im_start|>tool\nsunny<|im_end|>" in prompt


def test_templates_without_a_tool_role_get_tool_results_as_user_text(fmt, smol_tokenizer):
    strict = copy.deepcopy(smol_tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    messages = [Message(role="user", content="Weather?"), Message(role="assistant", content="ok"),
                Message(role="tool", name="get_weather", content="sunny")]
    prompt = fmt.render_prompt(sample(messages=messages), strict)
    assert "<user>Result of get_weather: sunny" in prompt and prompt.endswith("<assistant>")


def test_system_prompt_is_an_option(registry, smol_tokenizer):
    component = registry.get("format", "python")
    custom = component.obj(component.parse_options({"system_prompt": "Only call functions."}))
    assert "Only call functions." in custom.render_prompt(sample(), smol_tokenizer)


# -- BFCL's own decoder ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, arguments",
    [
        ("[f(a=1, b='x')]", {"a": 1, "b": "x"}),
        ("f(1, a=2)", {"a": 2}),                                  # positional arguments are dropped
        ("[f(unit=inches)]", {"unit": "inches"}),                 # a bare name is the string of its name
        ("[f(xs=(1, 2), ys=[(3,)])]", {"xs": (1, 2), "ys": [(3,)]}),  # tuples stay tuples
        ("[f(c=g(), d=g(k=1), e=a[0])]", {"c": "g()", "d": {"g": {"k": 1}}, "e": "a[0]"}),
        ("[f(n=+3, m=not True)]", {"n": -3, "m": -1}),            # BFCL negates under any unary operator
        ("[f(**extra)]", {"**": "extra"}),                        # BFCL's None key: never a known parameter
        ("```\n[f(a=1)]\n```", {"a": 1}),
    ],
)
def test_bfcl_decoder_reads_answers_as_bfcl_does(fmt, text, arguments):
    assert fmt.parse_as_bfcl(text).calls == [ToolCall(name="f", arguments=arguments)]


@pytest.mark.parametrize(
    "text",
    [
        "Sure: [f(a=1)]",           # only a bare call list decodes
        "```python\n[f(a=1)]\n```",  # the fence's language tag is left in the text
        "[f(a=1 + 2)]",             # BFCL evals arithmetic; we never evaluate
        "[f(a=lambda: 1)]",
        "[f(a=-x)]",
        "[f(a='\\ud800')]",
        "[f(a='" + "x" * 30_000 + "')]",
        "I cannot help with that.",  # prose: no call (irrelevance counts it as a right answer)
    ],
)
def test_bfcl_decoder_fails_where_bfcl_fails_or_would_evaluate(fmt, text):
    result = fmt.parse_as_bfcl(text)
    assert result.calls is None and result.error


def test_bfcl_decoder_reads_an_empty_list_as_no_call(fmt):
    assert fmt.parse_as_bfcl("[]").calls == []
