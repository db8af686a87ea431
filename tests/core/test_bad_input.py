"""Bad input, of every kind a user can give, is refused in one line on stderr (exit code 2, no
traceback) before anything is written: no run directory, no output file, no change to any file there.

Each case runs the real ``itool`` command in-process, in an empty working folder prepared with the
broken files the cases name; every case fails before a model loads. A user's folder given where
itool writes survives every command."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from itool.cli import cli, get_registry
from itool.rundir import RunDir
from itool.schemas import PreferencePair, SearchNode, SearchTree

USER_FOLDER = "mine"  # a folder of the user's, with a file in it


def tree_line(parents: list[int | None], **meta) -> str:
    nodes = [SearchNode(id=i, parent=p) for i, p in enumerate(parents)]
    return SearchTree(sample_id="s", prompt="p", nodes=nodes, meta=meta).model_dump_json() + "\n"


@functools.cache
def broken_files() -> dict[str, bytes]:
    return {
        "binary.yaml": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01",
        "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
        "list.yaml": b"- a\n- b\n",
        "nan.yaml": b"loss: {name: simpo, options: {beta: .nan}}\n",
        "inf.toml": b"[loss.options]\nbeta = inf\n",
        "typo.yaml": b"search: {name: puct, options: {simulation: 10}}\n",
        "unknown-key.yaml": b"roundz: 2\n",
        "broken.toml": b"rounds = [\n",
        "config.txt": b"rounds: 1\n",
        "empty.jsonl": b"",
        "blank.jsonl": b"\n  \n\n",
        "binary.jsonl": bytes(range(256)) * 4,
        "malformed.jsonl": b'{"foo": 1}\n{"query": ""}\n[1, 2]\n',
        "not-json.jsonl": b"hello\nworld\n",
        "empty-array.json": b"[]",
        "deep.json": b"[" * 100_000,
        "pairs.jsonl": (PreferencePair(prompt="p", chosen="a", rejected="b").model_dump_json(
            include={"prompt", "chosen", "rejected"}) + "\n").encode(),
        "cyclic.trees.jsonl": tree_line([None, 2, 1]).encode(),
        "own-parent-root.trees.jsonl": tree_line([0, 0]).encode(),
        "own-parent.trees.jsonl": tree_line([None, 1]).encode(),
        "deep.trees.jsonl": tree_line([None, *range(5000)]).encode(),
        "bad-chosen.trees.jsonl": tree_line([None, 0], chosen_path=[0, 7]).encode(),
        "binary.trees.jsonl": b"\x80\x81\x82\n",
        **{f"{name}.experiment.yaml": yaml.safe_dump({
            "title": "t", "runs_dir": "exp", "report": report, "seeds": [0], "runs": {"a": {}},
            "arms": [{"name": "A", "run": "a", "stage": "base.eval"}], **more}).encode()
           for name, report, more in [("nan", "exp.md", {"scaling": {"fractions": [float("nan")], "arms": ["A"]}}),
                                      ("report-is-a-folder", USER_FOLDER, {}),
                                      ("figures-in-a-file", "afile.md", {})]},
    }


def prepare(root: Path) -> None:
    """The working folder every case runs in."""
    (root / USER_FOLDER).mkdir()
    (root / USER_FOLDER / "notes.txt").write_text("keep me")
    (root / "afile").write_text("not a folder")
    for name, content in broken_files().items():
        (root / name).write_bytes(content)
    # Runs to resume: damaged state files, an adapter outside the run, a config edited after the start.
    runs = root / "runs"
    config = {"name": "edited", "loss": {"name": "simpo", "options": {"beta": 2.0}}}
    RunDir.create(runs, "edited", config)
    (runs / "edited" / "config.yaml").write_text(yaml.safe_dump({**config, "loss": {"name": "simpo", "options": {"beta": 9.0}}}))
    for name, state in {"truncated": '{"completed": ["base.ev', "a-list": "[]",
                        "escaping": json.dumps({"completed": [], "adapters": ["../../elsewhere"], "results": {}})}.items():
        (runs / name).mkdir()
        (runs / name / "config.yaml").write_text("{}\n")
        (runs / name / "state.json").write_text(state)
    (runs / "no-state").mkdir()
    (runs / "no-state" / "config.yaml").write_text("{}\n")


RUN = ["run", "--runs-dir", "runs"]
TREES = ["tree", "render", "--out", "t.html"]
COMPARE = ["compare", "--losses", "simpo", "--pairs", "pairs.jsonl", "--out", "cmp"]

CASES = [
    # run names and sizes
    (RUN + ["--name", "../escaped"], "must be a plain folder name"),
    (RUN + ["--name", "/tmp/absolute"], "must be a plain folder name"),
    (RUN + ["--name", ".."], "must be a plain folder name"),
    (RUN + ["--name", "a\\b"], "must be a plain folder name"),
    (RUN + ["--rounds", "10000000000000"], "rounds: Input should be less than or equal to 1000"),
    (RUN + ["--rounds", "-1"], "rounds: Input should be greater than or equal to 0"),
    (RUN + ["--rounds", "two"], "'two' is not a valid integer"),
    (RUN + ["--train-limit", "0"], "train_limit: Input should be greater than or equal to 1"),
    (RUN + ["--eval-limit", "100000000000"], "eval_limit: Input should be less than or equal to"),
    (RUN + ["--stop-after", "round9.train"], "is not a stage of this run"),
    (RUN + ["--adapter", "no-such-adapter"], "adapter folder not found"),
    (RUN + ["--preset", "nope"], "unknown preset 'nope'"),
    # components and their options: unknown keys for every kind, non-finite numbers
    (RUN + ["--loss", "simpoo"], "did you mean 'simpo'"),
    (RUN + ["--search-opt", "simulation=10"], "has no option 'simulation'"),
    (RUN + ["--search-opt", "simulation=10"], "did you mean 'simulations'"),
    (RUN + ["--loader-opt", "cache_dri=x"], "did you mean 'cache_dir'"),
    (RUN + ["--backend-opt", "batch=4"], "backend 'transformers' has no option 'batch'"),
    (RUN + ["--format-opt", "max_char=9"], "did you mean 'max_chars'"),
    (RUN + ["--dataset-opt", "categores=simple_python"], "did you mean 'categories'"),
    (RUN + ["--warmup-opt", "color=red"], "warmup 'curriculum' has no option 'color'"),
    (RUN + ["--sampler-opt", "fractoin=0.5"], "did you mean 'fraction'"),
    (RUN + ["--reward-opt", "weight=1"], "reward 'ast' has no option 'weight'"),
    (RUN + ["--pairs-opt", "min_gapp=0.1"], "did you mean 'min_gap'"),
    (RUN + ["--trainer-opt", "learning_rate=1"], "trainer 'lora' has no option 'learning_rate'"),
    (RUN + ["--loss-opt", "betta=0.1"], "did you mean 'beta'"),
    (RUN + ["--evaluator-opt", "max_new_token=9"], "did you mean 'max_new_tokens'"),
    (RUN + ["--sampler", "all", "--sampler-opt", "fraction=0.5"], "sampler 'all' has no option 'fraction'"),
    (RUN + ["--search", "dfsdt", "--pairs", "step"], "which pair builder 'step' cannot read"),
    (RUN + ["--loss-opt", "beta=.nan"], "loss.options.beta"),
    (RUN + ["--loss-opt", "beta=inf"], "loss.options.beta"),
    (RUN + ["--loss-opt", "gamma=-.inf"], "loss.options.gamma"),
    (RUN + ["--search-opt", "c_puct=nan"], "search.options.c_puct"),
    (RUN + ["--trainer-opt", "lr=.inf"], "trainer.options.lr"),
    (RUN + ["--sampler-opt", "fraction=.nan"], "sampler.options.fraction"),
    # device, dtype, model
    (RUN + ["--device", "tpu"], "tpu"),
    (RUN + ["--device", "cuda:7"], "cuda"),
    (RUN + ["--dtype", "float8"], "float8"),
    (RUN + ["--quantize", "4bit", "--device", "cpu"], "quantize 4bit needs a CUDA GPU (bitsandbytes)"),
    (RUN + ["--quantize", "8bit", "--device", "cpu"], "quantize 8bit needs a CUDA GPU (bitsandbytes)"),
    (RUN + ["--quantize", "2bit"], "'2bit' is not one of 'none', '4bit', '8bit'"),
    # several processes: refused before any process starts
    (RUN + ["--processes", "0"], "0 is not in the range x>=1"),
    (RUN + ["--processes", "2", "--loss", "simpoo"], "did you mean 'simpo'"),
    (RUN + ["--model", "./no/such/model"], "model not found"),
    (RUN + ["--model", "afile"], "is a file"),
    (RUN + ["--model", "not a model!"], "is neither the alias"),
    # data files
    (RUN + ["--dataset", "toolbench"], "set the data file with --dataset-opt path=FILE"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=missing.jsonl"], "data file not found"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=empty.jsonl"], "is empty"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=blank.jsonl"], "is empty"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=binary.jsonl"], "is not UTF-8 text"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=malformed.jsonl"], "none of the 3 records"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=not-json.jsonl"], "2 bad json"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=empty-array.json"], "holds no records"),
    (RUN + ["--dataset", "toolbench", "--dataset-opt", "path=deep.json"], "is not valid JSON"),
    (RUN + ["--dataset", "xlam", "--dataset-opt", "path=empty.jsonl"], "is empty"),
    (RUN + ["--dataset", "xlam", "--dataset-opt", "path=binary.jsonl"], "is not UTF-8 text"),
    (RUN + ["--dataset", "toolace", "--dataset-opt", "path=not-json.jsonl"], "toolace: cannot read"),
    (RUN + ["--dataset", "paths", "--dataset-opt", "path=malformed.jsonl"], "not a Sample record"),
    (RUN + ["--dataset-opt", "categories=[nope]"], "unknown BFCL category 'nope'"),
    # config files
    (RUN + ["--config", "binary.yaml"], "is not UTF-8 text"),
    (RUN + ["--config", "latin1.yaml"], "is not UTF-8 text"),
    (RUN + ["--config", "list.yaml"], "expected a mapping"),
    (RUN + ["--config", "nan.yaml"], "loss.options.beta"),
    (RUN + ["--config", "inf.toml"], "loss.options.beta"),
    (RUN + ["--config", "typo.yaml"], "did you mean 'simulations'"),
    (RUN + ["--config", "unknown-key.yaml"], "roundz: Extra inputs are not permitted"),
    (RUN + ["--config", "broken.toml"], "is not valid TOML"),
    (RUN + ["--config", "config.txt"], "use a .yaml, .yml or .toml file"),
    (RUN + ["--config", "missing.yaml"], "config file not found"),
    # where the run would go
    (["run", "--runs-dir", "afile"], "is a file"),
    (["run", "--runs-dir", "afile/below"], "afile is a file"),
    (["run", "--runs-dir", "/proc/itool-runs"], "cannot make run directory"),
    (["run", "--runs-dir", ".", "--name", USER_FOLDER], "is not an itool run"),
    (RUN + ["--name", "edited"], "already exists; resume it with --resume"),
    # resuming
    (["run", "--resume", "runs/truncated"], "state.json is damaged"),
    (["run", "--resume", "runs/a-list"], "state.json is damaged"),
    (["run", "--resume", "runs/escaping"], "points outside the run directory"),
    (["run", "--resume", "runs/edited"], "was edited after the run started (changed: loss.options.beta)"),
    (["run", "--resume", "runs/no-state"], "not a run directory"),
    (["run", "--resume", "afile"], "not a run directory"),
    (["run", "--resume", "runs/edited", "--rounds", "2"], "give no other settings"),
    # trees
    (TREES[:2] + ["cyclic.trees.jsonl"] + TREES[2:], "does not come before it"),
    (TREES[:2] + ["own-parent-root.trees.jsonl"] + TREES[2:], "the first node must be the root"),
    (TREES[:2] + ["own-parent.trees.jsonl"] + TREES[2:], "node 1's parent 1 does not come before it"),
    (["tree", "json", "deep.trees.jsonl", "--out", "t.json"], "deeper than 200 levels"),
    (TREES[:2] + ["bad-chosen.trees.jsonl"] + TREES[2:], "meta.chosen_path must be a list of node ids"),
    (TREES[:2] + ["binary.trees.jsonl"] + TREES[2:], "is not a SearchTree JSONL file"),
    (TREES[:2] + ["missing.trees.jsonl"] + TREES[2:], "no such trees file"),
    (["tree", "render", "cyclic.trees.jsonl", "--out", "afile/t.html"], "afile is a file"),
    # the other commands
    (["eval", "--limit", "0"], "--limit must be at least 1"),
    (["eval", "--split", "dev", "--limit", "5"], "--limit cuts the test split; the dev slice is evaluated whole"),
    (["eval", "--split", "dev", "--categories", "irrelevance"], "--split dev is the dev slice of the default categories"),
    (["eval", "--adapter", "nowhere", "--out", "ev"], "adapters: adapter folder not found"),
    (["eval", "--categories", "nope", "--out", "ev"], "unknown BFCL category 'nope'"),
    (["eval", "--evaluator-opt", "greedy_paralel=1", "--out", "ev"], "did you mean 'greedy_parallel'"),
    (["eval", "--device", "tpu", "--out", "ev"], "tpu"),
    (["redo", "runs/no-state", "warmup"], "not a run directory"),
    (["redo", "runs/edited", "round1.search"], "'round1.search' is neither a finished stage nor one in progress"),
    (["redo", "runs/truncated", "warmup"], "state.json is damaged"),
    (["eval", "--resume", "runs/no-state"], "not a run directory"),
    (["eval", "--resume", "runs/truncated"], "state.json is damaged"),
    (["eval", "--resume", "runs/edited", "--split", "test"], "give no other options"),
    (["annotate", "--out", "p.jsonl", "--limit", "0"], "--limit must be at least 1"),
    (["annotate", "--out", "p.jsonl", "--run-dir", "ann", "--search-opt", "beam=3"], "search 'dfsdt' has no option 'beam'"),
    (["annotate", "--out", "p.jsonl", "--search", "puct", "--run-dir", "ann"], "does not run tools in an environment"),
    (COMPARE[:-2] + ["--out", "afile"], "already exists and is not empty"),
    (COMPARE + ["--trainer-opt", "lr=nan"], "trainer.options.lr"),
    (COMPARE + ["--eval-limit", "0"], "eval_limit"),
    (["compare", "--losses", "simpo", "--pairs", "binary.jsonl", "--out", "cmp"], "not TRL preference JSONL"),
    (["compare", "--losses", "simpo", "--pairs", "empty.jsonl", "--out", "cmp"], "no pairs in the file"),
    (["experiment", "nan.experiment.yaml"], "scaling.fractions.0"),
    (["experiment", "binary.yaml"], "is not UTF-8 text"),
    (["experiment", "report-is-a-folder.experiment.yaml"], f"report {USER_FOLDER} is a folder"),
    (["experiment", "figures-in-a-file.experiment.yaml"], "report figures afile/ablation.png: afile is a file"),
    (["data", "stats", "toolbench", "--dataset-opt", "path=binary.jsonl"], "is not UTF-8 text"),
    (["data", "stats", "toolbench", "--dataset-opt", "pth=x"], "did you mean 'path'"),
    (["plugins", "loss", "nope"], "unknown loss 'nope'"),
]

# Every option through which a command writes to a path the user names, and the command line that
# points it at the user's folder (the other settings valid, so the output path is what is refused).
OUTPUT_PATHS = {
    ("itool run", "--runs-dir"): ["run", "--runs-dir", ".", "--name", USER_FOLDER],
    ("itool run", "--name"): ["run", "--runs-dir", ".", "--name", USER_FOLDER],
    ("itool tree render", "--out"): ["tree", "render", "cyclic.trees.jsonl", "--out", USER_FOLDER],
    ("itool tree render", "--png"): ["tree", "render", "cyclic.trees.jsonl", "--out", "t.html", "--png", USER_FOLDER],
    ("itool tree json", "--out"): ["tree", "json", "cyclic.trees.jsonl", "--out", USER_FOLDER],
    ("itool annotate", "--out"): ["annotate", "--out", USER_FOLDER, "--run-dir", "ann"],
    ("itool annotate", "--run-dir"): ["annotate", "--out", "p.jsonl", "--run-dir", USER_FOLDER],
    ("itool eval", "--out"): ["eval", "--out", USER_FOLDER],
    ("itool compare", "--out"): COMPARE[:-1] + [USER_FOLDER],
}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    prepare(tmp_path)
    monkeypatch.chdir(tmp_path)  # default output paths (runs/...) land here too
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def refused(args: list[str]) -> str:
    """Run ``itool ARGS``: it must fail with exit code 2 and one line on stderr; returns that line."""
    get_registry().add_commands(cli)  # what `itool` (cli.main) does at start-up
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (args, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
    assert "Traceback" not in result.output
    return lines[0]


def test_the_corpus_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(workdir, args, message):
    before = snapshot(workdir)
    line = refused(args)
    assert message in line
    assert snapshot(workdir) == before


def writing_options(command, path: str = "itool") -> set[tuple[str, str]]:
    """(command, option) for every option of type Path named like an output."""
    import click

    if isinstance(command, click.Group):
        return {found for name, sub in command.commands.items() for found in writing_options(sub, f"{path} {name}")}
    return {(path, opt) for param in command.params if isinstance(param, click.Option)
            for opt in param.opts if opt in ("--out", "--png", "--run-dir", "--runs-dir", "--name")}


def test_every_output_option_is_covered_below():
    get_registry().add_commands(cli)
    assert writing_options(cli) == set(OUTPUT_PATHS)


@pytest.mark.parametrize("command,option", list(OUTPUT_PATHS), ids=[" ".join(k) for k in OUTPUT_PATHS])
def test_a_users_folder_survives_every_command_that_writes(workdir, command, option):
    before = snapshot(workdir)
    refused(OUTPUT_PATHS[(command, option)])
    assert (workdir / USER_FOLDER / "notes.txt").read_text() == "keep me"
    assert snapshot(workdir) == before
