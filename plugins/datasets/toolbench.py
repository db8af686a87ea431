"""Dataset ``toolbench``: ToolBench queries (``query``, ``api_list``) with their answer path
(``answer_generation.train_messages``, the DFSDT-found conversation), from a local file.

The sample's answer is the first API call of the path (``Finish`` is ToolBench's end-of-search
action, not an API); the whole path is kept in ``meta["answer_path"]``. API names become ToolBench's
function names, ``<api>_for_<tool>`` in lower snake case, as its answer paths call them.

Read as JSON by hand, not through ``datasets``: parameter defaults and function-call payloads mix
strings, numbers and nulls from record to record, which Arrow cannot give one type.
"""

from __future__ import annotations

import re
from typing import Any

from itool import hookimpl
from itool.plugins.datasets._common import FileDataset, FileDatasetOptions, Malformed, json_records, json_value
from itool.schemas import Message, Sample, ToolCall

FINISH = "Finish"


def snake(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return f"get_{name}" if name[:1].isdigit() else name


def function_schema(api: dict[str, Any]) -> dict[str, Any]:
    required = api.get("required_parameters") or []
    params = required + (api.get("optional_parameters") or [])
    return {
        "name": f"{snake(api['api_name'])}_for_{snake(api['tool_name'])}",
        "description": api.get("api_description") or "",
        "parameters": {
            "type": "dict",
            "properties": {p["name"]: {"type": str(p.get("type", "string")).lower(), "description": p.get("description") or ""}
                           for p in params},
            "required": [p["name"] for p in required],
        },
    }


def first_call(path: list[dict[str, Any]]) -> ToolCall:
    for message in path:
        call = message.get("function_call")
        if message.get("role") == "assistant" and call:
            if call["name"] == FINISH:
                raise Malformed("answer path makes no api call")
            arguments = json_value(call.get("arguments") or "{}", "function_call.arguments")
            if not isinstance(arguments, dict):
                raise Malformed("bad json in 'function_call.arguments'")
            return ToolCall(name=call["name"], arguments=arguments)
    raise Malformed("answer path makes no api call")


def record_sample(index: int, record: dict[str, Any]) -> Sample:
    if not isinstance(record.get("query"), str) or not record["query"].strip():
        raise Malformed("missing 'query'")
    if not isinstance(record.get("api_list"), list) or not record["api_list"]:
        raise Malformed("missing 'api_list'")
    paths = (record.get("answer_generation") or {}).get("train_messages")
    if not paths:
        raise Malformed("missing answer path")
    path = paths[-1]  # train_messages grows one step per entry; the last is the whole path
    tools = [function_schema(api) for api in record["api_list"]]
    call = first_call(path)
    if call.name not in {t["name"] for t in tools}:
        raise Malformed("answer calls an unknown api")
    query_id = record.get("query_id", index)
    return Sample(id=f"toolbench-{query_id}", category="toolbench", messages=[Message(role="user", content=record["query"])],
                  tools=tools, answer=[call], meta={"answer_path": path, "query_id": query_id})


TOOLBENCH = FileDataset("toolbench", json_records, record_sample)


def load(split: str, opts: FileDatasetOptions) -> list[Sample]:
    """ToolBench queries with their DFSDT answer paths from a local file (--dataset-opt path=FILE)."""
    return TOOLBENCH.load(split, opts)


@hookimpl
def register_datasets(register):
    register("toolbench", load, options=FileDatasetOptions, check=TOOLBENCH.check)
