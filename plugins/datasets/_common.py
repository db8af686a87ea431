"""Shared by the dataset plugins: skipped-record accounting, the hash split and file reading."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, Field

from itool.errors import ItoolError
from itool.rundir import read_user_text
from itool.schemas import Sample

logger = logging.getLogger("itool.datasets")
SPLITS = ("train", "test", "all")


class SkipLog:
    """Counts skipped records by reason and logs one summary line, e.g.
    ``bfcl: skipped 3 records (2 missing 'question', 1 bad json)``.

    The log record carries ``dataset`` and ``skipped`` (reason -> count) so that ``itool data stats``
    can show the counts of any dataset plugin that uses this class."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.reasons: Counter[str] = Counter()

    def skip(self, reason: str) -> None:
        self.reasons[reason] += 1

    def report(self) -> None:
        total = sum(self.reasons.values())
        if total:
            detail = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
            logger.warning(f"{self.dataset}: skipped {total} records ({detail})",
                           extra={"dataset": self.dataset, "skipped": dict(self.reasons)})


class Malformed(ValueError):
    """A record that cannot become a Sample; the message is the reason counted by SkipLog."""


RECORD_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError)  # pydantic's are ValueErrors


def skip_reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, Malformed) else "malformed record"


def collect_samples(records: Iterable[Any], make: Callable[[int, Any], Sample | list[Sample]], skips: SkipLog) -> list[Sample]:
    """The sample(s) ``make(index, record)`` builds from each record; a malformed record is skipped and
    its reason counted."""
    samples: list[Sample] = []
    for index, record in enumerate(records):
        try:
            made = make(index, record)
        except RECORD_ERRORS as exc:
            skips.skip(skip_reason(exc))
            continue
        samples.extend(made if isinstance(made, list) else [made])
    return samples


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ItoolError(f"unknown split {split!r} (use {', '.join(SPLITS)})")


def test_share(sample_id: str) -> float:
    """Where an id falls in [0, 1): the first 8 bytes of sha256(id) as a fraction. Deterministic
    across machines and Python versions (unlike ``hash``), and independent of file order."""
    return int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "big") / 2**64


def in_split(sample_id: str, split: str, test_fraction: float) -> bool:
    if split == "all":
        return True
    return (test_share(sample_id) < test_fraction) == (split == "test")


def conversation_key(sample: Sample) -> str:
    """Samples cut from one conversation share ``meta["conversation"]``, so they share a split."""
    return str(sample.meta.get("conversation", sample.id))


def select_split(samples: list[Sample], split: str, test_fraction: float,
                 key: Callable[[Sample], str] = conversation_key) -> list[Sample]:
    check_split(split)
    return [s for s in samples if in_split(key(s), split, test_fraction)]


class FileDatasetOptions(BaseModel):
    """Options of the datasets read from a local file."""

    path: Path | None = Field(None, description="The data file (.json array or .jsonl).")
    test_fraction: float = Field(0.1, ge=0, le=1, description="Share of records (by id hash) in the test split.")


@dataclass(frozen=True)
class FileDataset:
    """A dataset read from one local file: where its records come from, and how one record becomes
    its sample(s) (raising one of ``RECORD_ERRORS`` for a malformed record)."""

    name: str
    records: Callable[[Path, SkipLog], Iterable[Any]]
    make: Callable[[int, Any], Sample | list[Sample]]
    split_key: Callable[[Sample], str] = conversation_key

    def load(self, split: str, opts: FileDatasetOptions) -> list[Sample]:
        """Read every record (counting skips), log the summary, then split."""
        check_split(split)
        path = require_file(opts.path, self.name)
        skips = SkipLog(self.name)
        samples = collect_samples(self.records(path, skips), self.make, skips)
        skips.report()
        if not samples:
            raise self.nothing_read(path, skips)
        return select_split(samples, split, opts.test_fraction, self.split_key)

    def check(self, opts: FileDatasetOptions) -> None:
        """Before a run: the file exists, is UTF-8 text, is not empty and has a record that makes a
        sample (reading stops at the first one)."""
        path = require_file(opts.path, self.name)
        skips = SkipLog(self.name)
        for index, record in enumerate(self.records(path, skips)):
            try:
                self.make(index, record)
                return
            except RECORD_ERRORS as exc:
                skips.skip(skip_reason(exc))
        raise self.nothing_read(path, skips)

    def nothing_read(self, path: Path, skips: SkipLog) -> ItoolError:
        if not skips.reasons:
            return ItoolError(f"{self.name}: {path} holds no records")
        detail = ", ".join(f"{n} {reason}" for reason, n in skips.reasons.most_common())
        return ItoolError(f"{self.name}: none of the {sum(skips.reasons.values())} records in {path} "
                          f"is usable ({detail})")


def require_file(path: Path | None, dataset: str) -> Path:
    if path is None:
        raise ItoolError(f"{dataset}: set the data file with --dataset-opt path=FILE (.json or .jsonl)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ItoolError(f"{dataset}: data file not found: {path}")
    return path


def data_text(path: Path, dataset: str) -> str:
    """The file's text, or one line saying why it is not usable data (unreadable, not UTF-8, empty)."""
    text = read_user_text(path, f"{dataset}: data file")
    if not text.strip():
        raise ItoolError(f"{dataset}: data file {path} is empty")
    return text


def json_records(path: Path, skips: SkipLog) -> Iterator[Any]:
    """Records of a JSON array file or a JSON-lines file; undecodable lines are skipped as 'bad json'."""
    text = data_text(path, skips.dataset)
    if text.lstrip().startswith("["):
        try:
            yield from json.loads(text)
            return
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise ItoolError(f"{skips.dataset}: {path} is not valid JSON: {reason}") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            skips.skip("bad json")


def arrow_records(path: Path, skips: SkipLog) -> Iterator[dict[str, Any]]:
    """Records read through the ``datasets`` library, for files whose schema Arrow can type."""
    data_text(path, skips.dataset)  # Arrow's own errors for an empty or binary file are far from one line
    import datasets

    datasets.disable_progress_bars()
    arrow_log = logging.getLogger("datasets")
    level = arrow_log.level
    arrow_log.setLevel(logging.CRITICAL)  # it logs its failure too: the user gets the one line below
    try:
        table = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as exc:  # Arrow/JSON errors come in many types; the user needs one line, the root cause's
        while exc.__cause__ is not None:
            exc = exc.__cause__
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ItoolError(f"{skips.dataset}: cannot read {path}: {first}") from None
    finally:
        arrow_log.setLevel(level)
    yield from table


def json_value(text: Any, what: str) -> Any:
    """A JSON value stored as a string inside a record."""
    if not isinstance(text, str):
        raise Malformed(f"missing '{what}'")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise Malformed(f"bad json in '{what}'") from None
