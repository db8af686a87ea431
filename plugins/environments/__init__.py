"""Executable tool environments (kind ``environment``): tools that searches can really call.

An environment registers ``factory(opts) -> ToolEnvironment`` (see ``itool.components``). To be driven
by the agent searches it also passes these registration attributes:

- ``options_for(sample) -> dict``: per-sample options (e.g. the entry's initial state), merged over
  the user's options;
- ``turns_of(sample) -> list[list[Message]]``: the user messages of each turn;
- ``tools_at(sample, turn) -> list[dict]`` (optional; default ``sample.tools``): the functions on offer;
- ``check(sample, steps) -> Check``: judge the calls made so far (``steps[turn][message]`` is a list of
  ToolCall) against the sample's ground truth, turns answered so far only.
"""
