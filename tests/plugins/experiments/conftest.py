"""Fixtures of the experiment tests: the ``itool`` command with the toy plugins of tests/loop_plugins.py."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

import loop_plugins
from itool import cli as cli_module
from itool.registry import Registry


@pytest.fixture
def itool(monkeypatch):
    registry = Registry(extra_modules=[loop_plugins])
    monkeypatch.setattr(cli_module, "_registry", registry)
    registry.add_commands(cli_module.cli)  # what `itool` (cli.main) does at start-up
    return lambda *args: CliRunner().invoke(cli_module.cli, list(args))


@pytest.fixture
def write_experiment(tmp_path):
    """Writes an experiment config to tmp_path and returns its path."""
    def write(config: dict) -> str:
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    return write
