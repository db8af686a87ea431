"""Real BFCL v4 entries for the evaluator tests, read straight from the installed bfcl-eval data, and
the ground-truth answers rendered as model output (Python literals, or Java/JavaScript source text)."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from itool.plugins.evaluators.bfcl_ast import Parts, language_of
from itool.schemas import ToolCall

AST_CATEGORIES = [
    "simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
]
RELEVANCE_CATEGORIES = ["irrelevance", "live_irrelevance", "live_relevance"]


def data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")  # locates the package without running its __init__
    return Path(spec.submodule_search_locations[0]) / "data"


@cache
def entries(category: str) -> list[dict[str, Any]]:
    """Raw entries of a category, with their accepted answers under ``ground_truth``."""
    rows = [json.loads(line) for line in (data_dir() / f"BFCL_v4_{category}.json").read_text().splitlines()]
    answer_file = data_dir() / "possible_answer" / f"BFCL_v4_{category}.json"
    if answer_file.exists():
        answers = {a["id"]: a["ground_truth"] for a in map(json.loads, answer_file.read_text().splitlines())}
        for row in rows:
            row["ground_truth"] = answers[row["id"]]
    return rows


def parts(entry: dict[str, Any]) -> Parts:
    category = entry["id"].rsplit("_", 1)[0]
    return Parts(category, entry["function"], entry.get("ground_truth", []))


def _java_text(value: Any, schema: dict[str, Any]) -> str:
    declared, item = schema["type"], (schema.get("items") or {}).get("type")
    if isinstance(value, bool):
        return "true" if value else "false"
    if declared == "long" and isinstance(value, int):
        return f"{value}L"
    if declared == "Array" and isinstance(value, list):
        return "new Object[]{" + ", ".join(_java_text(v, {"type": item or "any"}) for v in value) + "}"
    if declared == "ArrayList" and isinstance(value, list):
        return "new ArrayList<>(Arrays.asList(" + ", ".join(
            f'"{v}"' if item == "String" else _java_text(v, {"type": item or "any"}) for v in value) + "))"
    if declared == "HashMap" and isinstance(value, dict):
        puts = " ".join(f'put("{k}", {_java_element(v[0] if isinstance(v, list) else v)});' for k, v in value.items())
        return "new HashMap<String, Object>() {{ " + puts + " }}"
    return str(value)


def _java_element(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else _java_text(value, {"type": "any"})


def _js_text(value: Any, schema: dict[str, Any]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f"'{v}'" if isinstance(v, str) else _js_text(v, {"type": "any"}) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_js_text(v[0] if isinstance(v, list) else v, {'type': 'any'})}"
                               for k, v in value.items()) + "}"
    return str(value)


def _first_dicts(value: Any) -> Any:
    """An accepted dict lists accepted values per key: take the first of each."""
    if isinstance(value, dict):
        return {k: _first_dicts(v[0] if isinstance(v, list) and v else v) for k, v in value.items()}
    if isinstance(value, list):
        return [_first_dicts(v) for v in value]
    return value


def ground_truth_calls(entry: dict[str, Any]) -> list[ToolCall]:
    """The first accepted value of every parameter that must be given, as model output would carry it."""
    category = entry["id"].rsplit("_", 1)[0]
    language = language_of(category)
    docs = {f["name"]: f for f in entry["function"]}
    calls = []
    for answer in entry["ground_truth"]:
        name, accepted = next(iter(answer.items()))
        properties = docs[name]["parameters"]["properties"]
        arguments = {}
        for param, options in accepted.items():
            if not options or options[0] == "":
                continue
            value, schema = options[0], properties.get(param, {"type": "any"})
            if language == "java":
                value = _java_text(value, schema)
            elif language == "javascript":
                value = _js_text(value, schema)
            else:
                value = _first_dicts(value) if schema["type"] in ("dict", "array") else value
            arguments[param] = value
        calls.append(ToolCall(name=name, arguments=arguments))
    return calls
