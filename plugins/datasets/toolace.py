"""Dataset ``toolace``: ToolACE records (``system`` with the tool list as JSON, ``conversations`` of
``from``/``value`` turns, assistant calls written as ``[f(a=1)]``), from a local file.

Each assistant turn that makes calls becomes one sample (the conversation before it as messages);
a first assistant turn that calls nothing (asking for a missing argument, declining) becomes a
no-call sample. Turns of one conversation share a split.
"""

from __future__ import annotations

import json
from typing import Any

from itool import hookimpl
from itool.plugins.datasets._common import FileDataset, FileDatasetOptions, Malformed, arrow_records
from itool.plugins.formats.python_calls import PythonCallFormat, PythonFormatOptions
from itool.schemas import Message, Sample

TOOL_LIST_MARKER = "Here is a list of functions in JSON format that you can invoke"
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "tool": "tool", "function": "tool", "observation": "tool"}


def tool_list(system: Any) -> list[dict[str, Any]]:
    """The JSON tool list embedded in ToolACE's system prompt."""
    if not isinstance(system, str):
        raise Malformed("missing 'system'")
    start = system.find("[", max(system.find(TOOL_LIST_MARKER), 0))
    try:
        tools, _ = json.JSONDecoder().raw_decode(system, start) if start >= 0 else (None, 0)
    except json.JSONDecodeError:
        tools = None
    if not isinstance(tools, list) or not all(isinstance(t, dict) and "name" in t for t in tools):
        raise Malformed("no tool list in 'system'")
    return tools


def conversation_samples(index: int, record: dict[str, Any], parser: PythonCallFormat) -> list[Sample]:
    tools = tool_list(record.get("system"))
    turns = record.get("conversations")
    if not turns:
        raise Malformed("missing 'conversations'")
    history: list[Message] = []
    samples: list[Sample] = []
    for number, turn in enumerate(turns):
        role = ROLES.get(turn["from"])
        if role is None:
            raise Malformed(f"unknown role {turn['from']!r}"[:40])
        if role != "assistant":
            history.append(Message(role=role, content=turn["value"]))
            continue
        parsed = parser.parse(turn["value"])
        if parsed.calls is None:
            raise Malformed("unparseable assistant call")
        first_answer = not any(m.role in ("assistant", "tool") for m in history)
        if parsed.calls or first_answer:
            samples.append(Sample(
                id=f"toolace-{index}-{number}", category="toolace", messages=list(history), tools=tools,
                answer=parsed.calls, meta={"conversation": f"toolace-{index}", "reference_text": turn["value"]},
            ))
        history.append(Message(role="assistant", content=turn["value"], tool_calls=parsed.calls or None))
    return samples


PARSER = PythonCallFormat(PythonFormatOptions())
TOOLACE = FileDataset("toolace", arrow_records,  # one Arrow type fits every record
                      lambda index, record: conversation_samples(index, record, PARSER))


def load(split: str, opts: FileDatasetOptions) -> list[Sample]:
    """ToolACE conversations from a local file (--dataset-opt path=data.json)."""
    return TOOLACE.load(split, opts)


@hookimpl
def register_datasets(register):
    register("toolace", load, options=FileDatasetOptions, check=TOOLACE.check)
