"""A stage's journal: the finished pieces of a long stage (e.g. chunks of samples), kept in the stage
folder so that a stage that was killed, when it runs again, does only the pieces that are missing.

The journal is an append-only JSON-lines file. Its first line names the *plan* (a hash of what the stage
means to do, e.g. the sample ids of each chunk): a journal written for another plan is started afresh,
never mixed in. Each further line is one finished piece, its key and its rows, appended whole and
flushed to disk before the next piece starts. A last line cut short by a kill is dropped when the journal
is opened again, so that piece is simply done again.

Rows are kept as the JSON values they were written as, and a stage builds its outputs from these rows
whether they were just made or read back: a resumed stage's outputs are then the unbroken one's, byte
for byte, by construction.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from itool.rundir import write_text

FORMAT = 1


def plan_hash(plan: Any) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def as_json(row: BaseModel | Any) -> Any:
    """A row as the JSON value it is written as (a pydantic model as its ``model_dump_json``)."""
    return json.loads(row.model_dump_json()) if isinstance(row, BaseModel) else row


class Journal:
    """The finished pieces of one plan, read back from ``path`` (pieces: key -> rows, in the order done)."""

    def __init__(self, path: Path, plan: Any):
        self.path = Path(path)
        self.plan = plan_hash(plan)
        self.pieces: dict[str, list[Any]] = self._read()

    def _read(self) -> dict[str, list[Any]]:
        """The pieces of a journal of this plan, its file cut back to its last whole line; any other
        file at ``path`` (another plan, no header, damaged) is replaced by a fresh journal."""
        data = self.path.read_bytes() if self.path.is_file() else b""
        lines = data.split(b"\n")[:-1]  # what follows the last newline is a line cut short
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                break
            if entries and not (isinstance(entry, dict) and isinstance(entry.get("piece"), str)
                                and isinstance(entry.get("rows"), list)):
                break
            entries.append(entry)
        if not entries or entries[0] != {"journal": FORMAT, "plan": self.plan}:
            write_text(self.path, json.dumps({"journal": FORMAT, "plan": self.plan}) + "\n")
            return {}
        kept = sum(len(line) + 1 for line in lines[: len(entries)])
        if kept < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(kept)
        return {entry["piece"]: entry["rows"] for entry in entries[1:]}

    def __contains__(self, key: str) -> bool:
        return key in self.pieces

    def record(self, key: str, rows: Iterable[BaseModel | Any]) -> list[Any]:
        """Append piece ``key`` with its rows (pydantic models or JSON values); returns the rows as a
        resumed stage will read them back."""
        line = json.dumps({"piece": key, "rows": [as_json(row) for row in rows]}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.pieces[key] = json.loads(line)["rows"]
        return self.pieces[key]

    def remove(self) -> None:
        """Delete the journal once the stage's outputs are written: it has served its purpose."""
        self.path.unlink(missing_ok=True)
