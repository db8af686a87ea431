"""Format ``python``: BFCL's prompting style, answers as ``[f(a=1), g(b='x')]``.

Parsing contract (``parse``), decided so that irrelevance and broken output stay distinguishable:

- a call list or bare call(s) made only of literal arguments -> ``calls=[...]``;
- text with no call at all (plain prose, or an empty list ``[]``) -> ``calls=[]``, a no-call answer;
- a call list that is truncated, malformed, too long, too deep or uses anything but literals
  (names, attribute chains, calls, lambdas, comprehensions, f-strings, ``**kwargs``), or values that
  could not be written on (an integer over 4,300 digits, a lone surrogate such as ``'\\ud800'``)
  -> ``calls=None`` with the reason in ``error``.

Model text is only ever handed to ``ast.parse``; nothing is evaluated.

``parse_as_bfcl`` reads text the way BFCL's own prompting decoder does
(``bfcl_eval.model_handler.utils.default_decode_ast_prompting``), for scores comparable with the
leaderboard: the whole answer must be the call list, positional arguments are dropped, a bare name is
the string of its name, a call as a value is its source text (or ``{name: {keyword arguments}}``),
tuples stay tuples, and a unary operator negates its constant. Where BFCL ``eval``s (arithmetic,
lambdas) the answer is unparseable here instead.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import ParseResult
from itool.plugins.formats.rendering import ToolListPrompt
from itool.plugins.formats.values import unusable_value
from itool.schemas import ToolCall

DEFAULT_SYSTEM_PROMPT = (
    "You can call functions to answer the user's request. Decide which of the functions below to call "
    "and with which arguments.\n"
    "Reply with the calls only, written exactly like "
    "[func_name1(param1=value1, param2=value2), func_name2(param=value)] and nothing else.\n"
    "If none of the functions fits the request, or a required argument is missing from it, say so in "
    "plain text and call nothing."
)
NO_CALL_TEXT = "None of the available functions can be used for this request."

POSITIONAL = "#"  # positional argument i is stored under the key "#i"
_CALL_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_BARE_CALL_START = re.compile(r"(?m)^[ \t]*([A-Za-z_][\w.]*)\(")
_NEXT_BARE_CALL = re.compile(r"\s*,\s*([A-Za-z_][\w.]*)\(")
_CHAINED = re.compile(r"\.[A-Za-z_]|[(\[]")  # f(x).g() or f(x)(y): an expression, not a call
_FENCE = re.compile(r"```[\w-]*\n?(.*?)(?:```|$)", re.S)
_OPENERS = {"(": ")", "[": "]", "{": "}"}


class PythonFormatOptions(BaseModel):
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="Instructions placed before the function list.")
    no_call_text: str = Field(NO_CALL_TEXT, description="The answer text of a sample whose answer calls no tool.")
    max_chars: int = Field(20_000, ge=1, description="Longer model output is rejected unparsed.")
    max_depth: int = Field(32, ge=1, description="Deeper bracket nesting is rejected unparsed.")


class UnsupportedValue(ValueError):
    """An argument that is not a plain literal."""


def literal(node: ast.AST) -> Any:
    """The value of a literal node (str/int/float/bool/None, lists, tuples, dicts, negative numbers)."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(item) for item in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        keys = [literal(k) for k in node.keys]
        if all(isinstance(k, (str, int, float, bool)) or k is None for k in keys):
            return dict(zip(keys, (literal(v) for v in node.values)))
    raise UnsupportedValue(f"argument value {type(node).__name__} is not a literal")


def dotted_name(node: ast.AST) -> str:
    """``math.factorial`` for an attribute chain over a plain name; anything else is rejected."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    raise UnsupportedValue("function name must be a dotted name")


def to_call(node: ast.AST) -> ToolCall:
    if not isinstance(node, ast.Call):
        raise UnsupportedValue(f"list element {type(node).__name__} is not a function call")
    arguments: dict[str, Any] = {f"{POSITIONAL}{i}": literal(arg) for i, arg in enumerate(node.args)}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise UnsupportedValue("**kwargs is not allowed")
        arguments[keyword.arg] = literal(keyword.value)
    return ToolCall(name=dotted_name(node.func), arguments=arguments)


# -- BFCL's prompting decoder, without eval ----------------------------------------------------------
def bfcl_value(node: ast.AST) -> Any:
    """A value as ``resolve_ast_by_type`` makes it (BFCL's quirks kept; its ``eval`` cases refused)."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):  # BFCL negates whatever the operator: +1 -> -1, not True -> -1
        if isinstance(node.operand, ast.Constant):
            try:
                return -node.operand.value
            except TypeError:
                pass
        raise UnsupportedValue("a unary operator on something other than a number")
    if isinstance(node, ast.List):
        return [bfcl_value(item) for item in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(bfcl_value(item) for item in node.elts)
    if isinstance(node, ast.Dict):
        if None in node.keys:
            raise UnsupportedValue("** inside a dict")
        try:
            return {bfcl_value(k): bfcl_value(v) for k, v in zip(node.keys, node.values)}
        except TypeError:
            raise UnsupportedValue("an unhashable dict key") from None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return bfcl_call(node) if node.keywords else ast.unparse(node)
    if isinstance(node, ast.Subscript):
        return f"{ast.unparse(node.value)}[{ast.unparse(node.slice)}]"
    raise UnsupportedValue(f"argument value {type(node).__name__} is not decoded (BFCL would eval or reject it)")


def bfcl_name(func: ast.AST) -> str:
    """``resolve_ast_call``'s name: the attribute chain, joined with dots, down to a plain name."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def bfcl_call(node: ast.Call) -> dict[str, dict[str, Any]]:
    """``{name: {keyword: value}}``; positional arguments are dropped, ``**x`` is kept under ``"**"``."""
    return {bfcl_name(node.func): {keyword.arg or "**": bfcl_value(keyword.value) for keyword in node.keywords}}


def bfcl_decode(text: str) -> list[ToolCall]:
    """``default_decode_ast_prompting(text)`` as calls; raises where it raises."""
    text = text.strip("`\n ")
    text = text if text.startswith("[") else "[" + text
    text = text if text.endswith("]") else text + "]"
    body = ast.parse(text.strip().strip("'"), mode="eval").body
    nodes = [body] if isinstance(body, ast.Call) else getattr(body, "elts", None)
    if nodes is None:
        raise UnsupportedValue("not a list of calls")
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            raise UnsupportedValue(f"list element {type(node).__name__} is not a function call")
        (name, arguments), = bfcl_call(node).items()
        calls.append(ToolCall(name=name, arguments=arguments))
    return calls


def matching_end(text: str, start: int, max_depth: int) -> int:
    """Index just past the bracket that closes ``text[start]``, skipping quoted strings.

    Returns -1 when the text ends first (truncated output); raises UnsupportedValue when nesting
    exceeds ``max_depth`` (checked before ``ast`` sees it, so deep input cannot exhaust the parser)."""
    stack: list[str] = []
    quote: str | None = None
    i = start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif char in "'\"":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote) - 1
        elif char in _OPENERS:
            stack.append(_OPENERS[char])
            if len(stack) > max_depth:
                raise UnsupportedValue(f"nesting deeper than {max_depth}")
        elif char in ")]}":
            if not stack or stack.pop() != char:
                raise UnsupportedValue(f"unbalanced {char!r}")
            if not stack:
                return i + 1
        i += 1
    return -1


class PythonCallFormat(ToolListPrompt):
    """Renders BFCL-style prompts and parses ``[f(a=1)]`` answers with ``ast``."""

    def __init__(self, opts: PythonFormatOptions):
        self.opts = opts

    # -- prompting --------------------------------------------------------------------------------
    def render_answer(self, calls: list[ToolCall]) -> str:
        if not calls:
            return self.opts.no_call_text
        return "[" + ", ".join(self.render_call(call) for call in calls) + "]"

    @staticmethod
    def render_call(call: ToolCall) -> str:
        args = [
            repr(value) if key.startswith(POSITIONAL) and key[1:].isdigit() else f"{key}={value!r}"
            for key, value in call.arguments.items()
        ]
        return f"{call.name}({', '.join(args)})"

    # -- parsing ------------------------------------------------------------------------------------
    def parse(self, text: str) -> ParseResult:
        return self._guarded(self._parse, text)

    def parse_as_bfcl(self, text: str) -> ParseResult:
        """How BFCL's prompting decoder reads ``text`` (see the module docstring); the ``bfcl``
        evaluator uses it under ``scoring=bfcl``."""
        return self._guarded(lambda t: ParseResult(bfcl_decode(t)), text)

    def _guarded(self, parse: Any, text: str) -> ParseResult:
        """``parse(text)`` with the length limit, failures as reasons, and unusable values refused."""
        if len(text) > self.opts.max_chars:
            return ParseResult(None, f"output longer than {self.opts.max_chars} characters")
        try:
            result = parse(text)
        except UnsupportedValue as exc:
            return ParseResult(None, str(exc))
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            return ParseResult(None, f"not a python call list: {type(exc).__name__}")
        problem = unusable_value([[c.name, c.arguments] for c in result.calls or []])
        return ParseResult(None, f"unusable value: {problem}") if problem else result

    def _parse(self, text: str) -> ParseResult:
        fenced = _FENCE.search(text)
        body = fenced.group(1) if fenced else text
        found = _CALL_LIST_START.search(body)
        if found:
            end = matching_end(body, found.start(), self.opts.max_depth)
            if end < 0:
                return ParseResult(None, "truncated call list")
            return self._calls(body[found.start() : end])
        found = _BARE_CALL_START.search(body)
        if not found:
            return ParseResult([])  # prose or an empty list: the model chose to call nothing
        start = found.start(1)
        position = start
        while True:  # bare calls, possibly several separated by commas: f(a=1), g(b=2)
            end = matching_end(body, body.index("(", position), self.opts.max_depth)
            if end < 0:
                return ParseResult(None, "truncated call")
            if _CHAINED.match(body, end):
                raise UnsupportedValue("calls on a call's result are not allowed")
            following = _NEXT_BARE_CALL.match(body, end)
            if not following:
                break
            position = following.start(1)
        return self._calls(f"[{body[start:end]}]")

    @staticmethod
    def _calls(source: str) -> ParseResult:
        tree = ast.parse(source, mode="eval").body
        if not isinstance(tree, ast.List):
            raise UnsupportedValue("not a list of calls")
        return ParseResult([to_call(node) for node in tree.elts])


def factory(opts: PythonFormatOptions) -> PythonCallFormat:
    """BFCL prompting style: functions as JSON in the system prompt, answers as [f(a=1), g(b='x')]."""
    return PythonCallFormat(opts)


@hookimpl
def register_formats(register):
    register("python", factory, options=PythonFormatOptions)
