"""Dataset ``xlam``: APIGen / xlam-function-calling-60k records (``id``, ``query``, and ``tools`` and
``answers`` as JSON strings), from a local file."""

from __future__ import annotations

from typing import Any

from itool import hookimpl
from itool.plugins.datasets._common import FileDataset, FileDatasetOptions, Malformed, arrow_records, json_value
from itool.schemas import Message, Sample, ToolCall


def record_sample(index: int, record: dict[str, Any]) -> Sample:
    if not isinstance(record.get("query"), str) or not record["query"].strip():
        raise Malformed("missing 'query'")
    tools = json_value(record.get("tools"), "tools")
    answers = json_value(record.get("answers"), "answers")
    if not isinstance(tools, list) or not isinstance(answers, list):
        raise Malformed("'tools' and 'answers' must be lists")
    names = {tool["name"] for tool in tools}
    calls = [ToolCall(name=a["name"], arguments=a.get("arguments") or {}) for a in answers]
    if any(call.name not in names for call in calls):
        raise Malformed("answer calls an unknown tool")
    sample_id = record.get("id")
    return Sample(id=f"xlam-{index if sample_id is None else sample_id}", category="xlam",
                  messages=[Message(role="user", content=record["query"])], tools=tools, answer=calls)


XLAM = FileDataset("xlam", arrow_records, record_sample)  # flat string columns: Arrow types them


def load(split: str, opts: FileDatasetOptions) -> list[Sample]:
    """APIGen xlam function-calling records from a local file (--dataset-opt path=FILE)."""
    return XLAM.load(split, opts)


@hookimpl
def register_datasets(register):
    register("xlam", load, options=FileDatasetOptions, check=XLAM.check)
