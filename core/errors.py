"""The one exception type users see: its message is a single line, printed without a traceback."""

from __future__ import annotations

from pydantic import ValidationError


class ItoolError(Exception):
    """A problem with the user's input or environment, explained in one line (CLI exit code 2)."""


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line naming the first bad field (``prefix.field``), the problem and the value given."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    where = ".".join(p for p in (prefix, loc) if p) or "config"
    value = err.get("input")
    # A validator of ours (type value_error) names the bad value in its own words, without pydantic's prefix.
    own_words = err["type"] == "value_error"
    shown = f", got {value!r}" if not own_words and value is not None and not isinstance(value, dict) else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg'].removeprefix('Value error, ')}{shown}{more}"
