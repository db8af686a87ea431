"""The registry finds plugins through entry points, looks components up by kind and name, and keeps
working when one plugin is broken."""

from __future__ import annotations

import re
import sys
import textwrap

import pytest
from pydantic import BaseModel, ConfigDict, Field

from itool.errors import ItoolError
from itool.registry import Component, Registry

import loop_plugins


@pytest.fixture
def toy_registry():
    return Registry(load_entry_points=False, extra_modules=[loop_plugins])


def test_components_are_listed_by_kind_with_package_and_description(toy_registry):
    loss = toy_registry.get("loss", "toy-logistic")
    assert loss.package == "loop_plugins"
    assert loss.description == "-log σ(pc − pr): the simplest preference loss, no reference."
    assert "toy-enumerate" in toy_registry.names("search")


def test_unknown_name_lists_what_exists_and_the_closest_match(toy_registry):
    with pytest.raises(ItoolError) as err:
        toy_registry.get("search", "toy-enumarate")
    assert str(err.value) == "unknown search 'toy-enumarate' (available: toy-enumerate); did you mean 'toy-enumerate'?"


def test_unknown_kind_is_a_clear_error(toy_registry):
    with pytest.raises(ItoolError, match="unknown component kind 'losses'"):
        toy_registry.names("losses")


def _fake_distribution(root, dist_name: str, module: str, code: str) -> None:
    """A real installed distribution on sys.path: dist-info with an `itool` entry point plus the module."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist_name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[itool]\n{module} = {module}\n")


def test_a_plugin_that_raises_on_import_is_reported_and_the_others_keep_working(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "broken-plugin", "broken_plugin_mod", "raise ImportError('needs libfoo')\n")
    _fake_distribution(tmp_path, "good-plugin", "good_plugin_mod", """
        from itool import hookimpl

        def my_sampler(ctx, samples, opts):
            '''Keeps the first sample.'''
            return samples[:1]

        @hookimpl
        def register_samplers(register):
            register("first", my_sampler)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    failures = {f.package: f.error for f in registry.failures}
    assert failures["broken-plugin (broken_plugin_mod)"] == "ImportError: needs libfoo"
    assert registry.get("sampler", "first").package == "good-plugin"
    sys.modules.pop("good_plugin_mod", None)


def test_a_register_hook_that_raises_is_reported(tmp_path, monkeypatch):
    (tmp_path / "raising_hook.py").write_text(textwrap.dedent("""
        from itool import hookimpl

        @hookimpl
        def register_losses(register):
            raise ValueError("bad state")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(load_entry_points=False, extra_modules=["raising_hook", loop_plugins])
    assert [(f.package, f.error) for f in registry.failures] == [
        ("raising_hook", "register_losses: ValueError: bad state")
    ]
    assert registry.has("loss", "toy-logistic")


def test_a_second_component_with_the_same_name_is_refused(tmp_path, monkeypatch):
    (tmp_path / "dup_loss.py").write_text(textwrap.dedent("""
        from itool import hookimpl

        @hookimpl
        def register_losses(register):
            register("toy-logistic", lambda batch, opts: None)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(load_entry_points=False, extra_modules=[loop_plugins, "dup_loss"])
    assert registry.get("loss", "toy-logistic").package == "loop_plugins"
    assert registry.failures[0].error == "loss 'toy-logistic' is already registered by loop_plugins"


def test_itool_plugins_env_var_loads_plain_modules(monkeypatch):
    monkeypatch.setenv("ITOOL_PLUGINS", "loop_plugins")
    assert Registry(load_entry_points=False).has("trainer", "toy")


def test_options_are_validated_with_the_field_named(toy_registry):
    search = toy_registry.get("search", "toy-enumerate")
    assert search.parse_options({"fail_once": True}).fail_once is True
    with pytest.raises(ItoolError) as err:
        search.parse_options({"fail_once": "perhaps"})
    assert str(err.value).startswith("search.options.fail_once: Input should be a valid boolean")


class LaxOptions(BaseModel):
    """A third-party options model that forgot to forbid unknown keys, with an alias and nested numbers."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    temperature: float = 1.0
    weights: dict[str, float] = Field(default_factory=dict)
    top_k: int = Field(5, alias="topK")


@pytest.fixture
def lax_component():
    return Component(kind="search", name="lax", obj=None, options=LaxOptions, description="", package="third-party")


def test_unknown_option_keys_are_refused_whatever_the_model_allows(lax_component):
    with pytest.raises(ItoolError) as err:
        lax_component.parse_options({"temprature": 0.5})
    assert str(err.value) == ("search.options: search 'lax' has no option 'temprature' "
                              "(options: temperature, weights, top_k, topK); did you mean 'temperature'?")
    assert lax_component.parse_options({"topK": 3}).top_k == lax_component.parse_options({"top_k": 3}).top_k == 3


@pytest.mark.parametrize("values,message", [
    ({"temperature": float("nan")}, "search.options.temperature: must be a finite number, got nan"),
    ({"temperature": "-inf"}, "search.options.temperature: must be a finite number, got '-inf'"),
    ({"weights": {"a": 1.0, "b": float("inf")}}, "search.options.weights: must be a finite number"),
])
def test_non_finite_numbers_are_refused_even_nested(lax_component, values, message):
    with pytest.raises(ItoolError, match=re.escape(message)):
        lax_component.parse_options(values)
