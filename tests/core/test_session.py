"""Every command gets its run the same way: config → context → each component's early check → run
directory. A failed check leaves nothing behind, and a resumed run refuses a config edited since."""

from __future__ import annotations

import sys

import pytest
import yaml

import loop_plugins
from itool import hookimpl
from itool.errors import ItoolError
from itool.registry import Registry
from itool.session import new_session, plan_session, resume_session

CHECKED: list[tuple] = []


def check_model(spec, opts, *, device, dtype):
    CHECKED.append(("model", spec, device, dtype))


def check_data(opts):
    CHECKED.append(("dataset",))
    raise ItoolError("checked-data: the data file is missing")


def crashing_check(opts):
    raise ValueError("the check itself broke")


@hookimpl
def register_models(register):
    register("checked", loop_plugins.load_toy, check=check_model)


@hookimpl
def register_datasets(register):
    register("checked", loop_plugins.toy_dataset, check=check_data)
    register("crashing", loop_plugins.toy_dataset, check=crashing_check)


@pytest.fixture
def registry():
    CHECKED.clear()
    return Registry(extra_modules=[loop_plugins, sys.modules[__name__]])


@pytest.fixture
def layers(tmp_path):
    return [loop_plugins.TOY_CONFIG, {"runs_dir": str(tmp_path / "runs"), "name": "r"}]


def test_every_components_check_runs_before_the_run_directory_exists(registry, layers, tmp_path):
    with pytest.raises(ItoolError, match="checked-data: the data file is missing"):
        new_session(registry, [*layers, {"loader": "checked", "dataset": "checked", "device": "cpu", "dtype": "float32"}])
    assert CHECKED == [("model", "smollm2-135m-instruct", "cpu", "float32"), ("dataset",)]
    assert not (tmp_path / "runs").exists()


def test_a_check_that_crashes_is_still_one_line(registry, layers, tmp_path):
    with pytest.raises(ItoolError, match=r"^dataset 'crashing': ValueError: the check itself broke$"):
        new_session(registry, [*layers, {"dataset": "crashing"}])
    assert not (tmp_path / "runs").exists()


def test_planning_writes_nothing_and_names_the_run(registry, tmp_path):
    ctx = plan_session(registry, [loop_plugins.TOY_CONFIG, {"runs_dir": str(tmp_path / "runs")}])
    assert ctx.run is None and ctx.config.name.startswith("run-") and not (tmp_path / "runs").exists()


def test_a_new_run_holds_its_config_and_resumes_with_it(registry, layers, tmp_path):
    run = new_session(registry, [*layers, {"rounds": 2}]).run
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["name"] == "r" and saved["rounds"] == 2
    assert resume_session(registry, run.path).config.rounds == 2


def test_resuming_after_editing_the_config_is_refused_naming_what_changed(registry, layers, tmp_path):
    run = new_session(registry, layers).run
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    saved["rounds"] = 3
    saved["loss"]["options"] = {"scale": 2}
    (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ItoolError, match=r"was edited after the run started \(changed: rounds, loss\.options\.scale\)"):
        resume_session(registry, run.path)
