"""What itool keeps once per machine: the cache folder, and the evaluations of untrained models in it.

An evaluation of the model as it was loaded (no adapter of the config or of the run merged into it) is
the same in every run that loads the same weights in the same precision and asks the same questions in
the same way, so a run finds it here instead of spending the largest stage of a short run on it again
(the Base row of the default run, of every repeated run, of each run of an experiment).

The key is everything the verdicts can depend on: the model and its loader's options, the dtype and
device type the model was loaded in, the samples (their content, not only their ids), the stage and
seed, the evaluator, backend and format with their options, the source files of the packages those
components and every other loaded plugin come from (a ``model_loaded`` hook may change the model), and
the version of every installed distribution (torch, transformers, the dataset's package). Any change to
any of them is a miss, never a stale hit.

``$ITOOL_EVAL_CACHE`` moves the evaluations elsewhere (default ``<cache>/evaluations``); ``off`` turns
the cache off.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from itool.journal import plan_hash
from itool.rundir import atomic_path, read_jsonl, write_json, write_jsonl

EVAL_CACHE_VARIABLE = "ITOOL_EVAL_CACHE"


def cache_root() -> Path:
    """Where itool caches what it builds once per machine: ``$ITOOL_CACHE`` or ``~/.cache/itool``."""
    return Path(os.environ.get("ITOOL_CACHE") or Path.home() / ".cache" / "itool").expanduser()


def evaluation_cache_root() -> Path | None:
    """The folder of cached evaluations, or None when ``$ITOOL_EVAL_CACHE`` is ``off``."""
    value = os.environ.get(EVAL_CACHE_VARIABLE, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else cache_root() / "evaluations"


@cache
def installed_distributions() -> tuple[tuple[str, str], ...]:
    return tuple(sorted({(d.metadata["Name"] or "", d.version) for d in importlib.metadata.distributions()}))


def source_digest(modules: Iterable[str]) -> str:
    """A hash of the Python source of the top-level packages of ``modules``: every ``.py`` file under the
    folders their loaded modules come from (a helper module of a component changes the hash too); a
    top-level module that is not a package counts with its own file only."""
    files: set[Path] = set()
    for top in {name.split(".")[0] for name in modules}:
        module = sys.modules.get(top)
        if module is not None and not hasattr(module, "__path__") and getattr(module, "__file__", None):
            files.add(Path(module.__file__))
            continue
        folders = {Path(m.__file__).parent for name, m in list(sys.modules.items())
                   if name.split(".")[0] == top and getattr(m, "__file__", None)}
        files |= {f for folder in folders for f in folder.rglob("*.py")}
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(str(file).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def model_files(model: str) -> list[tuple[str, int, int]] | None:
    """A local model's files with their sizes and modification times (a model folder trained again in
    place is then another key); None for a hub id or an alias (their version is in the key otherwise)."""
    path = Path(model).expanduser()
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    return [(str(f), stat.st_size, stat.st_mtime_ns) for f in files for stat in [f.stat()]]


class EvaluationCache:
    """The cached evaluation under one key: ``verdicts.jsonl`` and ``summary.json`` as the stage writes
    them, beside ``key.json`` (what the hash stands for, for a person looking into the folder)."""

    def __init__(self, root: Path, key: dict[str, Any]):
        self.key = key
        self.path = root / plan_hash(key)[:32]

    def load(self) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        try:
            verdicts = read_jsonl(self.path / "verdicts.jsonl")
            summary = json.loads((self.path / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or damaged by hand: evaluate again
            return None
        return verdicts, summary

    def store(self, verdicts: list[BaseModel], summary: dict[str, Any]) -> None:
        """Written whole or not at all (one rename), so a concurrent or killed writer leaves no half entry."""
        with atomic_path(self.path) as tmp:
            tmp.mkdir()
            write_jsonl(tmp / "verdicts.jsonl", verdicts)
            write_json(tmp / "summary.json", summary)
            write_json(tmp / "key.json", self.key)
