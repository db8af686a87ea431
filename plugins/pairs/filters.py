"""Filters shared by the pair builders (the official iTool thresholds are the defaults)."""

from __future__ import annotations

from typing import Callable, TypeVar

from pydantic import BaseModel, Field

from itool.schemas import PreferencePair

T = TypeVar("T")


class PairFilterOptions(BaseModel):
    min_gap: float = Field(0.1, ge=0, description="Keep a pair only if chosen value - rejected value >= this.")
    min_chosen: float = Field(-0.5, description="Keep a pair only if the chosen value is >= this (official code: -0.3; with the ast reward -1/3 means the right function with wrong arguments).")
    max_overlap: float = Field(0.95, ge=0, le=1, description="Drop pairs whose two texts share more words than this.")


def word_overlap(a: str, b: str) -> float:
    """Shared distinct words over the smaller text's distinct words (whitespace-split), as the official
    code measures it: 1.0 when one text's words are all in the other."""
    words_a, words_b = set(a.split()), set(b.split())
    if not words_a or not words_b:
        return 1.0 if words_a == words_b else 0.0
    return len(words_a & words_b) / min(len(words_a), len(words_b))


def best_and_worst(items: list[T], value: Callable[[T], float]) -> tuple[T, T]:
    """The highest-valued item and the lowest-valued of the others (the first on ties). Never one item
    twice: when every value ties, max and min of the same list would both pick the first."""
    best = max(items, key=value)
    return best, min((item for item in items if item is not best), key=value)


def keep(chosen_value: float, rejected_value: float, chosen_text: str, rejected_text: str,
         opts: PairFilterOptions) -> bool:
    """A pair passes the filters, and its two texts differ: the same text on both sides prefers
    nothing (its loss has no gradient but rounding noise)."""
    return (chosen_text != rejected_text
            and chosen_value - rejected_value >= opts.min_gap
            and chosen_value >= opts.min_chosen
            and word_overlap(chosen_text, rejected_text) <= opts.max_overlap)


def dedupe(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """Drop pairs whose prompt, chosen and rejected texts all repeat an earlier pair's."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for pair in pairs:
        key = (pair.prompt, pair.chosen, pair.rejected)
        if key not in seen:
            seen.add(key)
            out.append(pair)
    return out
