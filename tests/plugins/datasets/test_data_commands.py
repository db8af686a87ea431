"""``itool data stats``: split sizes, train buckets and skipped records, through the real CLI."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from itool.cli import cli, get_registry

FIXTURES = Path(__file__).parent / "fixtures"


def invoke(*args):
    get_registry().add_commands(cli)
    return CliRunner().invoke(cli, list(args))


def test_stats_of_a_file_dataset_counts_splits_buckets_and_skips():
    result = invoke("data", "stats", "xlam", "--dataset-opt", f"path={FIXTURES / 'xlam.jsonl'}",
                    "--dataset-opt", "test_fraction=0")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ xlam"))
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["xlam", "2", "0", "0", "2", "0"]
    assert "skipped records: 3 (1 missing 'query', 1 bad json in 'answers', 1 answer calls an unknown tool)" in result.output


def test_stats_of_bfcl_lists_every_category_with_a_total():
    result = invoke("data", "stats", "bfcl", "--dataset-opt", "categories=[simple_python, irrelevance]")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.output.splitlines() if line.startswith("│")}
    assert set(rows) >= {"simple_python", "irrelevance", "total"}
    assert int(rows["simple_python"][0]) + int(rows["simple_python"][1]) == 400
    assert int(rows["total"][0]) == sum(int(x) for x in rows["total"][2:])  # every train sample has a bucket


def test_bad_input_is_one_line_exit_2():
    result = invoke("data", "stats", "xlam")
    assert result.exit_code == 2 and "xlam: set the data file" in result.output
    result = invoke("data", "stats", "bfcl", "--dataset-opt", "categories=[nope]")
    assert result.exit_code == 2 and "unknown BFCL category 'nope'" in result.output
