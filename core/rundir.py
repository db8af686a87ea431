"""The run directory: resolved config, metrics.jsonl, one folder per stage, and the state file.

Every file is written to a temporary name in the same folder and renamed into place, so a killed run
never leaves a half-written file; a stage counts as done only once ``state.json`` says so, and that is
written after all of the stage's outputs.
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

from pydantic import BaseModel

from itool.errors import ItoolError

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Works for files and for folders (e.g. a PEFT adapter written by ``save_pretrained``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / "out"
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


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


class RunDir:
    """One run's folder. Stages are named like ``warmup`` or ``round1.search``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir: Path, name: str | None) -> "RunDir":
        name = name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
        path = Path(runs_dir) / name
        if (path / STATE_FILE).exists():
            raise ItoolError(f"run directory {path} already exists; resume it with --resume {path}")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run._write_state({"completed": [], "adapters": [], "results": {}})
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / STATE_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            raise ItoolError(f"not a run directory (no {STATE_FILE} or {CONFIG_FILE}): {path}")
        return cls(path)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.path / STATE_FILE).read_text(encoding="utf-8"))

    def _write_state(self, state: dict[str, Any]) -> None:
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
            state["adapters"].append(str(Path(adapter).relative_to(self.path)))
        self._write_state(state)

    @property
    def adapters(self) -> list[Path]:
        """Adapters of completed training stages, oldest first: merged in order they rebuild the policy."""
        return [self.path / a for a in self.state["adapters"]]

    # -- files ---------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        path = self.path / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, stage: str, event: str, /, **metrics: Any) -> None:
        """Append one JSON line to metrics.jsonl. Appending a whole line is atomic enough for a log.

        The bookkeeping keys (time, unix, stage, event) win over metrics of the same name."""
        row = {**metrics, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "unix": time.time(), "stage": stage, "event": event}
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS_FILE
        return read_jsonl(path) if path.exists() else []
