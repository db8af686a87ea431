"""Curriculum buckets: the paper's regions, and the nearest bucket (median of feature levels) outside them."""

from __future__ import annotations

import pytest

from itool.plugins.datasets.buckets import bucket, features
from itool.schemas import Message, Sample, ToolCall


def make(tools: int, calls: int, desc_chars: int = 0) -> Sample:
    tool_list = [{"name": f"t{i}", "description": "x" * desc_chars} for i in range(tools)]
    return Sample(id="s", messages=[Message(role="user", content="q")], tools=tool_list,
                  answer=[ToolCall(name="t0") for _ in range(calls)])


def test_features_are_tool_count_tool_text_length_and_call_count():
    assert features(make(2, 3, desc_chars=10)) == (2, len('[{"name": "t0", "description": "xxxxxxxxxx"}, '
                                                          '{"name": "t1", "description": "xxxxxxxxxx"}]'), 3)


@pytest.mark.parametrize(
    "tools, calls, desc, expected",
    [
        (1, 1, 100, "easy"),       # inside easy
        (0, 0, 0, "easy"),         # irrelevance with no tools
        (3, 3, 500, "medium"),     # inside medium (calls < 4)
        (2, 0, 100, "medium"),     # medium allows no calls
        (4, 4, 600, "hard"),       # inside hard (text > 2000)
    ],
)
def test_samples_inside_a_region_get_that_bucket(tools, calls, desc, expected):
    assert bucket(make(tools, calls, desc)) == expected


@pytest.mark.parametrize(
    "tools, calls, desc, expected, why",
    [
        (1, 2, 100, "easy", "levels (0, 0, 1): median 0"),
        (1, 1, 1500, "easy", "levels (0, 1, 0): one long tool"),
        (1, 5, 3000, "hard", "levels (0, 2, 2)"),
        (5, 1, 10, "easy", "levels (2, 0, 0): many short tools, one call"),
        (4, 1, 400, "medium", "levels (2, 1, 0)"),
        (4, 2, 600, "hard", "levels (2, 2, 1): hard needs >= 4 calls, but two features are hard"),
        (2, 4, 100, "medium", "levels (1, 0, 2)"),
    ],
)
def test_samples_outside_every_region_go_to_the_nearest(tools, calls, desc, expected, why):
    assert bucket(make(tools, calls, desc)) == expected, why


def test_text_of_exactly_2000_characters_is_neither_medium_nor_hard_text():
    sample = make(1, 0)
    sample.tools[0]["description"] = "x" * (2000 - len('[{"name": "t0", "description": ""}]'))
    assert features(sample)[1] == 2000
    assert bucket(sample) == "easy"  # levels (0, 2, 0)
