"""Installing the package is the whole opt-in: pip puts its entry point where itool looks, and the model
the loader loads then runs the kernels, with no change to itool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "packages" / "itool-cpu-kernels"
PROBE = """
from itool.cli import get_registry
loader = get_registry().get("model", "transformers")
model = loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="float32").model
print(model.config._attn_implementation, type(model.lm_head).__name__)
"""


def test_a_pip_installed_package_switches_loaded_models_to_the_kernels(tmp_path):
    # Built from a copy: setuptools writes its egg-info into the tree it builds, and one left in the
    # package's source (on sys.path for these tests) would make every later registry load the kernels.
    source, target = tmp_path / "source", tmp_path / "site"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "ITOOL_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["itool_grouped_sdpa", "SmallBatchLinear"]
