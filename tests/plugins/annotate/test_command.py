"""`itool annotate` input checks, and the `paths` dataset reading annotated paths back as one training
sample per assistant step."""

from __future__ import annotations

from click.testing import CliRunner

from itool.cli import cli, get_registry
from itool.rundir import write_jsonl
from itool.schemas import Message, Sample, ToolCall

PATH = Sample(id="multi_turn_base_1.dfsdt", category="multi_turn_base", tools=[{"name": "ls"}], messages=[
    Message(role="user", content="List everything."),
    Message(role="assistant", tool_calls=[ToolCall(name="ls", arguments={"a": True})]),
    Message(role="tool", name="ls", content='{"current_directory_content": ["workspace"]}'),
    Message(role="assistant", content="There is a workspace folder."),
])


def invoke(*args):
    get_registry().add_commands(cli)
    return CliRunner().invoke(cli, ["annotate", *args])


def test_paths_dataset_yields_one_sample_per_assistant_step(registry, tmp_path):
    file = tmp_path / "paths.jsonl"
    write_jsonl(file, [PATH])
    file.write_text(file.read_text() + "{not json\n" + '{"id": 3}\n')
    dataset = registry.get("dataset", "paths")
    steps = dataset.obj("all", dataset.parse_options({"path": str(file)}))
    assert [s.id for s in steps] == ["multi_turn_base_1.dfsdt.1", "multi_turn_base_1.dfsdt.3"]
    assert steps[0].messages == PATH.messages[:1] and steps[0].answer == [ToolCall(name="ls", arguments={"a": True})]
    assert steps[1].messages == PATH.messages[:3] and steps[1].answer == []
    assert steps[1].meta["final_answer"] == "There is a workspace folder." and steps[1].meta["path"] == PATH.id
    train = dataset.obj("train", dataset.parse_options({"path": str(file), "test_fraction": 0.0}))
    assert len(train) == 2 and dataset.obj("test", dataset.parse_options({"path": str(file), "test_fraction": 0.0})) == []


def test_annotate_refuses_a_search_without_an_environment(tmp_path):
    result = invoke("--search", "puct", "--out", str(tmp_path / "p.jsonl"), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 2 and "does not run tools in an environment" in result.output
    assert not (tmp_path / "run").exists()


def test_annotate_names_an_unknown_environment(tmp_path):
    result = invoke("--env", "shell", "--out", str(tmp_path / "p.jsonl"), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 2 and "unknown environment 'shell'" in result.output
