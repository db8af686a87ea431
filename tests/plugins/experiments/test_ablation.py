"""``itool experiment``: arms × seeds, a loss comparison and a data-scaling sweep from one config, run
with the toy plugins of tests/loop_plugins.py (the real-model experiment is experiments/bfcl_half.yaml)."""

from __future__ import annotations

import json

import pytest
import yaml

import loop_plugins
from itool.errors import ItoolError
from itool.plugins.experiments.ablation import planned_runs, read_experiment


def toy_experiment(tmp_path, **changes) -> dict:
    config = {
        "title": "Toy ablation",
        "runs_dir": str(tmp_path / "runs"),
        "report": str(tmp_path / "docs" / "results.md"),
        "seeds": [0, 1],
        "notes": "Toy sizes.",
        "common": {**loop_plugins.TOY_CONFIG, "train_limit": 8},
        "runs": {
            "base": {"config": {"warmup": "none", "rounds": 0}, "seeds": [0]},
            "itool": {"config": {"eval_base": False}},
            "sft": {"config": {"eval_base": False, "rounds": 0}},
            "from-warmup": {"start_from": "itool:warmup", "seeds": [0],
                            "config": {"eval_base": False, "warmup": "none",
                                       "sampler": {"name": "replay", "options": {"run": "itool-s{seed}"}}}},
        },
        "arms": [
            {"name": "Base", "run": "base", "stage": "base.eval"},
            {"name": "SFT", "run": "sft", "stage": "warmup.eval"},
            {"name": "Warm-up", "run": "itool", "stage": "warmup.eval"},
            {"name": "iTool", "run": "itool", "stage": "round1.eval"},
            {"name": "other search", "run": "from-warmup", "stage": "round1.eval"},
        ],
        "compare": {"run": "itool", "seed": 0, "start_arm": "Warm-up", "losses": ["toy-logistic"]},
        "comparisons": [["iTool", "Warm-up"]],
        "scaling": {"fractions": [0.5, 1.0], "arms": ["SFT", "iTool"], "seeds": [0]},
    }
    config.update(changes)
    return config


def test_an_experiment_runs_every_arm_and_writes_the_report_with_its_plots(itool, tmp_path, write_experiment):
    result = itool("experiment", write_experiment(toy_experiment(tmp_path)))
    assert result.exit_code == 0, result.output
    report = (tmp_path / "docs" / "results.md").read_text()
    assert ("| row | n | Base (seed 0) | SFT (seed 0) | Warm-up (seed 0) | iTool (seed 0) | other search (seed 0) |"
            in report)
    assert "| Overall |  | 0.0 [0.0, 0.0] |" in report  # the toy base model is always wrong
    assert "### Overall, seed by seed" in report  # arms with two seeds
    assert "| itool-s0 | 1 |" in report.split("## Rounds")[1]
    assert "### iTool − Warm-up" in report and "McNemar" in report.split("### iTool − Warm-up")[1]
    assert "## Loss comparison" in report and "| start (Warm-up) | toy-logistic |" in report.replace("| row ", "")
    assert "| iTool | " in report.split("## Data scaling")[1]
    times = report.split("## Wall time per stage")[1]
    assert "| compare/toy-logistic | train |" in times and "| compare/toy-logistic | **total** |" in times
    assert "| all runs | **total, every seed** |" in times
    for png in ("arms", "losses", "scaling"):
        assert (tmp_path / "docs" / "results" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    started = json.loads((tmp_path / "runs" / "from-warmup-s0" / "state.json").read_text())
    config = yaml.safe_load((tmp_path / "runs" / "from-warmup-s0" / "config.yaml").read_text())
    assert config["adapters"] == [str(tmp_path / "runs" / "itool-s0" / "warmup" / "adapter")]
    assert started["completed"][0] == "round1.select"
    # {seed} names the same seed's run: its selection is replayed
    assert config["sampler"] == {"name": "replay", "options": {"run": "itool-s0"}}
    replayed, source = (json.loads((tmp_path / "runs" / run / "round1.select" / "selected.json").read_text())
                        for run in ("from-warmup-s0", "itool-s0"))
    assert replayed == source and replayed
    assert yaml.safe_load((tmp_path / "runs" / "sft-p50-s0" / "config.yaml").read_text())["train_limit"] == 4


def test_a_run_with_two_rounds_gets_the_score_by_round_plot(itool, tmp_path, write_experiment):
    config = toy_experiment(tmp_path, seeds=[0], compare=None, scaling=None, comparisons=[],
                            runs={"itool": {"config": {"eval_base": False, "rounds": 2}}},
                            arms=[{"name": "iTool", "run": "itool", "stage": "round2.eval"}])
    result = itool("experiment", write_experiment(config))
    assert result.exit_code == 0, result.output
    rounds = (tmp_path / "docs" / "results.md").read_text().split("## Rounds")[1]
    assert "| itool-s0 | 2 |" in rounds and "![score by round](results/rounds.png)" in rounds
    assert (tmp_path / "docs" / "results" / "rounds.png").read_bytes()[:4] == b"\x89PNG"


def test_the_loss_comparison_runs_after_every_arm_of_its_seed_and_before_the_other_seeds(itool, tmp_path,
                                                                                          write_experiment):
    assert itool("experiment", write_experiment(toy_experiment(tmp_path, scaling=None))).exit_code == 0

    def times(folder: str) -> list[float]:
        return [json.loads(line)["unix"] for line in (tmp_path / "runs" / folder / "metrics.jsonl").open()]

    # itool-s0's round-1 pairs exist long before its own run, and the runs of seed 0 after it, are done
    assert max(times("from-warmup-s0")) < min(times("compare/toy-logistic")) < min(times("itool-s1"))
    listed = itool("experiment", write_experiment(toy_experiment(tmp_path, scaling=None)), "--dry-run").output
    assert "compare                      1 of 1 losses done (toy-logistic); it runs after the arms of seed 0" in listed


def test_a_loss_comparison_trained_on_pairs_its_run_no_longer_holds_is_refused(itool, tmp_path, write_experiment):
    path = write_experiment(toy_experiment(tmp_path, seeds=[0], scaling=None))
    assert itool("experiment", path).exit_code == 0
    assert itool("experiment", path).exit_code == 0  # the same pairs: the comparison is reused
    pairs = tmp_path / "runs" / "itool-s0" / "round1.pairs" / "pairs.jsonl"
    pairs.write_text(pairs.read_text().splitlines(keepends=True)[0])  # as after `itool redo` of the search
    result = itool("experiment", path)
    assert result.exit_code == 2 and "was trained on other pairs than" in result.output
    (tmp_path / "runs" / "compare").rename(tmp_path / "old-compare")
    assert itool("experiment", path).exit_code == 0
    assert json.loads((tmp_path / "runs" / "compare" / "compare.json").read_text())["n_pairs"] == 1


def test_a_second_call_reuses_every_run_and_only_rewrites_the_report(itool, tmp_path, write_experiment):
    path = write_experiment(toy_experiment(tmp_path))
    assert itool("experiment", path).exit_code == 0
    logs = {p: p.read_text() for p in (tmp_path / "runs").rglob("calls.log")}
    (tmp_path / "docs" / "results.md").unlink()
    result = itool("experiment", path)
    assert result.exit_code == 0, result.output
    assert {p: p.read_text() for p in (tmp_path / "runs").rglob("calls.log")} == logs
    assert (tmp_path / "docs" / "results.md").is_file()


def test_changed_settings_for_an_existing_run_are_refused_not_mixed(itool, tmp_path, write_experiment):
    assert itool("experiment", write_experiment(toy_experiment(tmp_path, seeds=[0]))).exit_code == 0
    changed = toy_experiment(tmp_path, seeds=[0], common={**loop_plugins.TOY_CONFIG, "train_limit": 6})
    result = itool("experiment", write_experiment(changed))
    assert result.exit_code == 2
    assert "was run with other settings" in result.output and "Traceback" not in result.output


def test_runs_go_seed_by_seed_then_the_scaling_sweep(tmp_path, write_experiment):
    path = write_experiment(toy_experiment(tmp_path))
    names = [name for name, *_ in planned_runs(read_experiment(path))]
    assert names == ["base-s0", "itool-s0", "sft-s0", "from-warmup-s0", "itool-s1", "sft-s1",
                     "sft-p50-s0", "itool-p50-s0"]


@pytest.mark.parametrize("change, message", [
    ({"arms": [{"name": "X", "run": "nope", "stage": "base.eval"}]}, "arm 'X' names unknown run 'nope'"),
    ({"scaling": {"fractions": [0.5], "arms": ["other search"]}}, "runs that start from another run cannot be scaled"),
    ({"seeds": []}, "seeds"),
    ({"runs": {"a": {"start_from": "b:warmup"}, "b": {"start_from": "a:warmup"}},
      "arms": [{"name": "A", "run": "a", "stage": "round1.eval"}], "compare": None, "scaling": None},
     "start_from goes round in a circle"),
])
def test_a_bad_experiment_config_is_one_line(itool, tmp_path, write_experiment, change, message):
    result = itool("experiment", write_experiment(toy_experiment(tmp_path, **change)))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_read_experiment_names_the_file_in_its_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("title: t\n")
    with pytest.raises(ItoolError, match=r"x.yaml: "):
        read_experiment(path)


def test_the_shipped_experiment_config_names_real_components_with_valid_options(registry):
    from pathlib import Path

    from itool.config import build_config
    from itool.context import RunContext

    exp = read_experiment(Path(__file__).parents[3] / "experiments" / "bfcl_half.yaml")
    for name, spec in exp.runs.items():
        RunContext(build_config([exp.common, spec.config]), registry, run=None)  # raises on a bad name or option
    assert [a.name for a in exp.arms][:5] == ["Base", "SFT", "Warm-up", "iTool", "best-of-n"]
    assert ("iTool", "Warm-up") in exp.comparisons


def test_set_changes_a_setting_of_the_config_for_this_call(itool, tmp_path, write_experiment):
    path = write_experiment(toy_experiment(tmp_path, seeds=[0], scaling=None, compare=None))
    elsewhere = tmp_path / "elsewhere"
    result = itool("experiment", path, "--set", f"runs_dir={elsewhere}", "--set", "common.train_limit=6", "--dry-run")
    assert result.exit_code == 0, result.output
    exp = read_experiment(path, (f"runs_dir={elsewhere}", "common.train_limit=6", "runs.sft.seeds=[3]"))
    assert exp.runs_dir == elsewhere and exp.common["train_limit"] == 6 and exp.runs["sft"].seeds == [3]
    with pytest.raises(ItoolError, match="'title' is not a mapping"):
        read_experiment(path, ("title.x=1",))
    bad = itool("experiment", path, "--set", "seeds=nope")
    assert bad.exit_code == 2 and "seeds" in bad.output and "Traceback" not in bad.output


def test_the_evidence_config_names_real_components_with_valid_options(registry):
    from pathlib import Path

    from itool.config import build_config
    from itool.context import RunContext

    exp = read_experiment(Path(__file__).parents[3] / "experiments" / "bfcl_cpu.yaml")
    for name, spec in exp.runs.items():
        RunContext(build_config([exp.common, spec.config]), registry, run=None)
    assert exp.common["train_limit"] >= 600 and ("iTool", "Warm-up") in exp.comparisons


def test_an_interrupted_loss_comparison_keeps_its_finished_losses(itool, tmp_path, write_experiment):
    config = toy_experiment(tmp_path, seeds=[0], scaling=None,
                            compare={"run": "itool", "seed": 0, "start_arm": "Warm-up",
                                     "losses": ["toy-logistic", "simpo"]})
    path = write_experiment(config)
    assert itool("experiment", path).exit_code == 0
    compare = tmp_path / "runs" / "compare"
    first = (compare / "toy-logistic" / "calls.log").read_text()
    (compare / "compare.json").unlink()  # as if stopped before the last loss finished
    state = json.loads((compare / "simpo" / "state.json").read_text())
    state["completed"].remove("eval")
    (compare / "simpo" / "state.json").write_text(json.dumps(state))
    result = itool("experiment", path)
    assert result.exit_code == 0, result.output
    assert (compare / "toy-logistic" / "calls.log").read_text() == first  # not trained or evaluated again
    assert "eval" in json.loads((compare / "simpo" / "state.json").read_text())["completed"]
    assert (compare / "compare.json").is_file()
    stops = (tmp_path / "docs" / "results.md").read_text().split("## Stops and resumes")[1]
    assert "| compare/simpo | eval |" in stops  # the comparison's runs are listed like the arms'


def test_a_report_written_mid_experiment_says_which_runs_are_unfinished(itool, tmp_path, write_experiment):
    path = write_experiment(toy_experiment(tmp_path, seeds=[0], scaling=None, compare=None))
    assert itool("experiment", path).exit_code == 0
    assert "In progress" not in (tmp_path / "docs" / "results.md").read_text()
    state_file = tmp_path / "runs" / "sft-s0" / "state.json"
    state = json.loads(state_file.read_text())
    state["completed"].remove("warmup.eval")
    state_file.write_text(json.dumps(state))
    assert itool("experiment", path, "--report-only").exit_code == 0
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "In progress: sft-s0 (1 of 2 stages done)." in report
    assert "## Stops and resumes" not in report

    assert itool("experiment", path).exit_code == 0  # continues: the unfinished stage runs again
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "In progress" not in report
    assert "## Stops and resumes" in report and "| sft-s0 | warmup.eval |" in report
