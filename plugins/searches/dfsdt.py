"""Search ``dfsdt``: ToolLLM's depth-first search-based decision tree over tool-calling messages.

Each node is one model message (a thought and a call, or a Finish) executed in a tool environment;
up to ``width`` children per node, a diversity prompt from the second child on, give-up-and-restart
backs up two levels, the first accepted final answer ends the search. The machinery (shared with the
``react`` baseline) and the exact rules are in ``itool.plugins.searches.agent``.
"""

from __future__ import annotations

from pydantic import Field

from itool import hookimpl
from itool.plugins.searches.agent import AgentSearchOptions, run_agent_search
from itool.schemas import Sample, SearchTree


class DfsdtOptions(AgentSearchOptions):
    width: int = Field(2, ge=1, description="Children tried per node before backing up (ToolBench: 2).")


def dfsdt(ctx, samples: list[Sample], opts: DfsdtOptions) -> list[SearchTree]:
    """ToolLLM's DFSDT: depth-first decision tree over tool calls in an executable environment."""
    return run_agent_search(ctx, samples, opts, width=opts.width, name="dfsdt")


@hookimpl
def register_searches(register):
    register("dfsdt", dfsdt, options=DfsdtOptions, produces="agent-path")
