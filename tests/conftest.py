"""Shared fixtures. Slow experiments are opt-in: ``pytest --run-slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from itool.config import build_config
from itool.context import RunContext
from itool.registry import Registry
from itool.rundir import RunDir


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow experiment: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Every installed plugin, loaded once."""
    return Registry()


@pytest.fixture
def make_ctx(registry, tmp_path):
    """Build a RunContext over a fresh run directory: ``make_ctx(loss="dpo", train_limit=8)``."""

    def make(**settings) -> RunContext:
        config = build_config([{"runs_dir": str(tmp_path / "runs"), "name": "test", **settings}])
        ctx = RunContext(config, registry, run=None)
        ctx.run = RunDir.create(config.runs_dir, config.name)
        return ctx

    return make


@pytest.fixture(scope="session")
def shared_policy(registry):
    """The default model (SmolLM2-135M-Instruct), loaded once. Never train it: use ``fresh_policy``."""
    loader = registry.get("model", "transformers")
    return loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="auto")


@pytest.fixture
def fresh_policy(registry):
    """A private copy of the default model for tests that train or merge adapters."""
    loader = registry.get("model", "transformers")
    return loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="auto")


# Test-only plugins (tests/loop_plugins.py) import as `loop_plugins`.
sys.path.insert(0, str(Path(__file__).parent))
