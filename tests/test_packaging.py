"""itool installs as a wheel: every built-in plugin module and data file is inside it, and the console
script in a fresh virtual environment finds all built-ins through their entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return next(out.glob("itool-*.whl"))


def test_the_wheel_holds_every_plugin_module_and_the_presets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = [ep.value for ep in entry_points(group="itool") if ep.dist and ep.dist.name == "itool"]
    assert modules
    for module in modules:
        assert module.replace(".", "/") + ".py" in names, module
    assert "itool/presets/smoke.yaml" in names
    assert not any(n.startswith(("core/", "plugins/", "registry/", "tests/")) for n in names)


def test_the_wheel_works_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True)
    # The heavy dependencies (torch, transformers, ...) come from this environment through a .pth line;
    # itool itself comes only from the wheel: a path line does not run this environment's editable hook.
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    Path(fresh_site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ITOOL_PLUGINS", "PYTHONPATH")}
    where = subprocess.run([str(python), "-c", "import itool, itool.plugins; print(itool.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert where.startswith(str(venv))
    listing = subprocess.run([str(venv / "bin" / "itool"), "plugins"], capture_output=True, text=True,
                             cwd=tmp_path, env={**env, "COLUMNS": "200"})
    assert listing.returncode == 0, listing.stderr
    assert "failed to load" not in listing.stdout
    for name in ("puct", "simpo", "bfcl", "curriculum", "perplexity", "transformers"):
        assert f" {name} " in listing.stdout


@pytest.mark.slow
def test_the_wheel_installs_with_its_dependencies_into_an_empty_venv(wheel, tmp_path):
    """The full install a user does, dependencies resolved by pip from scratch (minutes)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, str(wheel)], check=True)
    out = subprocess.run([str(venv / "bin" / "itool"), "plugins", "loss", "simpo"], capture_output=True, text=True)
    assert out.returncode == 0 and "beta" in out.stdout
    assert json.loads(subprocess.run([str(venv / "bin" / "python"), "-c",
                                      "import json, itool; print(json.dumps(itool.__version__))"],
                                     capture_output=True, text=True, check=True).stdout) == "0.1.0"
