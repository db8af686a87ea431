"""The BFCL AST checker on real BFCL v4 entries: the ground truth passes, each kind of mistake is
rejected with BFCL's error type, and hostile output is never executed."""

from __future__ import annotations

import pytest

from bfcl_entries import AST_CATEGORIES, entries, ground_truth_calls, parts
from itool.plugins.evaluators.bfcl_ast import Parts, check, java_value, js_value, partial_credit, standardize
from itool.schemas import ToolCall

# Entries whose own ground truth BFCL's checker rejects too (data quirks: a required parameter without
# accepted values, a string where a list is declared, ...); the agreement test confirms each one.
UNSOLVABLE = {
    "simple_python_200", "simple_java_36", "simple_java_64", "simple_java_65", "parallel_multiple_26",
    "live_simple_106-63-0", "live_simple_112-68-0", "live_multiple_144-56-0", "live_multiple_507-149-4",
    "live_multiple_834-178-9", "live_multiple_862-181-3", "live_multiple_964-207-0",
}


def entry(entry_id: str) -> dict:
    category = entry_id.rsplit("_", 1)[0]
    return next(e for e in entries(category) if e["id"] == entry_id)


def with_args(call: ToolCall, **changes) -> ToolCall:
    return call.model_copy(update={"arguments": {**call.arguments, **changes}})


@pytest.mark.parametrize("category", AST_CATEGORIES)
def test_every_ground_truth_answer_is_accepted(category):
    rejected = {e["id"]: check(parts(e), ground_truth_calls(e)) for e in entries(category)}
    rejected = {i: r for i, r in rejected.items() if not r.valid}
    assert set(rejected) <= UNSOLVABLE, rejected


# simple_python_0: calculate_triangle_area(base=10, height=5, unit=["units", ""])
def test_simple_rejects_each_kind_of_mistake_with_bfcls_error_type():
    e = entry("simple_python_0")
    (gt,) = ground_truth_calls(e)
    assert gt.name == "calculate_triangle_area" and gt.arguments == {"base": 10, "height": 5, "unit": "units"}
    cases = {
        "simple_function_checker:wrong_func_name": [gt.model_copy(update={"name": "triangle_area"})],
        "simple_function_checker:missing_required": [ToolCall(name=gt.name, arguments={"base": 10})],
        "simple_function_checker:unexpected_param": [with_args(gt, colour="red")],
        "value_error:others": [with_args(gt, height=6)],
        "type_error:simple": [with_args(gt, height="5")],
        "value_error:string": [with_args(gt, unit="cm")],
        "simple_function_checker:wrong_count": [gt, gt],
        "ast_decoder:decoder_failed": None,
    }
    for error_type, calls in cases.items():
        assert check(parts(e), calls) == (False, error_type, check(parts(e), calls).error)
    assert check(parts(e), []).error_type == "simple_function_checker:wrong_count"
    # The optional unit ("" accepted) may be left out; strings ignore case and punctuation.
    assert check(parts(e), [ToolCall(name=gt.name, arguments={"base": 10, "height": 5})]).valid
    assert check(parts(e), [with_args(gt, unit=" U-n_i.t,s ")]).valid


def test_types_follow_bfcl_rules():
    fn = {"name": "f", "parameters": {"type": "dict", "required": ["x"], "properties": {
        "x": {"type": "float"}, "flag": {"type": "boolean"}, "xs": {"type": "array", "items": {"type": "integer"}},
        "pair": {"type": "tuple", "items": {"type": "float"}}}}}
    answer = [{"f": {"x": [2.0], "flag": [True, ""], "xs": [[1, 2], ""], "pair": [[1.5, 2.5], ""]}}]
    ok = lambda **a: check(Parts("simple_python", [fn], answer), [ToolCall(name="f", arguments=a)])  # noqa: E731
    assert ok(x=2).valid  # int is accepted for float at the top level
    assert ok(x=2.0, flag=True, xs=[1, 2], pair=(1.5, 2.5)).valid  # tuples compare as lists
    assert ok(x=2.0, flag=1).error_type == "type_error:simple"  # 1 is not a bool
    assert ok(x=2.0, xs=[2, 1]).error_type == "value_error:list/tuple"
    # Element types are checked against each accepted list (an optional "" accepts any elements, as in BFCL).
    required_xs = [{"f": {"x": [2.0], "xs": [[1, 2]]}}]
    nested = check(Parts("simple_python", [fn], required_xs), [ToolCall(name="f", arguments={"x": 2.0, "xs": [1.0, 2]})])
    assert nested.error_type == "type_error:nested"  # no int->float inside lists


def test_multiple_picks_the_expected_function_among_several():
    e = entry("multiple_0")
    (gt,) = ground_truth_calls(e)
    other = next(f["name"] for f in e["function"] if f["name"] != gt.name)
    assert check(parts(e), [gt]).valid
    assert check(parts(e), [ToolCall(name=other, arguments=gt.arguments)]).error_type == \
        "simple_function_checker:wrong_func_name"
    assert check(parts(e), [gt, gt]).error_type == "multiple_function_checker:wrong_count"


def test_parallel_calls_match_in_any_order_one_to_one():
    e = entry("parallel_0")
    gt = ground_truth_calls(e)
    assert len(gt) > 1
    assert check(parts(e), list(reversed(gt))).valid
    assert check(parts(e), gt[:-1]).error_type == "parallel_function_checker_no_order:wrong_count"
    assert check(parts(e), [gt[0]] * len(gt)).error_type == "parallel_function_checker_no_order:cannot_find_match"


def test_one_to_one_matching_accepts_what_bfcls_greedy_matching_misses():
    e = entry("parallel_178")  # accepted dates overlap: first-fit pairs the reordered calls badly
    calls = ground_truth_calls(e)[::-1]
    assert check(parts(e), calls).valid
    assert check(parts(e), calls, greedy_parallel=True).error_type == \
        "parallel_function_checker_no_order:cannot_find_match"


def test_java_and_javascript_values_are_source_text_converted_per_type():
    assert java_value("42L", "long") == 42 and java_value("42", "long") == "42"
    assert java_value("3.5f", "float") == 3.5 and java_value("true", "boolean") is True
    assert java_value("new int[]{1, 2}", "Array", "integer") == [1, 2]
    assert java_value('new ArrayList<>(Arrays.asList("a", "b"))', "ArrayList", "String") == ["a", "b"]
    assert java_value('new HashMap<String, Object>() {{ put("k", 5); }}', "HashMap") == {"k": 5}
    assert js_value("'x'", "String") == "x" and js_value("12n", "Bigint") == 12
    assert js_value("[1, 2]", "array", "integer") == [1, 2] and js_value("{a: true}", "dict") == {"a": True}
    e = entry("simple_java_1")  # useShortName: boolean, params: HashMap
    (gt,) = ground_truth_calls(e)
    assert check(parts(e), [gt]).valid
    assert check(parts(e), [with_args(gt, useShortName=True)]).error_type == "type_error:java"
    assert check(parts(e), [with_args(gt, useShortName="false")]).error_type == "value_error:others"
    js = entry("simple_javascript_0")
    (gt,) = ground_truth_calls(js)
    assert check(parts(js), [gt]).valid
    assert check(parts(js), [with_args(gt, isComplete=True)]).error_type == "type_error:js"


@pytest.mark.parametrize("category", ["irrelevance", "live_irrelevance"])
def test_irrelevance_wants_no_call(category):
    e = entries(category)[0]
    assert check(parts(e), []).valid and check(parts(e), None).valid
    call = ToolCall(name=e["function"][0]["name"], arguments={})
    assert check(parts(e), [call]).error_type == "irrelevance_error:decoder_success"


def test_live_relevance_wants_any_call():
    e = entries("live_relevance")[0]
    assert check(parts(e), [ToolCall(name="anything")]).valid
    assert check(parts(e), []).error_type == "relevance_error:decoder_failed"
    assert check(parts(e), None).error_type == "relevance_error:decoder_failed"


def test_standardize_ignores_case_spaces_and_bfcl_punctuation():
    assert standardize("New York, N.Y.") == standardize("newyork ny") == "newyorkny"
    assert standardize("a'b") == 'a"b'


def test_partial_credit_is_one_exactly_when_check_accepts():
    e = entry("simple_python_0")
    (gt,) = ground_truth_calls(e)
    scores = {
        "right": partial_credit(parts(e), [gt]),
        "one wrong value": partial_credit(parts(e), [with_args(gt, height=6)]),
        "missing required": partial_credit(parts(e), [ToolCall(name=gt.name, arguments={"base": 10})]),
        "wrong name": partial_credit(parts(e), [gt.model_copy(update={"name": "nope"})]),
        "unparseable": partial_credit(parts(e), None),
    }
    assert scores["right"] == 1.0
    assert 1.0 > scores["one wrong value"] > scores["missing required"] > scores["wrong name"] == 0.0
    assert scores["unparseable"] == 0.0
    par = entry("parallel_0")
    gt = ground_truth_calls(par)
    assert 0.0 < partial_credit(parts(par), gt[:-1]) < 1.0 == partial_credit(parts(par), gt[::-1])


HOSTILE = [
    "[__import__('os').system('echo pwned > pwned.txt')]",
    "[calculate_triangle_area(base=__import__('os').system('echo pwned > pwned.txt'), height=5)]",
    "[calculate_triangle_area(base=(lambda: __import__('os').system('echo pwned > pwned.txt'))(), height=5)]",
    "[calculate_triangle_area(base=[open('pwned.txt', 'w') for _ in range(1)], height=5)]",
    "[os.system.__call__('echo pwned > pwned.txt')]",
    "[calculate_triangle_area(base=10**10**10, height=5)]",
    "[calculate_triangle_area(base=" + "9" * 200_000 + ", height=5)]",
    "[calculate_triangle_area(base=" + "[" * 5000 + "]" * 5000 + ", height=5)]",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_output_is_invalid_and_never_runs(text, registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory = registry.get("format", "python")
    parsed = factory.obj(factory.parse_options({})).parse(text)
    e = entry("simple_python_0")
    assert not check(parts(e), parsed.calls).valid
    assert partial_credit(parts(e), parsed.calls) < 1.0
    assert not (tmp_path / "pwned.txt").exists()
