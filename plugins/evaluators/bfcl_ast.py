"""BFCL's AST checker for single-turn categories, re-implemented as pure functions.

``check(sample, calls)`` decides whether parsed calls answer a BFCL entry, following the rules of the
official checker (bfcl_eval/eval_checker/ast_eval/ast_checker.py, BFCL v4) and naming errors the way it
does, so verdicts can be compared one to one:

- ``irrelevance``/``live_irrelevance``: valid iff the output is not a call (unparseable or no call);
  ``live_relevance``: valid iff there is at least one call.
- simple (``simple_*``, ``live_simple``): exactly one call; ``multiple``: exactly as many calls as expected
  (one); ``parallel*``: as many calls as expected, matched in any order. The official checker matches
  greedily (each expected call takes the first model call that fits), which rejects some right answers
  (e.g. parallel_178's ground truth in reverse order, where accepted values overlap); by default we find a
  one-to-one assignment instead, and ``greedy_parallel=True`` reproduces BFCL exactly.
- A call: the function name matches exactly (dots are kept, as for prompting models; with
  ``underscore_to_dot`` the expected dots become underscores, as BFCL does for function-calling APIs
  that forbid dots), required parameters are present, no parameter outside both the schema and the
  accepted answer, an omitted parameter must list ``""`` among its accepted values.
- Values: Python types per the JSON schema (int accepted for float at top level only, bool is not
  int, tuples compared as lists, one level of element-type checks for arrays). A value whose type is
  that of the accepted answers instead (a variable name given as a string) is compared as is. Strings
  compare ignoring case, spaces and ``,./-_*^``; lists and dicts compare element-wise the same way.
- Java and JavaScript: every value must be a string of source text (``"new int[]{1, 2}"``,
  ``"true"``, ``"3.5f"``) that is converted per the declared type the way BFCL's type converters do
  (including their fall-back to the raw string when the text does not parse).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, NamedTuple

from itool.schemas import Sample, ToolCall

IRRELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance")
RELEVANCE_CATEGORIES = ("live_relevance",)


class Check(NamedTuple):
    valid: bool
    error_type: str | None = None
    error: str | None = None


OK = Check(True)


class Parts(NamedTuple):
    """What the checker needs from an entry, for callers that hold no ``Sample``."""

    category: str
    functions: list[dict[str, Any]]
    possible_answer: list[dict[str, dict[str, list[Any]]]]


def parts_of(sample: Sample | Parts) -> Parts:
    if isinstance(sample, Parts):
        return sample
    return Parts(sample.category, sample.tools, sample.meta.get("possible_answer") or [])


def language_of(category: str) -> str:
    if category.endswith("javascript"):
        return "javascript"
    if category.endswith("java"):
        return "java"
    return "python"


def is_relevance_category(category: str) -> bool:
    return category in IRRELEVANCE_CATEGORIES or category in RELEVANCE_CATEGORIES


# -- value normalisation -----------------------------------------------------------------------
_IGNORED = re.compile(r"[ ,./\-_*^]")


def standardize(text: str) -> str:
    """BFCL's string normal form: no spaces or ``,./-_*^``, lower case, ' as "."""
    return _IGNORED.sub("", text).lower().replace("'", '"')


def _std(value: Any) -> Any:
    return standardize(value) if isinstance(value, str) else value


def _std_all(values: Iterable[Any]) -> list[Any]:
    """Standardize the strings among ``values`` (iterating a string yields its characters, as BFCL's
    loops over ``range(len(x))`` do)."""
    return [_std(v) for v in values]


# -- Java / JavaScript source-text conversion --------------------------------------------------
# BFCL's converters turn the model's source text into Python values; text that does not match the
# expected shape stays a string (and then usually fails the type check).
_INT = r"-?\d+"
_JAVA_FLOAT = r"-?\d+(\.\d+)?([eE][+-]?\d+)?"


def _full(pattern: str, text: str) -> bool:
    return re.match(f"^{pattern}$", text) is not None


def _java_literal(text: str) -> Any:
    """A Java literal of unknown type."""
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if _full(_INT + "[lL]", text):
        return int(text[:-1])
    if _full(_JAVA_FLOAT + "[fF]", text):
        return float(text[:-1])
    return _number_or_text(text)


def _number_or_text(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _java_elements(text: str, nested: str | None) -> list[Any]:
    """Elements of an ``Arrays.asList(...)``/``add(...)`` list: strings and chars lose their quotes."""
    if nested in ("char", "String"):
        return text[1:-1]
    return java_value(text, nested) if nested else _java_literal(text)


def java_value(text: str, java_type: str, nested: str | None = None) -> Any:
    if java_type in ("byte", "short", "integer"):
        return int(text) if _full(_INT, text) else text
    if java_type == "long":
        return int(text[:-1]) if _full(_INT + "[lL]", text) else text
    if java_type == "float":
        return float(text[:-1]) if _full(_JAVA_FLOAT + "[fF]", text) else text
    if java_type == "double":
        return float(text) if _full(_JAVA_FLOAT, text) else text
    if java_type == "boolean":
        return text == "true" if text in ("true", "false") else text
    if java_type == "Array":
        found = re.search(r"new\s+\w+\[\]\s*\{(.*?)\}", text)
        if not found:
            return text
        items = [x.strip() for x in found.group(1).split(",") if x.strip()]
        return [java_value(x, nested) if nested else _java_literal(x) for x in items]
    if java_type == "ArrayList":
        as_list = re.search(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)", text)
        if as_list:
            return [_java_elements(x.strip(), nested) for x in as_list.group(1).split(",")]
        adds = re.search(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", text, re.DOTALL)
        if adds:
            return [_java_elements(x.strip(), nested) for x in re.findall(r"add\((.+?)\)", adds.group(1))]
        return [] if re.search(r"new\s+ArrayList<\w*>\(\)", text) else text
    if java_type == "HashMap":
        body = re.search(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", text, re.DOTALL)
        if body:
            puts = re.findall(r"put\(\"(.*?)\",\s*(.*?)\)", body.group(1))
            return {key: _java_literal(value.strip()) for key, value in puts}
        return {} if re.search(r"new\s+HashMap<.*?>\s*\(\)", text) else text
    return text  # String, char, any (BFCL's char pattern never matches: chars stay as written)


def _js_literal(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return _number_or_text(text)


def _js_array(text: str, nested: str | None) -> Any:
    two_d = re.match(
        r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)", text
    )
    if two_d:
        rows = []
        for i, row in enumerate(re.findall(r"\[(.*?)\]", two_d.group(0))):
            row = row.strip()
            row = row[1:] if i == 0 and row.startswith("[") else row
            rows.append([_js_literal(e) for e in row.split(",")])
        return rows
    one_d = re.match(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)", text)
    if not one_d:
        return text
    inner = (one_d.group(1) if one_d.group(1) is not None else one_d.group(2) or "").strip()
    items = [e.strip() for e in inner.split(",")] if inner else []
    return [js_value(e, nested) if nested else _js_literal(e) for e in items]


def _js_dict(text: str) -> Any:
    if text == "{}":
        return {}
    body = re.match(r"\{(.*?)\}", text)
    if not body:
        return text
    out: dict[str, Any] = {}
    for key, value in re.findall(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)", body.group(1)):
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            out[key.strip().strip("'\"")] = _js_array(value, None)
        elif value.startswith("{") and value.endswith("}"):
            out[key.strip().strip("'\"")] = _js_dict(value)
        else:
            out[key.strip().strip("'\"")] = _js_literal(value.strip("'\""))
    return out


def js_value(text: str, js_type: str, nested: str | None = None) -> Any:
    if js_type == "String":
        quoted = any(text.startswith(q) and text.endswith(q) for q in "'\"")
        return text[1:-1] if quoted else text
    if js_type == "integer":
        return int(text) if _full(_INT, text) else text
    if js_type == "float":
        return float(text) if _full(r"-?\d+(\.\d+)?", text) else text
    if js_type == "Bigint":
        return int(text[:-1]) if _full(_INT + "n", text) else text
    if js_type == "Boolean":
        return text == "true" if text in ("true", "false") else text
    if js_type == "array":
        return _js_array(text.strip(), nested)
    if js_type == "dict":
        return _js_dict(text.strip())
    return text  # any


class Language(NamedTuple):
    types: dict[str, type]
    nested_types: tuple[str, ...]  # declared types whose ``items`` type is checked
    convert: Callable[..., Any] | None  # source text -> value; None for Python (values are literals)


LANGUAGES = {
    "python": Language(
        {"string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list,
         "dict": dict, "any": str},
        ("array", "tuple"),
        None,
    ),
    "java": Language(
        {"byte": int, "short": int, "integer": int, "float": float, "double": float, "long": int,
         "boolean": bool, "char": str, "Array": list, "ArrayList": list, "Set": set, "HashMap": dict,
         "Hashtable": dict, "Queue": list, "Stack": list, "String": str, "any": str},
        ("Array", "ArrayList"),
        java_value,
    ),
    "javascript": Language(
        {"String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool, "dict": dict,
         "array": list, "any": str},
        ("array",),
        js_value,
    ),
}


# -- type checks -------------------------------------------------------------------------------
def _answer_type(accepted: Iterable[Any]) -> type | None:
    """The type of the first accepted value that is not the optional marker ``""``."""
    return next((type(a) for a in accepted if a != ""), None)


def _type_check(param: str, value: Any, accepted: Any, declared: str, expected: type,
                nested: type | None) -> tuple[Check, bool]:
    """(result, is_variable). A value of the accepted answers' type instead of the declared type is
    taken as a variable name and compared as is."""
    answer_type = _answer_type(accepted)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if nested is None:
            return OK, is_variable
        for answer in accepted:
            if not isinstance(answer, list) or all(
                _type_check(param, item, answer, nested.__name__, nested, None)[0].valid for item in value
            ):
                return OK, is_variable
        return Check(False, "type_error:nested",
                     f"{param!r}: expected {declared} of {nested.__name__}, got {value!r}"), is_variable
    if answer_type is not None and type(value) is answer_type:
        return OK, True
    return Check(False, "type_error:simple",
                 f"{param!r}: expected type {declared}, got {type(value).__name__} ({value!r})"), is_variable


# -- value checks ------------------------------------------------------------------------------
def _dict_check(value: dict, accepted: Iterable[Any]) -> Check:
    result = Check(False, "dict_checker:unclear", "no accepted dictionary")
    for answer in accepted:
        if answer == "":
            continue
        result = _one_dict_check(value, answer)
        if result.valid:
            return OK
    return result


def _one_dict_check(value: Any, answer: dict) -> Check:
    if not isinstance(value, dict):
        return Check(False, "value_error:dict_value", f"expected a dictionary, got {value!r}")
    for key, item in value.items():
        if key not in answer:
            return Check(False, "value_error:dict_key", f"unexpected dict key {key!r}")
        if _std(item) not in _std_all(answer[key]):
            return Check(False, "value_error:dict_value", f"dict key {key!r}: {item!r} is not accepted")
    for key, options in answer.items():
        if key not in value and "" not in options:
            return Check(False, "value_error:dict_key", f"missing dict key {key!r}")
    return OK


def _list_of_dicts_check(value: list, accepted: Iterable[Any]) -> Check:
    result = Check(False, "list_dict_checker:unclear", "no accepted list of dictionaries")
    for answer in accepted:
        if len(value) != len(answer):
            result = Check(False, "value_error:list_dict_count", "wrong number of dictionaries in the list")
            continue
        checks = (_dict_check(item, [expected]) for item, expected in zip(value, answer))
        result = next((c for c in checks if not c.valid), OK)
        if result.valid:
            return OK
    return result


def _value_check(param: str, value: Any, accepted: list[Any], expected: type, nested: type | None,
                 is_variable: bool) -> Check:
    if not is_variable:
        if expected is dict:
            return _dict_check(value, accepted)
        if expected is list and nested is dict:
            return _list_of_dicts_check(value, accepted)
        if expected is str:
            if standardize(value) in [standardize(a) for a in accepted if isinstance(a, str)]:
                return OK
            return Check(False, "value_error:string", f"{param!r}: {value!r} is not one of {accepted!r}")
        if expected is list:
            if _std_all(value) in [_std_all(a) for a in accepted if isinstance(a, (list, str))]:
                return OK
            return Check(False, "value_error:list/tuple", f"{param!r}: {value!r} is not one of {accepted!r}")
    if value in accepted:
        return OK
    return Check(False, "value_error:others", f"{param!r}: {value!r} is not one of {accepted!r}")


def check_param(param: str, value: Any, accepted: list[Any], schema: dict[str, Any], language: str) -> Check:
    """Type and value check of one argument against its schema and accepted values."""
    lang = LANGUAGES[language]
    declared = schema.get("type", "any")
    if declared not in lang.types:
        return Check(False, "type_error:simple", f"{param!r}: the schema's type {declared!r} is not a {language} type")
    expected = lang.types[declared]
    item_type = (schema.get("items") or {}).get("type")
    nested = lang.types.get(item_type) if declared in lang.nested_types else None
    if lang.convert is not None:
        if not isinstance(value, str):
            short = "js" if language == "javascript" else language
            return Check(False, f"type_error:{short}",
                         f"{param!r}: {language} values are given as source text, got {type(value).__name__}")
        value = lang.convert(value, declared, item_type) if nested is not None else lang.convert(value, declared)
    if declared == "tuple" and isinstance(value, tuple):
        value = list(value)
    if language == "python" and declared == "float" and type(value) is int:
        value = float(value)
    type_result, is_variable = _type_check(param, value, accepted, declared, expected, nested)
    if not type_result.valid:
        return type_result
    return _value_check(param, value, accepted, expected, nested, is_variable)


# -- calls -------------------------------------------------------------------------------------
def expected_name(name: str, underscore_to_dot: bool) -> str:
    return name.replace(".", "_") if underscore_to_dot else name


def check_call(function: dict[str, Any], call: ToolCall, answer: dict[str, dict[str, list[Any]]],
               language: str, underscore_to_dot: bool = False) -> Check:
    """One call against one function doc and its accepted arguments (``{name: {param: [values]}}``)."""
    accepted = next(iter(answer.values()))
    name = expected_name(function["name"], underscore_to_dot)
    if call.name != name:
        return Check(False, "simple_function_checker:wrong_func_name", f"expected {name!r}, got {call.name!r}")
    params = function.get("parameters", {})
    properties = params.get("properties", {})
    for required in params.get("required", []):
        if required not in call.arguments:
            return Check(False, "simple_function_checker:missing_required", f"missing required parameter {required!r}")
    for param, value in call.arguments.items():
        if param not in properties or param not in accepted:
            return Check(False, "simple_function_checker:unexpected_param", f"unexpected parameter {param!r}")
        result = check_param(param, value, accepted[param], properties[param], language)
        if not result.valid:
            return result
    for param, options in accepted.items():
        if param not in call.arguments and "" not in options:
            return Check(False, "simple_function_checker:missing_optional",
                         f"parameter {param!r} is omitted but not optional")
    return OK


def _function_doc(functions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next((f for f in functions if f["name"] == name), {"name": name})


def _greedy(fits: list[list[bool]]) -> bool:
    """BFCL's matching: each expected call in turn takes the first free model call that fits."""
    taken: set[int] = set()
    for row in fits:
        col = next((c for c, ok in enumerate(row) if ok and c not in taken), None)
        if col is None:
            return False
        taken.add(col)
    return True


def _assignment(fits: list[list[bool]]) -> bool:
    """Whether every expected call (row) gets its own model call (column): augmenting paths."""
    owner: dict[int, int] = {}

    def place(row: int, seen: set[int]) -> bool:
        for col, ok in enumerate(fits[row]):
            if ok and col not in seen:
                seen.add(col)
                if col not in owner or place(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return all(place(row, set()) for row in range(len(fits)))


def check(sample: Sample | Parts, calls: list[ToolCall] | None, *, underscore_to_dot: bool = False,
          greedy_parallel: bool = False) -> Check:
    """Is ``calls`` (``None``: the output did not parse as calls) a right answer to this BFCL entry?

    ``greedy_parallel`` reproduces BFCL's first-fit matching of parallel calls exactly."""
    category, functions, answers = parts_of(sample)
    if category in IRRELEVANCE_CATEGORIES:
        if calls:
            return Check(False, "irrelevance_error:decoder_success", "made a call where none was wanted")
        return OK
    if category in RELEVANCE_CATEGORIES:
        if not calls:
            return Check(False, "relevance_error:decoder_failed", "made no call where one was wanted")
        return OK
    if calls is None:
        return Check(False, "ast_decoder:decoder_failed", "the output is not a list of calls")
    language = language_of(category)
    if "parallel" in category:
        if len(calls) != len(answers):
            return Check(False, "parallel_function_checker_no_order:wrong_count",
                         f"expected {len(answers)} calls, got {len(calls)}")
        results = [[check_call(_function_doc(functions, next(iter(a))), c, a, language, underscore_to_dot)
                    for c in calls] for a in answers]
        if (_greedy if greedy_parallel else _assignment)([[r.valid for r in row] for row in results]):
            return OK
        first = next(r for row in results for r in row if not r.valid)
        return Check(False, "parallel_function_checker_no_order:cannot_find_match",
                     f"no one-to-one match of calls to expected calls (e.g. {first.error_type}: {first.error})")
    kind = "multiple_function_checker" if "multiple" in category else "simple_function_checker"
    if len(calls) != 1 or len(answers) != 1:
        return Check(False, f"{kind}:wrong_count", f"expected 1 call, got {len(calls)}")
    answer = answers[0]
    function = _function_doc(functions, next(iter(answer))) if kind.startswith("multiple") else functions[0]
    return check_call(function, calls[0], answer, language, underscore_to_dot)


# -- partial credit ----------------------------------------------------------------------------
def _call_credit(function: dict[str, Any], call: ToolCall, answer: dict[str, dict[str, list[Any]]],
                 language: str, underscore_to_dot: bool) -> float:
    """Name, parameter names and parameter values, a third each; a wrong name earns nothing."""
    if call.name != expected_name(function["name"], underscore_to_dot):
        return 0.0
    accepted = next(iter(answer.values()))
    properties = function.get("parameters", {}).get("properties", {})
    needed = {p for p, options in accepted.items() if "" not in options}
    given = set(call.arguments)
    known = given & set(accepted) & set(properties)
    scope = given | needed
    if not scope:
        return 1.0
    names = len(known) / len(scope)
    values = sum(check_param(p, call.arguments[p], accepted[p], properties[p], language).valid for p in known) / len(scope)
    return (1.0 + names + values) / 3.0


def partial_credit(sample: Sample | Parts, calls: list[ToolCall] | None, *, underscore_to_dot: bool = False) -> float:
    """A score in [0, 1] that is 1.0 exactly when ``check`` accepts, with credit for right function
    names, parameter names and values otherwise (calls paired best-first, one to one)."""
    if check(sample, calls, underscore_to_dot=underscore_to_dot).valid:
        return 1.0
    category, functions, answers = parts_of(sample)
    if is_relevance_category(category) or not calls:
        return 0.0
    if category.startswith("multi_turn"):
        raise ValueError(f"partial credit is defined for single-turn categories, not {category!r}")
    language = language_of(category)
    credits = sorted(
        ((_call_credit(_function_doc(functions, next(iter(a))), c, a, language, underscore_to_dot), i, j)
         for i, a in enumerate(answers) for j, c in enumerate(calls)),
        reverse=True,
    )
    used_answers: set[int] = set()
    used_calls: set[int] = set()
    total = 0.0
    for credit, i, j in credits:
        if i not in used_answers and j not in used_calls:
            used_answers.add(i)
            used_calls.add(j)
            total += credit
    # Never 1.0 for a rejected answer, however close.
    return min(total / max(len(answers), len(calls)), 0.95)
