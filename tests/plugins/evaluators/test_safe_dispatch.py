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
