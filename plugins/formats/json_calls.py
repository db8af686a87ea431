"""Format ``json``: answers as ``[{"name": "f", "arguments": {"a": 1}}]``, parsed with ``json``.

Same contract as the ``python`` format: a JSON call list (or one call object) -> ``calls``; no JSON
call at all (prose, ``[]``) -> ``calls=[]``; truncated or malformed JSON, or a list whose items are
not ``{"name": str, "arguments": object}``, or values that could not be written on (a number over
4,300 digits, a lone surrogate such as ``"\\ud800"``) -> ``calls=None`` with the reason.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import ParseResult
from itool.plugins.formats.rendering import ToolListPrompt
from itool.plugins.formats.values import unusable_value
from itool.schemas import ToolCall

DEFAULT_SYSTEM_PROMPT = (
    "You can call functions to answer the user's request. Decide which of the functions below to call "
    "and with which arguments.\n"
    'Reply with the calls only, as a JSON list written exactly like [{"name": "func_name1", "arguments": '
    '{"param1": "value1"}}, {"name": "func_name2", "arguments": {"param": 2}}] and nothing else.\n'
    "If none of the functions fits the request, or a required argument is missing from it, say so in "
    "plain text and call nothing."
)
NO_CALL_TEXT = "None of the available functions can be used for this request."

# Where a JSON answer may start: a list of objects, or a single object that names a function.
_JSON_START = re.compile(r'\[\s*\{|\{\s*"name"')
_FENCE = re.compile(r"```[\w-]*\n?(.*?)(?:```|$)", re.S)


class JsonFormatOptions(BaseModel):
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="Instructions placed before the function list.")
    no_call_text: str = Field(NO_CALL_TEXT, description="The answer text of a sample whose answer calls no tool.")
    max_chars: int = Field(20_000, ge=1, description="Longer model output is rejected unparsed.")


class JsonCallFormat(ToolListPrompt):
    """Renders prompts asking for JSON call lists and parses them with ``json``."""

    def __init__(self, opts: JsonFormatOptions):
        self.opts = opts

    def render_answer(self, calls: list[ToolCall]) -> str:
        if not calls:
            return self.opts.no_call_text
        return json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)

    def parse(self, text: str) -> ParseResult:
        if len(text) > self.opts.max_chars:
            return ParseResult(None, f"output longer than {self.opts.max_chars} characters")
        fenced = _FENCE.search(text)
        body = fenced.group(1) if fenced else text
        found = _JSON_START.search(body)
        if not found:
            return ParseResult([])  # prose or an empty list: the model chose to call nothing
        try:
            value, _ = json.JSONDecoder().raw_decode(body, found.start())
        except json.JSONDecodeError as exc:
            truncated = exc.pos >= len(body.rstrip()) or exc.msg.startswith("Unterminated")
            reason = "truncated JSON" if truncated else f"bad JSON: {exc.msg}"
            return ParseResult(None, reason)
        except ValueError as exc:  # a number json cannot convert (over 4,300 digits)
            return ParseResult(None, f"bad JSON number: {str(exc).split(':')[0]}")
        except RecursionError:
            return ParseResult(None, "JSON nested too deeply")
        problem = unusable_value(value)
        if problem:
            return ParseResult(None, f"unusable value: {problem}")
        items = value if isinstance(value, list) else [value]
        calls = []
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("arguments", {}), dict)):
                return ParseResult(None, 'each call must be {"name": str, "arguments": object}')
            calls.append(ToolCall(name=item["name"], arguments=item.get("arguments", {})))
        return ParseResult(calls)


def factory(opts: JsonFormatOptions) -> JsonCallFormat:
    """Functions as JSON in the system prompt, answers as a JSON list of {"name", "arguments"} objects."""
    return JsonCallFormat(opts)


@hookimpl
def register_formats(register):
    register("json", factory, options=JsonFormatOptions)
