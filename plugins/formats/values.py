"""What a call format may hand on: parsed argument values that can be printed and written as UTF-8.

JSON and Python literals can both spell values that break later stages: a lone surrogate
(``"\\ud800"``) cannot be encoded when a tree or a pair is written, and an integer of more than 4,300
digits cannot be turned into text (Python's default conversion limit) when it is rendered or logged.
A parser reports such an answer as unparseable instead.
"""

from __future__ import annotations

import re
from typing import Any

MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS
_SURROGATE = re.compile("[\ud800-\udfff]")


def unusable_value(value: Any) -> str | None:
    """Why ``value`` (a parsed argument, name or key, at any depth) cannot be carried on, or None."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return "a string holds a lone surrogate"
        elif isinstance(item, int) and not isinstance(item, bool):
            if abs(item) >= _INT_BOUND:
                return f"an integer has more than {MAX_INT_DIGITS} digits"
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            pending += item
    return None
