"""Agreement with the official BFCL checker (opt-in: ``pytest --run-slow``; installs bfcl-eval with all
of its dependencies into a throw-away venv, which takes minutes. Set ``ITOOL_BFCL_OFFICIAL_VENV`` to a
venv that already has them to skip the install).

For every entry of every AST category we build the ground-truth answer and deliberate mistakes (wrong
name, missing/extra parameter, wrong value, wrong type, extra call, no call, reordered parallel calls)
and ask both checkers; ours runs with ``greedy_parallel=True`` (BFCL's first-fit matching), and the
default one-to-one matching is shown to differ only by accepting more parallel answers. Python categories are compared twice: on the decoded calls, and end to end from
answer text (official decoder vs our ``python`` format). Relevance categories are compared on texts.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest

from bfcl_entries import AST_CATEGORIES, RELEVANCE_CATEGORIES, entries, ground_truth_calls, parts
from itool.plugins.evaluators.bfcl_ast import check, language_of
from itool.schemas import ToolCall

pytestmark = pytest.mark.slow

OFFICIAL = r"""
import json, sys
from bfcl_eval.constants.enums import Language, ReturnFormat
from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING
from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
from bfcl_eval.model_handler.utils import default_decode_ast_prompting
from bfcl_eval.utils import is_empty_output, is_function_calling_format_output

# A prompting model whose names keep their dots, as ours do.
MODEL = next(k for k, v in MODEL_CONFIG_MAPPING.items() if not v.is_fc_model and not v.underscore_to_dot and "_" not in k)
LANG = {"python": Language.PYTHON, "java": Language.JAVA, "javascript": Language.JAVASCRIPT}

def judge(case):
    if case["kind"] == "relevance":
        try:
            decoded = default_decode_ast_prompting(case["text"], ReturnFormat.PYTHON)
            has_call = not is_empty_output(decoded)
        except Exception:
            has_call = False
        return has_call != ("irrelevance" in case["category"]), None
    decoded = case.get("decoded")
    if case["kind"] == "ast_text":
        try:
            decoded = default_decode_ast_prompting(case["text"], ReturnFormat.PYTHON)
        except Exception:
            return False, "ast_decoder:decoder_failed"
        if not is_function_calling_format_output(decoded):
            return False, "ast_decoder:decoder_wrong_output_format"
    try:
        r = ast_checker(case["functions"], decoded, case["possible_answer"], LANG[case["language"]], case["category"], MODEL)
    except Exception as exc:
        return False, f"crash:{type(exc).__name__}"
    return r["valid"], r.get("error_type")

for line in sys.stdin:
    valid, error_type = judge(json.loads(line))
    print(json.dumps({"valid": valid, "error_type": error_type}))
"""


def official_python() -> Path:
    given = os.environ.get("ITOOL_BFCL_OFFICIAL_VENV")
    root = Path(given) if given else Path(os.environ.get("TMPDIR", "/tmp")) / "itool-bfcl-official"
    python = root / "bin" / "python"
    if not given and not python.exists():
        venv.create(root, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "bfcl-eval==2026.3.23", "soundfile"], check=True)
    return python


# -- cases -------------------------------------------------------------------------------------
def _wrong_value(value: Any, language: str) -> Any:
    if language != "python":
        return value + "_other" if isinstance(value, str) else value
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7
    if isinstance(value, str):
        return value + " elsewhere"
    if isinstance(value, list):
        return value + value[:1] if value else ["extra"]
    if isinstance(value, dict):
        return {**value, "extra_key": 1}
    return "other"


def _wrong_type(value: Any, language: str) -> Any:
    if language != "python":
        return 12345
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return 12345
    return "not a " + type(value).__name__


def variants(calls: list[ToolCall], required: list[str], category: str) -> dict[str, list[ToolCall]]:
    language = language_of(category)
    first = calls[0]
    out = {"correct": calls, "no_call": [], "extra_call": [*calls, calls[0]],
           "wrong_name": [first.model_copy(update={"name": first.name + "_v2"}), *calls[1:]],
           "extra_param": [first.model_copy(update={"arguments": {**first.arguments, "zz_unknown": 1}}), *calls[1:]]}
    present = [p for p in required if p in first.arguments]
    if present:
        args = {k: v for k, v in first.arguments.items() if k != present[0]}
        out["missing_param"] = [first.model_copy(update={"arguments": args}), *calls[1:]]
    if first.arguments:
        key = next(iter(first.arguments))
        for kind, change in (("wrong_value", _wrong_value), ("wrong_type", _wrong_type)):
            args = {**first.arguments, key: change(first.arguments[key], language)}
            out[kind] = [first.model_copy(update={"arguments": args}), *calls[1:]]
    if "parallel" in category and len(calls) > 1:
        out["reordered"] = list(reversed(calls))
    return out


def build_cases(format_) -> tuple[list[dict], list[bool], list[bool]]:
    """The cases, our verdicts with BFCL's greedy parallel matching, and with our default assignment."""
    cases, ours, assignment = [], [], []
    for category in AST_CATEGORIES:
        language = language_of(category)
        for entry in entries(category):
            docs = {f["name"]: f for f in entry["function"]}
            gt = ground_truth_calls(entry)
            required = docs.get(gt[0].name, {}).get("parameters", {}).get("required", [])
            for calls in variants(gt, required, category).values():
                decoded = [{c.name: c.arguments} for c in calls]
                base = {"category": category, "language": language, "functions": entry["function"],
                        "possible_answer": entry["ground_truth"]}
                cases.append({**base, "kind": "ast", "decoded": decoded})
                ours.append(check(parts(entry), calls, greedy_parallel=True).valid)
                assignment.append(check(parts(entry), calls).valid)
                if language == "python":
                    text = format_.render_answer(calls) if calls else "[]"
                    cases.append({**base, "kind": "ast_text", "text": text})
                    parsed = format_.parse(text).calls
                    ours.append(check(parts(entry), parsed, greedy_parallel=True).valid)
                    assignment.append(check(parts(entry), parsed).valid)
    for category in RELEVANCE_CATEGORIES:
        for entry in entries(category):
            name = entry["function"][0]["name"] if entry["function"] else "lookup"
            for text in ["I cannot answer that with these functions.", f"[{name}(x=1)]", "[]",
                         f"[{name}(x=", f"{name}()"]:
                cases.append({"kind": "relevance", "category": category, "text": text})
                ours.append(check(parts(entry), format_.parse(text).calls).valid)
                assignment.append(ours[-1])
    return cases, ours, assignment


def test_agreement_with_the_official_checker(registry, tmp_path):
    format_factory = registry.get("format", "python")
    format_ = format_factory.obj(format_factory.parse_options({}))
    cases, ours, assignment = build_cases(format_)
    python = official_python()
    proc = subprocess.run([str(python), "-c", OFFICIAL], input="".join(json.dumps(c) + "\n" for c in cases),
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    official = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(official) == len(cases)
    disagreements = [(c.get("category"), c["kind"], c.get("decoded") or c.get("text"), o, mine)
                     for c, o, mine in zip(cases, official, ours) if o["valid"] != mine]
    rate = 1 - len(disagreements) / len(cases)
    print(f"\nagreement with the official BFCL checker: {rate:.4%} of {len(cases)} cases "
          f"({sum(ours)} accepted by us, {sum(o['valid'] for o in official)} by BFCL)")
    for row in disagreements[:20]:
        print("  disagree:", json.dumps(row, default=str)[:400])
    # The default one-to-one assignment only ever accepts more, and only parallel answers.
    extra = [c for c, o, a in zip(cases, official, assignment) if a != o["valid"]]
    print(f"default (one-to-one parallel matching): {len(extra)} more accepted than BFCL, in "
          f"{sorted({c['category'] for c in extra})}")
    assert not disagreements
    assert all("parallel" in c["category"] for c in extra)
    assert sum(assignment) == sum(ours) + len(extra)
