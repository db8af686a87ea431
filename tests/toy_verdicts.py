"""Verdict lists made by hand, and a BFCL-like weighted summary of them, for the interval tests."""

from __future__ import annotations

from itool.schemas import Verdict


def summary_of(verdicts, opts=None):
    """A weighted aggregate as BFCL's are: the mean of the category accuracies, whatever their sizes."""
    by_category = {}
    for v in verdicts:
        by_category.setdefault(v.category, []).append(v.valid)
    return {"macro": sum(sum(x) / len(x) for x in by_category.values()) / len(by_category)}


def verdict_objects(flags, category, start=0):
    return [Verdict(sample_id=f"s{start + i}", category=category, valid=flag) for i, flag in enumerate(flags)]
