"""Backends follow a policy that training changes: the loop calls ``policy_updated`` after every stage that
saved an adapter, and a backend registered with ``follows_policy`` false (a server it does not control) is
refused, before anything is written, for a run that trains, while a run that only evaluates may use it.

Driven through the real CLI with the toy plugins of tests/loop_plugins.py."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

import loop_plugins
from itool import cli as cli_module
from itool import hookimpl
from itool.registry import Registry


class FixedServers:
    """Test-only plugin: backend ``fixed`` that keeps serving its first weights, backend ``following`` that
    follows only while option ``launch`` is set, and a record of every ``policy_updated`` call."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, str]] = []

    @hookimpl
    def register_backends(self, register):
        from pydantic import BaseModel

        class LaunchOptions(BaseModel):
            launch: str | None = None

        register("fixed", lambda policy, opts: None, description="a server it does not control", follows_policy=False)
        register("following", lambda policy, opts: None, options=LaunchOptions,
                 follows_policy=lambda opts: opts.launch is not None)

    @hookimpl
    def policy_updated(self, ctx, adapter_dir):
        assert (adapter_dir / "adapter.json").is_file()  # saved, and the stage marked done, before the call
        assert ctx.run.is_done(ctx.stage)
        self.updates.append((ctx.stage, adapter_dir.relative_to(ctx.run.path).as_posix()))


@pytest.fixture
def servers():
    return FixedServers()


@pytest.fixture
def itool(monkeypatch, tmp_path, servers):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**loop_plugins.TOY_CONFIG, "rounds": 2, "runs_dir": str(tmp_path / "runs")}))
    monkeypatch.setattr(cli_module, "_registry", Registry(extra_modules=[loop_plugins, servers]))
    return lambda *args: CliRunner().invoke(cli_module.cli, ["run", "--config", str(config), *args])


def test_every_stage_that_saves_an_adapter_is_followed_by_policy_updated(itool, servers):
    assert itool("--name", "full", "--rounds", "1").exit_code == 0
    assert servers.updates == [("warmup", "warmup/adapter"), ("round1.train", "round1.train/adapter")]


@pytest.mark.parametrize("args, trains", [([], "a warm-up and 2 round(s)"), (["--warmup", "none"], "2 round(s)"),
                                          (["--rounds", "0"], "a warm-up")])
def test_a_backend_that_cannot_follow_is_refused_for_a_run_that_trains(itool, tmp_path, args, trains):
    result = itool("--name", "refused", "--backend", "fixed", *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: backend 'fixed' cannot follow a policy that training changes, and this run trains ({trains}): "
        "see `itool plugins backend fixed` for how it can follow, or use it without training "
        "(--warmup none --rounds 0, itool eval, itool annotate)")
    assert not (tmp_path / "runs" / "refused").exists()


def test_a_backend_follows_or_not_by_its_options_and_serves_a_run_that_only_evaluates(itool, servers):
    assert itool("--name", "no-launch", "--backend", "following").exit_code == 2
    launched = itool("--name", "launch", "--backend", "following", "--backend-opt", "launch=serve", "--stop-after", "base.eval")
    assert launched.exit_code == 0
    assert itool("--name", "eval-only", "--backend", "fixed", "--warmup", "none", "--rounds", "0").exit_code == 0
