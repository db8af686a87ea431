"""`itool compare` trains every named loss from the same start on the same pairs and evaluates each on the
same held-out samples. The fast tests drive the real command with the toy world of tests/loop_plugins.py
(real losses, toy policy); the slow one uses the real model, LoRA trainer and BFCL evaluator."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

import loop_plugins
from itool import cli as cli_module
from itool.registry import Registry
from itool.rundir import read_jsonl, write_jsonl


@pytest.fixture
def itool(monkeypatch, tmp_path):
    """``itool compare ...`` in-process with the built-in and the toy plugins; TOY is the toy config."""
    registry = Registry(extra_modules=[loop_plugins])
    monkeypatch.setattr(cli_module, "_registry", registry)
    registry.add_commands(cli_module.cli)  # what `itool` (cli.main) does at start-up
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(loop_plugins.TOY_CONFIG))

    def run(*args: str):
        return CliRunner().invoke(cli_module.cli, [a.replace("TOY", str(config)) for a in args])

    return run


@pytest.fixture
def toy_pairs(tmp_path):
    """Pairs in TRL format, as a search round writes them: the right function against a wrong one."""
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"prompt": f"What is {i}+1?", "chosen": f"[add(a={i}, b=1)]", "rejected": f"[{wrong}(a={i}, b=1)]"}
                       for i in range(4) for wrong in ("sub", "mul")])
    return path


def test_compare_trains_each_loss_from_the_same_start_and_tabulates(itool, toy_pairs, tmp_path):
    # Options of a loss named in the config file apply to that loss (dpo's β=0.1 barely moves the toy).
    config = tmp_path / "dpo-beta.yaml"
    config.write_text(yaml.safe_dump({**loop_plugins.TOY_CONFIG, "loss": {"name": "dpo", "options": {"beta": 1.0}}}))
    out = tmp_path / "cmp"
    result = itool("compare", "--config", str(config), "--losses", "simpo,dpo,toy-logistic", "--pairs", str(toy_pairs),
                   "--seed", "3", "--out", str(out))
    assert result.exit_code == 0, result.output

    data = json.loads((out / "compare.json").read_text())
    assert data["losses"] == ["simpo", "dpo", "toy-logistic"] and data["seed"] == 3 and data["n_pairs"] == 8
    assert list(data["eval"]) == ["start", "simpo", "dpo", "toy-logistic"]
    assert data["eval"]["start"]["Overall"] == 0.0  # the toy policy starts wrong ...
    assert all(data["eval"][loss]["Overall"] == 1.0 for loss in data["losses"])  # ... every loss fixes it
    assert data["train"]["dpo"]["used_reference"] and not data["train"]["simpo"]["used_reference"]
    for column in data["eval"]:  # one run directory each, same config but for the loss
        saved = yaml.safe_load((out / column / "config.yaml").read_text())
        assert (saved["seed"], saved["eval_limit"]) == (3, None)
        assert saved["loss"]["name"] == (column if column != "start" else "dpo")
        assert len(read_jsonl(out / column / "eval" / "verdicts.jsonl")) == 4  # same held-out samples
    assert yaml.safe_load((out / "dpo" / "config.yaml").read_text())["loss"]["options"] == {"beta": 1.0}
    table = (out / "compare.md").read_text()
    assert "| row | start | simpo | dpo | toy-logistic |" in table and "| Overall | 0.00 | 100.00 |" in table
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "Overall" in result.output  # the table is printed too


def test_start_adapter_is_merged_before_every_loss(itool, toy_pairs, tmp_path):
    adapter = tmp_path / "warm"
    adapter.mkdir()
    (adapter / "adapter.json").write_text("[5.0, 0.0, 0.0]")  # the toy policy's adapter: strongly prefer add
    out = tmp_path / "cmp"
    result = itool("compare", "--config", "TOY", "--losses", "simpo", "--pairs", str(toy_pairs),
                   "--adapter", str(adapter), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "compare.json").read_text())["eval"]["start"]["Overall"] == 1.0


def test_start_from_a_run_directory_merges_all_its_adapters(itool, toy_pairs, tmp_path):
    trained = itool("run", "--config", "TOY", "--runs-dir", str(tmp_path / "runs"), "--name", "r", "--no-eval-base")
    assert trained.exit_code == 0, trained.output  # warm-up + round 1: the toy policy now answers right
    out = tmp_path / "cmp"
    result = itool("compare", "--config", "TOY", "--losses", "simpo", "--pairs", str(toy_pairs),
                   "--adapter", str(tmp_path / "runs" / "r"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "compare.json").read_text())["eval"]["start"]["Overall"] == 1.0


@pytest.mark.parametrize("args,message", [
    (["--losses", "simpo,nope"], "unknown loss 'nope'"),
    (["--losses", " , "], "--losses: give at least one loss name"),
    (["--losses", "simpo", "--trainer-opt", "steps=many"], "trainer.options.steps"),
])
def test_bad_input_fails_in_one_line_before_any_training(itool, toy_pairs, tmp_path, args, message):
    out = tmp_path / "cmp"
    result = itool("compare", "--config", "TOY", "--pairs", str(toy_pairs), "--out", str(out), *args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (out / "start").exists()


def test_missing_pairs_file_is_one_clear_error(itool, tmp_path):
    result = itool("compare", "--config", "TOY", "--losses", "simpo", "--pairs", str(tmp_path / "none.jsonl"))
    assert result.exit_code == 2 and "--pairs: file not found" in result.output


@pytest.mark.slow
def test_compare_with_the_real_model_lora_and_bfcl(tmp_path, make_bfcl_pairs, registry):
    """simpo and dpo on 4 real BFCL pairs, evaluated on 4 BFCL simple_python samples (a few minutes)."""
    from itool.cli import cli

    registry.add_commands(cli)
    loader = registry.get("model", "transformers")
    tokenizer = loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="auto").tokenizer
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [p.model_dump(include={"prompt", "chosen", "rejected"}) for p in make_bfcl_pairs(tokenizer, 4)])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": "bfcl", "options": {"categories": ["simple_python"]}},
                                      "trainer": {"name": "lora", "options": {"batch_size": 2, "epochs": 1, "max_length": 64}}}))
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["compare", "--losses", "simpo,dpo", "--pairs", str(pairs), "--config", str(config),
                                      "--eval-limit", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert list(data["eval"]) == ["start", "simpo", "dpo"] and data["n_eval"] == 4
    assert data["train"]["dpo"]["reference"] == "computed" and data["train"]["simpo"]["reference"] == "none"
