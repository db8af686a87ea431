"""Search ``react``: the ReAct baseline of ToolLLM: one chain of messages, no backtracking.

It is DFSDT with one child per node (``itool.plugins.searches.agent``): the first give-up, rejected
answer, depth limit or spent budget ends the search, so both run under the same rules and budget.
"""

from __future__ import annotations

from itool import hookimpl
from itool.plugins.searches.agent import AgentSearchOptions, run_agent_search
from itool.schemas import Sample, SearchTree


def react(ctx, samples: list[Sample], opts: AgentSearchOptions) -> list[SearchTree]:
    """ReAct baseline: a single chain of thought + call messages, no backtracking."""
    return run_agent_search(ctx, samples, opts, width=1, name="react")


@hookimpl
def register_searches(register):
    register("react", react, options=AgentSearchOptions, produces="agent-path")
