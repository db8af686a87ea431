"""A third-party plugin needs nothing but `pip install`: the example package under docs/examples
offers a loss that `itool plugins` lists and `itool run --loss hinge` uses, with no change to itool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import loop_plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "itool-hinge-loss"
ITOOL = Path(sys.executable).with_name("itool")


@pytest.fixture(scope="module")
def installed_example():
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(EXAMPLE)], check=True)
    yield
    subprocess.run([*pip, "uninstall", "-y", "itool-hinge-loss"], check=True)


def _itool(*args, cwd, extra_env=None):
    env = {**os.environ, "COLUMNS": "200", **(extra_env or {})}
    return subprocess.run([str(ITOOL), *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_itool_plugins_lists_the_installed_loss(installed_example, tmp_path):
    out = _itool("plugins", "loss", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if " hinge " in line)
    assert "itool-hinge-loss" in row and "Hinge on the length-normalised log-prob margin" in row
    options = _itool("plugins", "loss", "hinge", cwd=tmp_path).stdout
    assert "margin" in options and "beta" in options


def test_itool_run_trains_with_the_installed_loss(installed_example, tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**loop_plugins.TOY_CONFIG, "rounds": 1, "loss": "hinge"}))
    env = {"ITOOL_PLUGINS": "loop_plugins", "PYTHONPATH": str(Path(__file__).parent)}
    out = _itool("run", "--config", str(config), "--name", "hinge", "--loss-opt", "margin=2", cwd=tmp_path, extra_env=env)
    assert out.returncode == 0, out.stderr
    state = json.loads((tmp_path / "runs" / "hinge" / "state.json").read_text())
    saved = yaml.safe_load((tmp_path / "runs" / "hinge" / "config.yaml").read_text())
    assert saved["loss"] == {"name": "hinge", "options": {"margin": 2}}
    assert state["results"]["round1.train"]["used_reference"] is False
    assert state["results"]["round1.eval"]["summary"]["Overall"] == 1.0  # the hinge loss taught the toy policy


def test_a_bad_option_of_the_installed_loss_is_one_line(installed_example, tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**loop_plugins.TOY_CONFIG, "loss": "hinge"}))
    env = {"ITOOL_PLUGINS": "loop_plugins", "PYTHONPATH": str(Path(__file__).parent)}
    out = _itool("run", "--config", str(config), "--loss-opt", "beta=-1", cwd=tmp_path, extra_env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == "Error: loss.options.beta: Input should be greater than 0, got -1"
