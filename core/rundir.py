"""The run directory: resolved config, metrics.jsonl, one folder per stage, and the state file.

Every file is written to a temporary name in the same folder and renamed into place, so a killed run
never leaves a half-written file; a stage counts as done only once ``state.json`` says so, and that is
written after all of the stage's outputs. In a run of several processes only the main one writes the
state and the metrics (``itool.processes``); the others read them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from itool.errors import ItoolError, describe_validation_error
from itool.processes import is_main

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
# An empty file in every folder that atomic_path makes: only such folders are ever replaced, so a
# user's folder given as an output path is never deleted.
MADE_BY_ITOOL = ".itool-output"
# Where `itool redo` moves the stages it takes back: runs/<name>/discarded/<time>/.
DISCARDED = "discarded"


def made_by_itool(path: Path) -> bool:
    return (Path(path) / MADE_BY_ITOOL).is_file()


def check_output_file(path: Path, what: str = "--out") -> None:
    """Fail before any work when ``path`` cannot become a file: it is a folder (never replaced by a
    file) or its parent is a file."""
    path = Path(path)
    if path.is_dir():
        raise ItoolError(f"{what} {path} is a folder; give a file name (an existing folder is never replaced)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ItoolError(f"{what} {path}: {parent} is a file, not a folder")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Works for files and for folders (e.g. a PEFT adapter written by ``save_pretrained``). A folder it
    makes is marked as itool's; an existing folder without that mark is someone else's and is
    refused, never deleted."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise ItoolError(f"cannot write to {path}: give a file or folder name")
    if path.is_dir() and not made_by_itool(path):
        raise ItoolError(f"{path} is a folder that itool did not make; it is left as it is (choose another path)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / "out"
    except OSError as exc:
        raise ItoolError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        if tmp.is_dir():
            (tmp / MADE_BY_ITOOL).touch()
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def read_user_text(path: Path, what: str) -> str:
    """A user-supplied file's text, or one line saying why it cannot be read (``what`` names the file:
    "config file", "toolace: data file")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ItoolError(f"{what} {path} is not UTF-8 text (a binary file?)") from None
    except OSError as exc:
        raise ItoolError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict]) -> int:
    lines = [
        r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False, default=str)
        for r in rows
    ]
    write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path, model: type[BaseModel] | None = None) -> list[Any]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [model.model_validate(r) for r in rows] if model else rows


class RunState(BaseModel):
    """What ``state.json`` holds. ``config`` is the resolved config the run started with (absent in
    runs made before it was recorded): a resumed run refuses a config.yaml edited since."""

    model_config = ConfigDict(extra="allow")

    completed: list[str]
    adapters: list[str]
    results: dict[str, Any]
    config: dict[str, Any] | None = None

    @field_validator("adapters")
    @classmethod
    def _inside_the_run(cls, adapters: list[str]) -> list[str]:
        for adapter in adapters:
            if Path(adapter).is_absolute() or ".." in Path(adapter).parts:
                raise ValueError(f"adapter path {adapter!r} points outside the run directory")
        return adapters


class RunDir:
    """One run's folder. Stages are named like ``warmup`` or ``round1.search``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def check_new(runs_dir: Path, name: str) -> Path:
        """The path of a new run, or one line saying why it cannot be made there (nothing is written)."""
        path = Path(runs_dir) / name
        if (path / STATE_FILE).exists():
            raise ItoolError(f"run directory {path} already exists; resume it with --resume {path}")
        if path.exists() and not path.is_dir():
            raise ItoolError(f"run directory {path} is a file")
        if path.is_dir() and any(path.iterdir()):
            raise ItoolError(f"{path} exists and is not an itool run; choose another name or runs folder")
        existing = next(p for p in [path, *path.parents] if p.exists())
        if not existing.is_dir():
            raise ItoolError(f"cannot make run directory {path}: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ItoolError(f"cannot make run directory {path}: {existing} is not writable")
        return path

    @classmethod
    def create(cls, runs_dir: Path, name: str | None, config: dict[str, Any] | None = None) -> "RunDir":
        """Make the run's folder with its ``config.yaml`` (when given) and then ``state.json``, which
        is what makes it a run."""
        path = cls.check_new(runs_dir, name or datetime.now().strftime("run-%Y%m%d-%H%M%S"))
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ItoolError(f"cannot make run directory {path}: {exc.strerror or exc}") from None
        run = cls(path)
        if config is not None:
            write_text(path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        run._write_state(RunState(completed=[], adapters=[], results={}, config=config).model_dump(exclude_none=True))
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        """An existing run, its state file checked (a damaged one is one line, not a traceback later)."""
        path = Path(path)
        if not (path / STATE_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            raise ItoolError(f"not a run directory (no {STATE_FILE} or {CONFIG_FILE}): {path}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ItoolError(f"run directory {path} is not writable")
        run = cls(path)
        run.state  # read once: a damaged state file fails here, before anything runs
        return run

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        path = self.path / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ItoolError(f"{path} is damaged ({str(exc).splitlines()[0]}); the run cannot continue") from None
        except OSError as exc:
            raise ItoolError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            RunState.model_validate(data)
        except ValidationError as exc:
            raise ItoolError(f"{path} is damaged: {describe_validation_error(exc, 'state')}") from None
        return data

    def _write_state(self, state: dict[str, Any]) -> None:
        if is_main():
            write_json(self.path / STATE_FILE, state)

    def is_done(self, stage: str) -> bool:
        return stage in self.state["completed"]

    def result(self, stage: str) -> Any:
        return self.state["results"].get(stage)

    def complete(self, stage: str, result: Any = None, adapter: Path | None = None) -> None:
        """Mark ``stage`` done (after its outputs are on disk), recording its result and adapter."""
        state = self.state
        state["completed"].append(stage)
        state["results"][stage] = result
        if adapter is not None:
            state["adapters"].append(Path(adapter).relative_to(self.path).as_posix())
        self._write_state(state)

    def discard_from(self, stage: str) -> Path:
        """Take ``stage`` and every stage after it back, so that the run does them again when it continues:
        their folders (and the folder of a stage in progress), their results and adapters, and their rows
        of metrics.jsonl move to ``discarded/<time>/`` with the state as it was. Returns that folder."""
        state = self.state
        completed = state["completed"]
        if stage not in completed and not (self.path / stage).is_dir():
            raise ItoolError(f"{stage!r} is neither a finished stage nor one in progress in {self.path} "
                             f"(finished: {', '.join(completed) or 'none'})")
        kept = completed[:completed.index(stage)] if stage in completed else completed
        out = self.path / DISCARDED / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        out.mkdir(parents=True)
        write_json(out / STATE_FILE, state)
        rows = self.metrics()
        write_jsonl(out / METRICS_FILE, [r for r in rows if r.get("stage") and r["stage"] not in kept])
        for folder in sorted(self.path.iterdir()):
            if folder.is_dir() and folder.name not in kept and folder.name != DISCARDED:
                shutil.move(folder, out / folder.name)
        write_jsonl(self.path / METRICS_FILE, [r for r in rows if not r.get("stage") or r["stage"] in kept])
        self._write_state({**state, "completed": kept, "results": {k: state["results"][k] for k in kept},
                           "adapters": [a for a in state["adapters"] if Path(a).parts[0] in kept]})
        return out

    @property
    def adapters(self) -> list[Path]:
        """Adapters of completed training stages, oldest first: merged in order they rebuild the policy."""
        return [self.path / a for a in self.state["adapters"]]

    @property
    def started_with(self) -> dict[str, Any] | None:
        """The resolved config recorded when the run was made (None for runs made before it was)."""
        return self.state.get("config")

    # -- files ---------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        path = self.path / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, stage: str, event: str, /, **metrics: Any) -> None:
        """Append one JSON line to metrics.jsonl. Appending a whole line is atomic enough for a log.

        The bookkeeping keys (time, unix, stage, event) win over metrics of the same name. Only the main
        process writes: the others' rows would be copies (every logged number is shared before it is logged)."""
        if not is_main():
            return
        row = {**metrics, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "unix": time.time(), "stage": stage, "event": event}
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS_FILE
        return read_jsonl(path) if path.exists() else []
