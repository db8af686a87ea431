"""The dispatcher runs literal calls on BFCL's backends and refuses everything else, without eval."""

from __future__ import annotations

import pytest

from itool.plugins.evaluators.safe_dispatch import DispatchError, Dispatcher, parse_call_text
from itool.schemas import ToolCall

FILES = {"GorillaFileSystem": {"root": {"alice": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "hello world"}}}}}}


@pytest.fixture
def dispatcher() -> Dispatcher:
    return Dispatcher.for_entry(["GorillaFileSystem", "MathAPI"], FILES)


def test_runs_calls_in_order_and_returns_bfcl_style_results(dispatcher):
    results = dispatcher.run("[ls(), mkdir(dir_name='tmp'), cat('notes.txt'), add(a=2, b=3)]")
    assert results[0] == '{"current_directory_content": ["notes.txt"]}'
    assert results[2] == '{"file_content": "hello world"}'  # positional arguments bind like Python's
    assert results[3] == '{"result": 5}'
    assert "tmp" in dispatcher.instances["GorillaFileSystem"].root.contents


def test_run_calls_takes_parsed_calls_with_positional_keys(dispatcher):
    assert dispatcher.run_calls([ToolCall(name="cat", arguments={"#0": "notes.txt"})]) == ['{"file_content": "hello world"}']


def test_backend_errors_and_unknown_or_private_names_come_back_as_results(dispatcher):
    before = dispatcher.snapshot()
    results = dispatcher.run("[_load_scenario({}), rm_rf(path='/'), cat(file_name='missing.txt'), add(a=1)]")
    assert results[0] == "Error during execution: function '_load_scenario' is not available"
    assert results[1] == "Error during execution: function 'rm_rf' is not available"
    assert all(r.startswith("Error") or "error" in r for r in results)
    assert vars(dispatcher.instances["GorillaFileSystem"].root) == vars(before["GorillaFileSystem"].root)


@pytest.mark.parametrize("text", [
    "[__import__('os').system('echo pwned > pwned.txt')]",
    "[os.system('echo pwned > pwned.txt')]",
    "[ls().__class__()]",
    "[cat(file_name=open('pwned.txt', 'w'))]",
    "[cat(file_name=(lambda: 'notes.txt')())]",
    "[cat(file_name=[c for c in 'ab'])]",
    "[cat(file_name=notes)]",
    "[cat(**{'file_name': 'notes.txt'})]",
    "[cat(file_name=" + "[" * 10_000 + "]" * 10_000 + ")]",
    "x" * 30_000,
    "[cat(file_name='notes.txt'",
])
def test_refuses_anything_but_literal_calls(text, dispatcher, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DispatchError):
        dispatcher.run(text)
    assert not (tmp_path / "pwned.txt").exists()


def test_unknown_backend_classes_are_refused():
    with pytest.raises(DispatchError, match="unknown backend class 'os'"):
        Dispatcher.for_entry(["os"])


def test_parse_call_text_reads_bare_and_listed_calls():
    assert parse_call_text("f(1, b=[2, {'c': None}])") == [("f", [1], {"b": [2, {"c": None}]})]
    assert parse_call_text("[f(), g(x=-1.5)]") == [("f", [], {}), ("g", [], {"x": -1.5})]


def test_snapshot_and_restore_isolate_branches(dispatcher):
    start = dispatcher.snapshot()
    dispatcher.run("[mkdir(dir_name='a')]")
    dispatcher.restore(start)
    assert "a" not in dispatcher.instances["GorillaFileSystem"].root.contents
    dispatcher.run("[mkdir(dir_name='b')]")
    dispatcher.restore(start)  # a snapshot can be restored again
    assert set(dispatcher.instances["GorillaFileSystem"].root.contents) == {"notes.txt"}
    assert dispatcher.run("[cat(file_name='notes.txt')]") == ['{"file_content": "hello world"}']


# -- bounds ------------------------------------------------------------------------------------
HOSTILE_CALLS = [  # 40-odd characters each, minutes of CPU each when run unbounded
    "power(base=10, exponent=10000000000)",
    "square_root(number=2, precision=1000000000)",
    "logarithm(value=10, base=2, precision=1000000000)",
]


def test_hostile_calls_end_within_a_second_as_error_results_and_the_run_goes_on(dispatcher):
    import decimal
    import time

    import mpmath

    dispatcher.run("[mkdir(dir_name='kept')]")
    for text in HOSTILE_CALLS:
        started = time.monotonic()
        [result] = dispatcher.run(text)
        assert time.monotonic() - started < 1.0, text
        assert result == "Error during execution: the call ran longer than 0.5 s and was stopped"
    assert dispatcher.run("[add(a=2, b=3), ls()]") == ['{"result": 5}', '{"current_directory_content": ["notes.txt", "kept"]}']
    assert decimal.getcontext().prec == 28 and mpmath.mp.dps == 15  # this process's state is never touched


def test_backends_numeric_precision_does_not_leak_into_the_next_call():
    """``square_root`` and ``logarithm`` set decimal's and mpmath's precision process-wide; each call runs
    in a process of its own, so a later call computes at the default precisions."""
    import decimal

    import mpmath
    from bfcl_eval.eval_checker.multi_turn_eval.func_source_code.math_api import MathAPI

    from itool.plugins.evaluators.safe_dispatch import run_isolated

    text, _ = run_isolated(MathAPI(), "square_root", [2], {"precision": 60}, 5.0)
    assert text == "{'result': Decimal('1.41421356237309504880168872420969807856967187537694807317668')}"  # 60 digits
    assert "3.32192809488736234787031942948939017586483139302458061205475639581" in \
        run_isolated(MathAPI(), "logarithm", [], {"value": 10, "base": 2, "precision": 70}, 5.0)[0]
    # Decimal and mpf arithmetic use the ambient precision: 28 digits and 53 bits by default.
    assert run_isolated(decimal.Decimal(2), "sqrt", [], {}, 5.0)[0] == "1.414213562373095048801688724"
    assert run_isolated(mpmath.mpf(1), "__truediv__", [3], {}, 5.0)[0] == "0.333333333333333"
    assert decimal.getcontext().prec == 28 and mpmath.mp.dps == 15


@pytest.mark.parametrize("text, reason", [
    ("add(a=1" + "0" * 100 + ", b=1)", "integer argument longer than 100 digits"),
    ("cat(file_name='" + "x" * 10_001 + "')", "string argument longer than 10000 characters"),
    ("mean(numbers=[" + "1, " * 1_001 + "])", "arguments with more than 1000 elements"),
    ("mean(numbers=" + "[" * 18 + "]" * 18 + ")", "arguments nested deeper than 16"),
])
def test_arguments_over_the_size_limits_are_error_results(dispatcher, text, reason):
    assert dispatcher.run(text) == [f"Error during execution: {reason}"]


def test_limits_are_options():
    from itool.plugins.evaluators.safe_dispatch import CallLimits

    tight = Dispatcher.for_entry(["MathAPI"], limits=CallLimits(max_int_digits=3, call_timeout=0.1))
    assert tight.run("[add(a=999, b=1), add(a=1000, b=1)]") == [
        '{"result": 1000}', "Error during execution: integer argument longer than 3 digits"]
    slow = Dispatcher.for_entry(["MathAPI"], limits=CallLimits(call_timeout=0.1))
    assert "longer than 0.1 s" in slow.run("[power(base=10, exponent=10000000000)]")[0]
