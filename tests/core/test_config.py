"""RunConfig layers: defaults < preset < file < flags, with one readable line for every bad value."""

from __future__ import annotations

import pytest

from types import SimpleNamespace

from itool import hookimpl
from itool.config import RunConfig, build_config, changed_keys, config_data, parse_option, read_config_file, read_preset
from itool.context import RunContext
from itool.errors import ItoolError
from itool.registry import Registry
from itool.rundir import RunDir
from itool.session import check_components


def test_defaults_are_the_paper_pipeline_on_the_default_model():
    config = build_config([])
    assert (config.model, config.search.name, config.loss.name, config.warmup.name) == (
        "smollm2-135m-instruct", "puct", "simpo", "curriculum")


def test_yaml_and_toml_files_load_the_same(tmp_path):
    (tmp_path / "c.yaml").write_text("rounds: 2\nloss: {name: dpo, options: {beta: 0.2}}\n")
    (tmp_path / "c.toml").write_text('rounds = 2\n[loss]\nname = "dpo"\noptions = { beta = 0.2 }\n')
    a = build_config([read_config_file(tmp_path / "c.yaml")])
    b = build_config([read_config_file(tmp_path / "c.toml")])
    assert a == b and a.loss.options == {"beta": 0.2}


def test_later_layers_override_and_options_merge_into_the_named_component():
    config = build_config([{"loss": {"name": "dpo", "options": {"beta": 0.2}}}, {"loss": {"options": {"label": 1}}}])
    assert config.loss.name == "dpo" and config.loss.options == {"beta": 0.2, "label": 1}


def test_naming_another_component_drops_the_old_ones_options():
    config = build_config([{"loss": {"name": "dpo", "options": {"beta": 0.2}}}, {"loss": "simpo"}])
    assert config.loss.name == "simpo" and config.loss.options == {}


def test_warmup_none_skips_the_warmup():
    assert build_config([{"warmup": "none"}]).warmup is None


def test_option_values_are_typed_like_yaml():
    assert parse_option("beta=2.5", "--loss-opt") == ("beta", 2.5)
    assert parse_option("stratify=true", "--sampler-opt") == ("stratify", True)
    assert parse_option("cats=[a, b]", "--dataset-opt") == ("cats", ["a", "b"])
    assert parse_option("name=x=y", "--loss-opt") == ("name", "x=y")


@pytest.mark.parametrize("layer, message", [
    ({"rounds": "many"}, "rounds: Input should be a valid integer, unable to parse string as an integer, got 'many'"),
    ({"rounds": -1}, "rounds: Input should be greater than or equal to 0, got -1"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted, got 'red'"),
    ({"loss": {"name": "dpo", "beta": 1}}, "loss.beta: Extra inputs are not permitted, got 1"),
    ({"rounds": 10**13}, "rounds: Input should be less than or equal to 1000, got 10000000000000"),
    ({"train_limit": 10**12}, "train_limit: Input should be less than or equal to 10000000, got 1000000000000"),
    ({"name": "../elsewhere"}, "name: name '../elsewhere' must be a plain folder name (no '/', not '.' or '..')"),
    ({"name": "/abs"}, "name: name '/abs' must be a plain folder name (no '/', not '.' or '..')"),
])
def test_every_invalid_value_names_the_field_and_the_problem(layer, message):
    with pytest.raises(ItoolError) as err:
        build_config([layer])
    assert str(err.value) == message


def test_changed_settings_are_named_by_their_dotted_keys():
    old = build_config([{"rounds": 1, "loss": {"name": "dpo", "options": {"beta": 0.1}}}])
    new = build_config([{"rounds": 2, "loss": {"name": "dpo", "options": {"beta": 0.2, "label": 0}}}])
    assert changed_keys(config_data(old), config_data(new)) == ["rounds", "loss.options.beta", "loss.options.label"]
    assert changed_keys(config_data(old), config_data(old)) == []


def test_malformed_option_flag():
    with pytest.raises(ItoolError, match=r"--loss-opt expects key=value, got 'beta'"):
        parse_option("beta", "--loss-opt")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ItoolError, match="config file not found: .*nope.yaml"):
        read_config_file(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("rounds: [1\n")
    with pytest.raises(ItoolError, match="is not valid YAML"):
        read_config_file(tmp_path / "bad.yaml")
    (tmp_path / "bad.toml").write_text("rounds = \n")
    with pytest.raises(ItoolError, match="is not valid TOML"):
        read_config_file(tmp_path / "bad.toml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ItoolError, match="expected a mapping"):
        read_config_file(tmp_path / "list.yaml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ItoolError, match="use a .yaml, .yml or .toml file"):
        read_config_file(tmp_path / "c.json")


def test_presets_are_named_config_layers():
    assert build_config([read_preset("smoke")]).train_limit == 8
    with pytest.raises(ItoolError, match=r"unknown preset 'papper' \(available: .*smoke"):
        read_preset("papper")


def test_every_shipped_preset_names_real_components_with_valid_options(registry):
    from itool.config import COMPONENT_FIELDS, preset_names

    assert {"paper", "smoke"} <= set(preset_names())
    for name in preset_names():
        config = build_config([read_preset(name)])
        for field, kind in COMPONENT_FIELDS.items():
            spec = getattr(config, field)
            if spec is not None:
                registry.get(kind, spec.name).parse_options(spec.options)  # raises on a bad option


def test_the_paper_preset_is_three_full_size_rounds_and_a_loss_flag_replaces_its_loss():
    paper = build_config([read_preset("paper")])
    assert (paper.rounds, paper.train_limit, paper.eval_limit) == (3, None, None)
    assert paper.loss.options == {"beta": 2.5, "gamma": 0.5}
    assert build_config([read_preset("paper"), {"loss": "dpo"}]).loss.options == {}


def test_config_round_trips_through_its_saved_yaml(tmp_path):
    from itool.rundir import RunDir

    config = build_config([{"loss": {"name": "dpo", "options": {"beta": 0.2}}, "rounds": 3}])
    run = RunDir.create(tmp_path, "r", config_data(config))
    assert build_config([read_config_file(run.path / "config.yaml")]) == config
    assert isinstance(config, RunConfig)


class RecordingLoader:
    """Test-only model loaders that note the keywords they are called with: one that takes the
    ``quantize`` switch and one written before it existed."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    @hookimpl
    def register_models(self, register):
        def load(spec, opts, *, device, dtype, quantize="none"):
            self.calls.append({"quantize": quantize})
            return SimpleNamespace(model=None, tokenizer=None)

        def load_plain(spec, opts, *, device, dtype):
            return SimpleNamespace(model=None, tokenizer=None)

        register("recording", load)
        register("plain", load_plain)


def test_quantize_is_one_setting_the_model_loader_receives(tmp_path, monkeypatch):
    import torch

    recorder = RecordingLoader()
    registry = Registry(extra_modules=[recorder])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # where --quantize can run

    def context(**settings) -> RunContext:
        config = build_config([{"runs_dir": str(tmp_path), "name": "-".join(settings.values()), **settings}])
        return RunContext(config, registry, RunDir.create(config.runs_dir, config.name))

    for quantize in ("none", "4bit", "8bit"):
        context(loader="recording", quantize=quantize).policy  # noqa: B018 - loading is what is tested
    assert recorder.calls == [{"quantize": "none"}, {"quantize": "4bit"}, {"quantize": "8bit"}]
    assert build_config([{"quantize": "4bit"}]).quantize == "4bit"
    assert config_data(build_config([]))["quantize"] == "none"  # recorded in every run's config.yaml

    context(loader="plain", quantize="none").policy  # noqa: B018 - a loader without the switch loads as before
    plain = context(loader="plain", quantize="4bit")
    with pytest.raises(ItoolError, match="model loader 'plain' cannot load a quantised model"):
        check_components(plain)
