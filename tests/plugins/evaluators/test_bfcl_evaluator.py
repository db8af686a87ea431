"""The ``bfcl`` evaluator and ``itool eval`` on the real default model (a weak model: low scores are
expected; what is tested is that every sample is generated, parsed, judged and summarised)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from itool.plugins.datasets.bfcl import BfclOptions, load
from itool.plugins.evaluators.bfcl_ast import check

CATEGORIES = ["simple_python", "parallel", "irrelevance", "live_relevance", "multi_turn_base"]


def one_per_category():
    """The first sample of each category; for multi-turn the cheapest entry (one turn, one backend)."""
    samples = load("all", BfclOptions(categories=CATEGORIES, split_mode="all"))
    first = {"multi_turn_base": "multi_turn_base_50"}
    return [next(s for s in samples if s.category == c and s.id == first.get(c, s.id)) for c in CATEGORIES]


def test_evaluate_judges_every_sample_of_every_kind(model_ctx):
    ctx = model_ctx(warmup="none", evaluator={"name": "bfcl", "options": {"max_new_tokens": 16, "max_steps_per_turn": 1}})
    evaluator, opts = ctx.component("evaluator")
    samples = one_per_category()
    report = evaluator.obj(ctx, samples, opts)
    assert [v.sample_id for v in report.verdicts] == [s.id for s in samples]
    assert all(v.output for v in report.verdicts)
    for sample, verdict in zip(samples[:-1], report.verdicts):  # single-turn: the verdict is the checker's
        assert verdict.valid == check(sample, ctx.format.parse(verdict.output).calls).valid
        assert verdict.valid or verdict.error_type
    assert set(CATEGORIES) <= set(report.summary)
    assert 0.0 <= report.summary["overall"] <= 1.0


def test_itool_eval_writes_verdicts_table_and_chart(registry, tmp_path):
    from itool.cli import cli

    registry.add_commands(cli)
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--categories", "simple_python,irrelevance", "--limit", "1",
                                      "--out", str(out), "--evaluator-opt", "max_new_tokens=16"])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in (out / "eval" / "verdicts.jsonl").read_text().splitlines()]
    assert sorted(v["category"] for v in verdicts) == ["irrelevance", "simple_python"]
    assert "| irrelevance | 1 |" in (out / "eval" / "summary.md").read_text()
    assert (out / "eval" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "overall" in result.output


def test_itool_eval_reports_bad_input_in_one_line(registry, tmp_path):
    from itool.cli import cli

    registry.add_commands(cli)
    result = CliRunner().invoke(cli, ["eval", "--categories", "simple_klingon", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "simple_klingon" in result.output and "Traceback" not in result.output
