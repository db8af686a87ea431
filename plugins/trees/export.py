"""``itool tree``: look at the search trees a run wrote (``roundN.search/trees.jsonl``, any tree search).

- ``itool tree render TREES.jsonl --index 0 --out tree.html [--png tree.png]``: one self-contained HTML
  page (no scripts, no external files): the tree as nested collapsible lists, every node with its
  text, visits, value, prior and tool results; the chosen path highlighted. Every piece of model text
  is HTML-escaped. ``--png`` also draws the tree with matplotlib.
- ``itool tree json TREES.jsonl --index 0 --out tree.json``: the same tree as nested JSON
  (``children`` inside each node), for other tools.

The chosen path is the one the search marked (``meta.chosen_path``, e.g. DFSDT's solution, empty when
it found none); trees of searches that mark none (PUCT) show the path that follows the
highest-valued child from the root.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import click

from itool import hookimpl
from itool.errors import ItoolError
from itool.rundir import atomic_path, check_output_file, read_jsonl, write_text
from itool.schemas import SearchNode, SearchTree

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; }
ul { list-style: none; padding-left: 1.4em; border-left: 1px dotted #bbb; }
summary { cursor: pointer; }
.node { display: inline-block; padding: 0.2em 0.5em; margin: 0.15em 0; border: 1px solid #ccc; border-radius: 4px; }
.chosen { border: 2px solid #c00; background: #fff3f0; }
.stats { color: #555; font-size: 0.85em; }
.pos { color: #070; } .neg { color: #a00; }
pre { margin: 0.2em 0; white-space: pre-wrap; max-width: 70em; }
.results { color: #035; }
"""


MAX_DEPTH = 200  # the drawings recurse once per level; real searches stay far shallower


def load_tree(path: Path, index: int | None = None, sample_id: str | None = None) -> SearchTree:
    """One tree of a trees.jsonl file, by position or by sample id, its shape checked."""
    if not Path(path).is_file():
        raise ItoolError(f"no such trees file: {path}")
    try:
        trees = read_jsonl(path, SearchTree)
    except ValueError as exc:  # JSON, UTF-8 and schema errors are all ValueErrors
        raise ItoolError(f"{path} is not a SearchTree JSONL file: {str(exc).splitlines()[0]}") from None
    if sample_id is not None:
        found = [t for t in trees if t.sample_id == sample_id]
        if not found:
            raise ItoolError(f"no tree for sample {sample_id!r} in {path}")
        tree = found[0]
    else:
        index = index or 0
        if not 0 <= index < len(trees):
            raise ItoolError(f"--index {index} is out of range: {path} holds {len(trees)} trees")
        tree = trees[index]
    depths(tree, f"{path}: tree of {tree.sample_id!r}")
    return tree


def depths(tree: SearchTree, where: str = "tree") -> dict[int, int]:
    """Each node's depth. A search writes nodes in creation order, root first, so every other node's
    parent comes before it: that rules out cycles (a node its own parent included) in one pass."""
    if not tree.nodes or tree.nodes[0].parent is not None:
        raise ItoolError(f"{where}: the first node must be the root (no parent)")
    depth: dict[int, int] = {}
    for node in tree.nodes:
        if node.id in depth:
            raise ItoolError(f"{where}: node id {node.id} appears twice")
        if node.parent is not None and node.parent not in depth:
            raise ItoolError(f"{where}: node {node.id}'s parent {node.parent} does not come before it "
                             "(a cycle, or a parent that is missing)")
        depth[node.id] = 0 if node.parent is None else depth[node.parent] + 1
        if depth[node.id] > MAX_DEPTH:
            raise ItoolError(f"{where}: deeper than {MAX_DEPTH} levels, too deep to draw")
    marked = tree.meta.get("chosen_path", [])
    if not isinstance(marked, list) or any(i not in depth for i in marked):
        raise ItoolError(f"{where}: meta.chosen_path must be a list of node ids of the tree")
    return depth


def chosen_path(tree: SearchTree) -> list[int]:
    """The path the search marked (none if it found no solution), or, for searches that mark none, the
    greedy highest-value path from the root."""
    if "chosen_path" in tree.meta:
        return list(tree.meta["chosen_path"])
    path = [tree.nodes[0].id] if tree.nodes else []
    while path and (kids := tree.children(path[-1])):
        path.append(max(kids, key=lambda n: n.value).id)
    return path


def nested(tree: SearchTree) -> dict[str, Any]:
    """The tree as nested JSON: each node's fields plus ``children``."""
    def build(node: SearchNode) -> dict[str, Any]:
        return {**node.model_dump(), "children": [build(c) for c in tree.children(node.id)]}

    return {"sample_id": tree.sample_id, "meta": tree.meta, "prompt": tree.prompt, "root": build(tree.nodes[0])}


def _node_html(tree: SearchTree, node: SearchNode, chosen: set[int]) -> str:
    e = html.escape
    value_class = "pos" if node.value > 0 else "neg" if node.value < 0 else ""
    kind = node.meta.get("kind", "terminal" if node.terminal else "")
    stats = (f"#{node.id} {e(str(kind))} · visits {node.visits} · "
             f"<span class='{value_class}'>value {node.value:+.3f}</span> · prior {node.prior:.3f}")
    body = f"<pre>{e(node.text) if node.text else '<i>(root)</i>'}</pre>"
    if node.meta.get("results"):
        body += f"<pre class='results'>→ {e(json.dumps(node.meta['results'], ensure_ascii=False))}</pre>"
    if node.rollout:
        body += f"<pre class='stats'>rollout: {e(node.rollout)}</pre>"
    box = f"<div class='node{' chosen' if node.id in chosen else ''}'><div class='stats'>{stats}</div>{body}</div>"
    kids = tree.children(node.id)
    if not kids:
        return f"<li>{box}</li>"
    inner = "".join(_node_html(tree, kid, chosen) for kid in kids)
    return f"<li><details open><summary>{box}</summary><ul>{inner}</ul></details></li>"


def render_html(tree: SearchTree) -> str:
    """A self-contained page for a person; all model text escaped."""
    e = html.escape
    chosen = set(chosen_path(tree))
    meta = ", ".join(f"{e(str(k))}={e(json.dumps(v, ensure_ascii=False, default=str))}" for k, v in tree.meta.items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>search tree {e(tree.sample_id)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Search tree of {e(tree.sample_id)}</h1><p class='stats'>{meta}</p>"
        f"<p>{len(tree.nodes)} nodes; the chosen path is outlined in red.</p>"
        f"<details><summary>prompt</summary><pre>{e(tree.prompt)}</pre></details>"
        f"<ul>{_node_html(tree, tree.nodes[0], chosen)}</ul></body></html>\n"
    )


def render_png(tree: SearchTree, path: Path) -> None:
    """A layered drawing: depth downwards, leaves spread across, colour = value, chosen path in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x: dict[int, float] = {}

    def place(node_id: int, next_leaf: list[float]) -> float:
        kids = tree.children(node_id)
        if not kids:
            x[node_id] = next_leaf[0]
            next_leaf[0] += 1
        else:
            x[node_id] = sum(place(k.id, next_leaf) for k in kids) / len(kids)
        return x[node_id]

    place(tree.nodes[0].id, [0.0])
    depth = depths(tree)
    chosen = set(chosen_path(tree))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * (max(x.values()) + 1)), max(3.0, 1.0 * (max(depth.values()) + 1))))
    for node in tree.nodes[1:]:
        on_path = node.id in chosen and node.parent in chosen
        ax.plot([x[node.parent], x[node.id]], [-depth[node.parent], -depth[node.id]],
                color="red" if on_path else "#999", linewidth=2.5 if on_path else 1, zorder=1)
    points = ax.scatter([x[n.id] for n in tree.nodes], [-depth[n.id] for n in tree.nodes],
                        c=[n.value for n in tree.nodes], cmap="RdYlGn", vmin=-1, vmax=1, s=120,
                        edgecolors=["red" if n.id in chosen else "black" for n in tree.nodes], zorder=2)
    for node in tree.nodes:
        ax.annotate(str(node.id), (x[node.id], -depth[node.id]), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=7)
    fig.colorbar(points, ax=ax, label="value")
    ax.set_axis_off()
    ax.set_title(f"{tree.sample_id}: {len(tree.nodes)} nodes")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


@click.group("tree")
def tree_group() -> None:
    """Render or export search trees (trees.jsonl from any tree search)."""


def _pick_options(func):
    func = click.option("--sample-id", default=None, help="Pick the tree of this sample instead.")(func)
    func = click.option("--index", type=int, default=0, show_default=True, help="Which tree of the file.")(func)
    return click.argument("trees", type=click.Path(path_type=Path))(func)


@tree_group.command("render")
@_pick_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="HTML file to write.")
@click.option("--png", type=click.Path(path_type=Path), default=None, help="Also draw the tree into this PNG.")
def render_command(trees: Path, index: int, sample_id: str | None, out: Path, png: Path | None) -> None:
    """Render one search tree as a self-contained HTML page (and optionally a PNG)."""
    check_output_file(out)
    if png is not None:
        check_output_file(png, "--png")
    tree = load_tree(trees, index, sample_id)
    write_text(out, render_html(tree))
    click.echo(f"tree of {tree.sample_id} ({len(tree.nodes)} nodes): {out}", err=True)
    if png is not None:
        render_png(tree, png)
        click.echo(f"drawing: {png}", err=True)


@tree_group.command("json")
@_pick_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSON file to write.")
def json_command(trees: Path, index: int, sample_id: str | None, out: Path) -> None:
    """Export one search tree as nested JSON (children inside each node)."""
    check_output_file(out)
    tree = load_tree(trees, index, sample_id)
    write_text(out, json.dumps(nested(tree), indent=2, ensure_ascii=False, default=str) + "\n")
    click.echo(f"tree of {tree.sample_id}: {out}", err=True)


@hookimpl
def register_commands(cli):
    cli.add_command(tree_group)
