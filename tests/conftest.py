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


@pytest.fixture(scope="session", autouse=True)
def no_evaluation_cache():
    """Every test evaluates for itself (tests/core/test_cache.py turns the cache back on in a folder of
    its own): a Base evaluation cached by one test, or by an earlier suite run on the same machine, would
    otherwise skip the stage another test is about. Session-wide, so module-scoped fixtures' runs (set up
    before any function-scoped fixture) are covered too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ITOOL_EVAL_CACHE", "off")
        yield


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


def load_default_model(registry, dtype: str):
    loader = registry.get("model", "transformers")
    return loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype=dtype)


@pytest.fixture(scope="session")
def shared_policy(registry):
    """The default model (SmolLM2-135M-Instruct), loaded once, in the dtype ``auto`` picks (set
    ``ITOOL_AUTO_DTYPE`` to run the suite in bfloat16 or float32). Never train it: use ``fresh_policy``."""
    return load_default_model(registry, "auto")


@pytest.fixture(scope="session")
def shared_policy_fp32(registry, shared_policy):
    """The default model in float32 whatever ``auto`` picks, for tests that compare numbers at float32
    tolerance or exercise the float32-only CPU kernels. It is ``shared_policy`` itself where that is float32."""
    import torch

    return shared_policy if shared_policy.dtype == torch.float32 else load_default_model(registry, "float32")


@pytest.fixture(scope="session")
def policy_per_dtype(shared_policy, shared_policy_fp32):
    """``{dtype: policy}``: the default model in float32, and in bfloat16 too where ``auto`` picks it, for
    tests that check each dtype with its own tolerance."""
    return {policy.dtype: policy for policy in (shared_policy_fp32, shared_policy)}


@pytest.fixture
def fresh_policy(registry):
    """A private copy of the default model (dtype ``auto``) for tests that train or merge adapters."""
    return load_default_model(registry, "auto")


@pytest.fixture
def fresh_policy_fp32(registry):
    """A private float32 copy of the default model, for training tests that compare at float32 tolerance."""
    return load_default_model(registry, "float32")


# Test-only plugins (tests/loop_plugins.py) import as `loop_plugins`.
sys.path.insert(0, str(Path(__file__).parent))
