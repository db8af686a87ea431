"""The bfcl-multiturn environment: real BFCL backends behind the eval-free dispatcher, with state that
snapshot/restore really rolls back, hostile calls refused, and the ground-truth check the searches use."""

from __future__ import annotations

import json

import pytest

from itool.errors import ItoolError
from itool.plugins.environments.bfcl_multiturn import REFUSED
from itool.plugins.evaluators.bfcl_multiturn import ground_truth_steps, entry_of


@pytest.fixture(scope="module")
def entries(registry):
    dataset = registry.get("dataset", "bfcl")
    samples = dataset.obj("all", dataset.parse_options({"categories": ["multi_turn_base"], "split_mode": "all"}))
    return {s.id: s for s in samples}


@pytest.fixture
def env(registry, entries):
    """The file-system entry multi_turn_base_1, built from its own initial config."""
    component = registry.get("environment", "bfcl-multiturn")
    sample = entries["multi_turn_base_1"]
    return component.obj(component.parse_options(component.attrs["options_for"](sample)))


def listing(env) -> str:
    return env.call("[ls(a=True)]")[0]


def test_calls_run_on_the_entrys_own_state(env):
    assert "workspace" in listing(env)
    assert json.loads(env.call("[cd(folder='workspace')]")[0]) == {"current_working_directory": "workspace"}
    assert "log.txt" in listing(env)


def test_backtracking_restores_state(env):
    """A state-changing call in one branch is gone after restoring the branch point's snapshot."""
    before = listing(env)
    branch_point = env.snapshot()
    env.call("[mkdir(dir_name='scratch'), cd(folder='scratch')]")
    assert listing(env) != before
    env.restore(branch_point)
    assert listing(env) == before
    env.call("[mkdir(dir_name='other')]")  # a second branch from the same snapshot
    env.restore(branch_point)
    assert listing(env) == before


@pytest.mark.parametrize("hostile", [
    "[__import__('os').system('echo pwned > pwned.txt')]",
    "[os.system('echo pwned > pwned.txt')]",
    "[cd(folder=open('pwned.txt', 'w').name)]",
    "[_load_scenario({})]",
    "[(lambda: 1)()]",
    "[cd(**{'folder': 'x'})]",
    "[" * 500,
])
def test_hostile_calls_are_refused_without_side_effects(env, hostile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = listing(env)
    results = env.call(hostile)
    assert len(results) == 1
    assert results[0].startswith(REFUSED) or "is not available" in results[0]
    assert not (tmp_path / "pwned.txt").exists()
    assert listing(env) == before


def test_unknown_backend_class_is_one_line_error(registry):
    component = registry.get("environment", "bfcl-multiturn")
    with pytest.raises(ItoolError, match="unknown backend class 'Shell'"):
        component.obj(component.parse_options({"involved_classes": ["Shell"]}))


def test_check_accepts_ground_truth_and_rejects_a_wrong_turn(registry, entries):
    check = registry.get("environment", "bfcl-multiturn").attrs["check"]
    sample = entries["multi_turn_base_1"]
    truth = ground_truth_steps(entry_of(sample))
    assert check(sample, truth).valid
    assert check(sample, truth[:2]).valid  # the turns answered so far
    wrong = [truth[0], [[c.model_copy(update={"arguments": {"folder": "tmp"}}) for c in truth[1][0]]]]
    assert check(sample, wrong).error_type == "multi_turn:instance_state_mismatch"


def test_non_multi_turn_sample_is_refused(registry):
    dataset = registry.get("dataset", "bfcl")
    sample = dataset.obj("all", dataset.parse_options({"categories": ["simple_python"], "split_mode": "all"}))[0]
    with pytest.raises(ItoolError, match="not a BFCL multi-turn entry"):
        registry.get("environment", "bfcl-multiturn").attrs["turns_of"](sample)


def test_calls_are_bounded_by_the_environments_options(registry):
    """A call over ``call_timeout`` or over a size limit is an error result and the episode goes on."""
    import time

    component = registry.get("environment", "bfcl-multiturn")
    env = component.obj(component.parse_options({"involved_classes": ["MathAPI"], "call_timeout": 0.2,
                                                 "max_string_chars": 5}))
    started = time.monotonic()
    assert env.call("[power(base=10, exponent=10000000000)]") == [
        "Error during execution: the call ran longer than 0.2 s and was stopped"]
    assert time.monotonic() - started < 1.0
    assert env.call("[si_unit_conversion(value=1, unit_in='kilometre', unit_out='m')]") == [
        "Error during execution: string argument longer than 5 characters"]
    assert env.call("[add(a=1, b=2)]") == ['{"result": 3}']
