"""toolace, xlam and toolbench: real record layouts from small fixture files, malformed records
skipped with counted reasons, bad options as one-line errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from itool.errors import ItoolError
from itool.schemas import ToolCall

FIXTURES = Path(__file__).parent / "fixtures"

CASES = {
    "toolace": ("toolace.jsonl", 3, "toolace: skipped 4 records (1 missing 'system', 1 no tool list in 'system', "
                "1 unparseable assistant call, 1 missing 'conversations')"),
    "xlam": ("xlam.jsonl", 2, "xlam: skipped 3 records (1 missing 'query', 1 bad json in 'answers', "
             "1 answer calls an unknown tool)"),
    "toolbench": ("toolbench.json", 1, "toolbench: skipped 4 records (1 missing answer path, "
                  "1 answer path makes no api call, 1 missing 'query', 1 malformed record)"),
}


@pytest.mark.parametrize("name", CASES)
def test_good_records_load_and_malformed_ones_are_counted_in_one_line(load_dataset, caplog, name):
    file, good, summary = CASES[name]
    with caplog.at_level(logging.WARNING, logger="itool.datasets"):
        samples = load_dataset(name, "all", path=str(FIXTURES / file))
    assert len(samples) == good
    assert [r.getMessage() for r in caplog.records] == [summary]


@pytest.mark.parametrize("name", CASES)
def test_splits_partition_the_records_deterministically(load_dataset, name):
    path = str(FIXTURES / CASES[name][0])
    train = load_dataset(name, "train", path=path, test_fraction=0.5)
    test = load_dataset(name, "test", path=path, test_fraction=0.5)
    everything = load_dataset(name, "all", path=path)
    assert sorted(s.id for s in train + test) == sorted(s.id for s in everything)
    assert [s.id for s in load_dataset(name, "train", path=path, test_fraction=0.5)] == [s.id for s in train]
    assert load_dataset(name, "test", path=path, test_fraction=0.0) == []


@pytest.mark.parametrize("name", CASES)
def test_bad_options_are_one_line_errors(load_dataset, tmp_path, name):
    with pytest.raises(ItoolError, match=f"^{name}: set the data file"):
        load_dataset(name)
    with pytest.raises(ItoolError, match="data file not found"):
        load_dataset(name, path=str(tmp_path / "nope.json"))
    with pytest.raises(ItoolError, match="unknown split"):
        load_dataset(name, "validation", path=str(FIXTURES / CASES[name][0]))


def test_toolace_turns_become_samples_with_the_conversation_so_far(load_dataset):
    samples = {s.id: s for s in load_dataset("toolace", path=str(FIXTURES / "toolace.jsonl"))}
    first, second, no_call = samples["toolace-0-1"], samples["toolace-0-5"], samples["toolace-1-1"]
    assert [t["name"] for t in first.tools] == ["get_weather"]
    assert first.answer == [ToolCall(name="get_weather", arguments={"city": "Paris"})]
    assert [m.role for m in second.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert second.messages[1].tool_calls == first.answer
    assert second.answer == [ToolCall(name="get_weather", arguments={"city": "Rome"})]
    assert no_call.answer == [] and no_call.meta["reference_text"] == "Which city do you mean?"
    assert first.meta["conversation"] == second.meta["conversation"]  # so they share a split


def test_xlam_answers_become_calls(load_dataset):
    samples = load_dataset("xlam", path=str(FIXTURES / "xlam.jsonl"))
    parallel = next(s for s in samples if s.id == "xlam-1")
    assert [c.arguments["city"] for c in parallel.answer] == ["Paris", "Rome"]
    assert parallel.messages[0].content == "Weather in Paris and in Rome?"


def test_toolbench_answer_is_the_first_api_call_of_the_path(load_dataset):
    (sample,) = load_dataset("toolbench", path=str(FIXTURES / "toolbench.json"))
    assert sample.answer == [ToolCall(name="current_weather_for_weather_tool", arguments={"city": "Paris", "units": "metric"})]
    weather = sample.tools[0]
    assert weather["parameters"]["required"] == ["city"] and set(weather["parameters"]["properties"]) == {"city", "units"}
    assert sample.meta["answer_path"][-1]["function_call"]["name"] == "Finish"


def test_json_lines_with_undecodable_lines_skip_them(load_dataset, tmp_path, caplog):
    first = json.loads((FIXTURES / "toolbench.json").read_text())[0]
    path = tmp_path / "toolbench.jsonl"
    path.write_text(json.dumps(first) + "\n{not json\n")
    with caplog.at_level(logging.WARNING, logger="itool.datasets"):
        assert len(load_dataset("toolbench", path=str(path))) == 1
    assert "1 bad json" in caplog.text


@pytest.fixture
def check_dataset(registry):
    """``check_dataset("xlam", path=...)``: the dataset's early check, as a run calls it before it starts."""

    def check(name: str, **options):
        component = registry.get("dataset", name)
        return component.attrs["check"](component.parse_options(options))

    return check


@pytest.mark.parametrize("name", CASES)
def test_the_early_check_passes_a_file_with_a_usable_record(check_dataset, name):
    check_dataset(name, path=str(FIXTURES / CASES[name][0]))


@pytest.mark.parametrize("name", CASES)
def test_a_file_of_malformed_records_fails_the_check_and_the_load_with_the_reasons(check_dataset, load_dataset,
                                                                                    tmp_path, name):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": ""}\n{"query": ""}\n')
    for attempt in (check_dataset, load_dataset):
        with pytest.raises(ItoolError, match=rf"^{name}: none of the 2 records in .*bad.jsonl is usable \(2 "):
            attempt(name, path=str(path))

