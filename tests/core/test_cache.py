"""A Base evaluation is made once per machine: a later run that loads the same model in the same
precision and asks the same questions in the same way takes the verdicts from the cache, and writes what
evaluating would have written, byte for byte. Anything the verdicts depend on is part of the key, and a
model with adapters merged is never taken from the cache."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml
from click.testing import CliRunner

from itool import cli as cli_module
from itool.cache import EvaluationCache, cache_root, evaluation_cache_root, source_digest
from itool.rundir import read_jsonl

TINY = {
    "dtype": "float32", "device": "cpu", "seed": 1, "rounds": 0, "warmup": None, "eval_limit": 2,
    "dataset": {"name": "bfcl", "options": {"categories": ["simple_python", "irrelevance"]}},
    "evaluator": {"name": "bfcl", "options": {"max_new_tokens": 16}},
}


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "evaluations"
    monkeypatch.setenv("ITOOL_EVAL_CACHE", str(folder))
    return folder


def test_the_cache_lives_in_the_machine_cache_unless_moved_or_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("ITOOL_CACHE", str(tmp_path / "machine"))
    monkeypatch.delenv("ITOOL_EVAL_CACHE")
    assert cache_root() == tmp_path / "machine"
    assert evaluation_cache_root() == tmp_path / "machine" / "evaluations"
    monkeypatch.setenv("ITOOL_EVAL_CACHE", str(tmp_path / "elsewhere"))
    assert evaluation_cache_root() == tmp_path / "elsewhere"
    monkeypatch.setenv("ITOOL_EVAL_CACHE", "off")
    assert evaluation_cache_root() is None


def test_a_second_run_takes_the_base_evaluation_from_the_cache_byte_for_byte(tmp_path, cache_folder):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "runs_dir": str(tmp_path / "runs")}))
    for name in ("first", "second"):
        result = CliRunner().invoke(cli_module.cli, ["run", "--config", str(config), "--name", name])
        assert result.exit_code == 0, result.output
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    for name in ("verdicts.jsonl", "summary.json"):
        assert (second / "base.eval" / name).read_bytes() == (first / "base.eval" / name).read_bytes()
    assert len(read_jsonl(first / "base.eval" / "verdicts.jsonl")) == 2

    def events(run):
        return [r["event"] for r in read_jsonl(run / "metrics.jsonl") if r["stage"] == "base.eval"]

    assert "chunk" in events(first) and "cached" not in events(first)
    assert "cached" in events(second) and "chunk" not in events(second)  # nothing was generated
    [entry] = cache_folder.iterdir()
    assert (entry / "key.json").is_file()
    assert read_jsonl(second / "metrics.jsonl")[-1]["summary"] == read_jsonl(first / "metrics.jsonl")[-1]["summary"]


def test_a_cache_that_cannot_be_written_stops_in_one_line_and_loses_no_verdict(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ITOOL_EVAL_CACHE", str(blocker))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "runs_dir": str(tmp_path / "runs")}))
    stopped = CliRunner().invoke(cli_module.cli, ["run", "--config", str(config), "--name", "blocked"])
    run = tmp_path / "runs" / "blocked"
    assert stopped.exit_code != 0 and "cannot write" in stopped.output and "Traceback" not in stopped.output
    assert (run / "base.eval" / "verdicts.journal.jsonl").is_file()  # every chunk it evaluated is kept
    monkeypatch.setenv("ITOOL_EVAL_CACHE", str(tmp_path / "evaluations"))
    resumed = CliRunner().invoke(cli_module.cli, ["run", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r["stage"] == "base.eval"]
    assert [r["event"] for r in rows if r["attempt"] == 2] == ["start", "resume", "end"]  # nothing evaluated again


@pytest.fixture
def key_of(make_ctx, shared_policy, cache_folder):
    """The cache entry a run with ``settings`` would use for its Base evaluation (the shared model stands
    in for the one the run would load)."""
    names = iter(range(100))

    def key(**settings) -> EvaluationCache | None:
        ctx = make_ctx(**{**TINY, **settings, "name": f"run{next(names)}"})
        ctx.policy = shared_policy
        ctx.stage = "base.eval"
        return ctx.evaluation_cache(ctx.samples("test"))
    return key


def test_anything_the_verdicts_depend_on_is_another_entry(key_of, shared_policy):
    base = key_of()
    assert base.key["dtype"] == str(shared_policy.model.dtype) and base.key["device"] == "cpu"
    changed = [
        key_of(evaluator={"name": "bfcl", "options": {"max_new_tokens": 17}}),  # decoding
        key_of(eval_limit=3),  # the samples
        key_of(dataset={"name": "bfcl", "options": {"categories": ["simple_python", "multiple"]}}),
        key_of(seed=2),
        key_of(backend={"name": "transformers", "options": {"batch_size": 7}}),
    ]
    assert len({base.path, *(c.path for c in changed)}) == 1 + len(changed)
    assert key_of().path == base.path  # and nothing else: the same settings find the same entry


def test_a_plugin_that_may_change_the_model_is_part_of_the_key(make_ctx, registry, shared_policy, cache_folder):
    """A plugin loaded beside the components (here one with a ``model_loaded`` hook) is another entry."""
    from itool import hookimpl
    from itool.registry import Registry

    class ChangesTheModel:
        @hookimpl
        def model_loaded(self, model):
            pass

    entries = []
    for plugins in ([], [ChangesTheModel()]):
        ctx = make_ctx(**TINY, name=f"plugins{len(plugins)}")
        ctx.registry, ctx.policy, ctx.stage = Registry(extra_modules=plugins), shared_policy, "base.eval"
        entries.append(ctx.evaluation_cache(ctx.samples("test")).path)
    assert entries[0] != entries[1]


def test_a_model_with_adapters_merged_is_never_cached(make_ctx, shared_policy, cache_folder, tmp_path):
    ctx = make_ctx(**TINY)
    ctx.policy = shared_policy
    adapter = ctx.run.path / "warmup" / "adapter"
    adapter.mkdir(parents=True)
    ctx.run.complete("warmup", {}, adapter=adapter)
    assert ctx.evaluation_cache(ctx.samples("test")) is None


def test_a_damaged_entry_is_evaluated_again(tmp_path):
    entry = EvaluationCache(tmp_path, {"model": "m"})
    assert entry.load() is None
    entry.store([], {"overall": 0.5})
    assert entry.load() == ([], {"overall": 0.5})
    (entry.path / "summary.json").write_text("{not json")
    assert entry.load() is None


def test_the_source_digest_follows_every_file_of_a_components_package(tmp_path, monkeypatch):
    """A change in a helper module the component imports (not only in the module that registers it) is
    another key."""
    package = tmp_path / "cached_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "component.py").write_text("from cached_plugin_pkg import helper\n")
    (package / "helper.py").write_text("LIMIT = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("cached_plugin_pkg.component")
    try:
        before = source_digest(["cached_plugin_pkg.component"])
        assert source_digest(["cached_plugin_pkg.component"]) == before
        (package / "helper.py").write_text("LIMIT = 2\n")
        assert source_digest(["cached_plugin_pkg.component"]) != before
    finally:
        for name in [n for n in sys.modules if n.startswith("cached_plugin_pkg")]:
            del sys.modules[name]
