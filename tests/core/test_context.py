"""A search and a pair builder state what trees they make and read; a run whose pair builder cannot read
its search's trees is refused when its context is built, before anything runs or is written.

The built-ins declare theirs; the third-party plugin below declares a kind of its own, and the toy
plugins of tests/loop_plugins.py declare nothing (as plugins written before tree kinds did)."""

from __future__ import annotations

import pytest

import loop_plugins
from itool import hookimpl
from itool.config import build_config
from itool.context import RunContext
from itool.errors import ItoolError
from itool.registry import Registry


class RankedLists:
    """A third-party search making trees of its own kind, and a pair builder that reads only those."""

    @hookimpl
    def register_searches(self, register):
        register("ranked", lambda ctx, samples, opts: [], produces="ranked-list")

    @hookimpl
    def register_pair_builders(self, register):
        register("adjacent", lambda ctx, trees, opts: [], accepts={"ranked-list"})


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(extra_modules=[loop_plugins, RankedLists()])


def context(registry: Registry, **settings) -> RunContext:
    return RunContext(build_config([settings]), registry, run=None)


@pytest.mark.parametrize("search, pairs", [
    ("puct", "step"), ("puct", "response"), ("best-of-n", "step"), ("best-of-n", "response"),
    ("ranked", "adjacent"),
    ("toy-enumerate", "step"), ("dfsdt", "toy-best-worst"),  # one side declares nothing: accepted as before
])
def test_a_pair_builder_that_reads_the_search_trees_is_accepted(registry, search, pairs):
    assert context(registry, search=search, pairs=pairs).component("pairs")[0].name == pairs


def test_agent_paths_given_to_the_step_builder_are_refused_in_one_line_naming_what_fits(registry):
    with pytest.raises(ItoolError) as refused:
        context(registry, search="dfsdt", pairs="step")
    assert str(refused.value) == (
        "search 'dfsdt' makes 'agent-path' trees, which pair builder 'step' cannot read (it reads samples, "
        "step-values); pair builders for 'dfsdt': toy-best-worst; searches for 'step': best-of-n, puct, toy-enumerate")


@pytest.mark.parametrize("search, pairs, message", [
    ("react", "response", "search 'react' makes 'agent-path' trees, which pair builder 'response' cannot read"),
    ("ranked", "step", "pair builders for 'ranked': adjacent, toy-best-worst;"),
    ("puct", "adjacent", "searches for 'adjacent': ranked, toy-enumerate"),
])
def test_a_third_party_kind_is_checked_like_a_built_in_one(registry, search, pairs, message):
    with pytest.raises(ItoolError, match="cannot read") as refused:
        context(registry, search=search, pairs=pairs)
    assert message in str(refused.value)


def test_a_search_alone_needs_no_pair_builder(registry):
    """With no rounds there is no pairs stage (``itool annotate`` runs only a search)."""
    assert context(registry, search="dfsdt", pairs="step", rounds=0).component("search")[0].name == "dfsdt"
