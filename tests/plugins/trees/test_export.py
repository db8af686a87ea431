"""`itool tree`: a search tree from trees.jsonl as a self-contained HTML page (model text escaped, the
chosen path highlighted), nested JSON and a PNG drawing."""

from __future__ import annotations

import json

from click.testing import CliRunner

from itool.cli import cli, get_registry
from itool.plugins.trees.export import chosen_path, render_html
from itool.rundir import write_jsonl
from itool.schemas import SearchNode, SearchTree

HOSTILE = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"


def make_tree(chosen: list[int] | None = None) -> SearchTree:
    nodes = [
        SearchNode(id=0, visits=3),
        SearchNode(id=1, parent=0, text=HOSTILE, visits=1, value=-1.0, meta={"kind": "give_up"}),
        SearchNode(id=2, parent=0, text="[ls(a=True)]", visits=2, value=0.5, meta={"kind": "call", "results": ["<b>files</b>"]}),
        SearchNode(id=3, parent=2, text="Done.", visits=1, value=1.0, terminal=True, meta={"kind": "answer"}),
    ]
    return SearchTree(sample_id="s<1>", prompt="<|im_start|>system", nodes=nodes,
                      meta={"chosen_path": chosen} if chosen is not None else {})


def cli_runner():
    get_registry().add_commands(cli)
    return CliRunner()


def test_html_escapes_model_text():
    page = render_html(make_tree())
    assert "<script>" not in page and "<img" not in page and "<b>files" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;img" in page
    assert "&lt;b&gt;files&lt;/b&gt;" in page and "s&lt;1&gt;" in page


def test_chosen_path_is_the_marked_one_or_else_the_best_valued():
    assert chosen_path(make_tree(chosen=[0, 1])) == [0, 1]
    assert chosen_path(make_tree(chosen=[])) == []  # the search found no solution
    assert chosen_path(make_tree()) == [0, 2, 3]
    page = render_html(make_tree())
    assert page.count("class='node chosen'") == 3
    assert "visits 2" in page and "value +0.500" in page


def test_render_command_writes_html_and_png(tmp_path):
    trees = tmp_path / "trees.jsonl"
    write_jsonl(trees, [make_tree(), make_tree(chosen=[0, 2, 3]).model_copy(update={"sample_id": "second"})])
    result = cli_runner().invoke(cli, ["tree", "render", str(trees), "--sample-id", "second",
                                       "--out", str(tmp_path / "t.html"), "--png", str(tmp_path / "t.png")])
    assert result.exit_code == 0, result.output
    assert "Search tree of second" in (tmp_path / "t.html").read_text()
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_json_command_nests_children(tmp_path):
    trees = tmp_path / "trees.jsonl"
    write_jsonl(trees, [make_tree()])
    result = cli_runner().invoke(cli, ["tree", "json", str(trees), "--out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    root = json.loads((tmp_path / "t.json").read_text())["root"]
    assert [c["id"] for c in root["children"]] == [1, 2] and root["children"][1]["children"][0]["text"] == "Done."


def test_bad_index_is_one_line_error(tmp_path):
    trees = tmp_path / "trees.jsonl"
    write_jsonl(trees, [make_tree()])
    result = cli_runner().invoke(cli, ["tree", "render", str(trees), "--index", "5", "--out", str(tmp_path / "t.html")])
    assert result.exit_code == 2 and "out of range: " in result.output and "Traceback" not in result.output
