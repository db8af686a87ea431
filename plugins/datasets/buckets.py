"""Curriculum buckets of the iTool warm-up (easy -> medium -> hard), with the paper's thresholds.

A sample has three features: the number of tools on offer, the length of the tool list as JSON text
(``json.dumps(sample.tools)``) and the number of calls in its answer. The paper's buckets:

- easy:   tools <= 1,     text < 1000, calls <= 1
- medium: 1 < tools < 4,  text < 2000, calls < 4
- hard:   tools >= 4,     text > 2000, calls >= 4

A sample inside one of these regions gets that bucket. Any other sample goes to the *nearest*
bucket, defined as follows: each feature gets a level, 0/1/2 for the easy/medium/hard range of that
feature alone (tools <=1 / 2-3 / >=4; text <1000 / <2000 / >=2000; calls <=1 / 2-3 / >=4), and the
nearest bucket is the one whose level has the smallest total distance |level - feature level| over
the three features, which is the median of the three levels (unique, so there are no ties).
"""

from __future__ import annotations

import json
from statistics import median_low
from typing import Literal

from itool.schemas import Sample

Bucket = Literal["easy", "medium", "hard"]
BUCKETS: tuple[Bucket, ...] = ("easy", "medium", "hard")


def features(sample: Sample) -> tuple[int, int, int]:
    """(number of tools, characters of the tool list as JSON, number of answer calls)."""
    return len(sample.tools), len(json.dumps(sample.tools, ensure_ascii=False)), len(sample.answer)


def level(value: int, medium_from: int, hard_from: int) -> int:
    return 0 if value < medium_from else 1 if value < hard_from else 2


def bucket(sample: Sample) -> Bucket:
    """The curriculum bucket of ``sample`` (see the module docstring for the exact rule)."""
    tools, chars, calls = features(sample)
    if tools <= 1 and chars < 1000 and calls <= 1:
        return "easy"
    if 1 < tools < 4 and chars < 2000 and calls < 4:
        return "medium"
    if tools >= 4 and chars > 2000 and calls >= 4:
        return "hard"
    levels = [level(tools, 2, 4), level(chars, 1000, 2000), level(calls, 2, 4)]
    return BUCKETS[median_low(levels)]
