"""Dataset ``bfcl``: BFCL v4 questions and accepted answers from the installed ``bfcl-eval`` package.

BFCL-half (``split_mode="half"``, the default): every category is split in two by a hash of the
sample id: ``sha256(id)``'s first 8 bytes read as a big-endian integer over 2**64 -> a number in
[0, 1); below 0.5 is ``test``, the rest ``train``. The split is deterministic, the same on every
machine and independent of file order. ``split_mode="all"`` puts every sample in both splits.

``live_relevance`` has no ground truth (any sensible call is right): all of it goes to ``test``, none
to ``train``. Its samples have ``answer=[]`` and ``meta["expects_call"]=True``.

Two live_simple entries have a required parameter whose accepted-value list is empty: no answer can
pass, and BFCL counts them (failed). They are kept for evaluation with ``meta["unanswerable"]`` (the
parameters' names) and an ``answer`` without those parameters, and go to ``test`` only.

Files are read as JSON lines by hand rather than through ``datasets``: function schemas differ from
record to record (free-form ``properties``) and multi-turn ``initial_config`` nests arbitrary state,
which Arrow cannot give one type.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from itool import hookimpl
from itool.context import per_category_subset, stable_subset
from itool.errors import ItoolError
from itool.plugins.datasets._common import RECORD_ERRORS, Malformed, SkipLog, check_split, in_split, json_records, skip_reason
from itool.plugins.formats.python_calls import PythonCallFormat, PythonFormatOptions
from itool.schemas import Message, Sample, ToolCall

SINGLE_TURN = [
    "simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
    "irrelevance", "live_irrelevance", "live_relevance",
]
MULTI_TURN = ["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context"]
GROUPS = {"single_turn": SINGLE_TURN, "multi_turn": MULTI_TURN, "all": SINGLE_TURN + MULTI_TURN}
NO_CALL_CATEGORIES = {"irrelevance", "live_irrelevance"}
NO_GROUND_TRUTH = {"live_relevance"}

# Multi-turn backend class -> its function docs in data/multi_turn_func_doc/.
CLASS_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json", "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json", "TwitterAPI": "posting_api.json", "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json", "TravelAPI": "travel_booking.json", "VehicleControlAPI": "vehicle_control.json",
}


class BfclOptions(BaseModel):
    categories: list[str] = Field(
        default_factory=lambda: list(SINGLE_TURN),
        description="BFCL categories to load, or the groups single_turn, multi_turn, all "
        "(default: the 13 single-turn categories).",
    )
    split_mode: Literal["half", "all"] = Field(
        "half", description="'half': BFCL-half, each category split 50/50 by a hash of the id; 'all': no split."
    )
    test_per_category: int | None = Field(
        None, ge=1, description="At most N test samples of each category, chosen by id hash (a stratified "
        "held-out subset; smaller categories are kept whole). Default: the whole test half.")
    dev_size: int = Field(
        0, ge=0, description="Train samples set aside as a dev slice (the first by id hash), never trained on: "
        "for choosing settings without looking at the test split.")
    heldout: Literal["test", "dev"] = Field(
        "test", description="What the test split serves: the test half, or the dev slice (dev_size > 0).")

    @model_validator(mode="after")
    def _dev_needs_size(self) -> "BfclOptions":
        if self.heldout == "dev" and self.dev_size == 0:
            raise ValueError("heldout=dev needs dev_size > 0")
        return self

    @field_validator("categories", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> list[str]:
        names = value.split(",") if isinstance(value, str) else value
        expanded: list[str] = []
        for name in (n.strip() for n in names):
            for category in GROUPS.get(name, [name]):
                if category not in GROUPS["all"]:
                    raise ValueError(f"unknown BFCL category {category!r} (known: {', '.join(GROUPS['all'])}, "
                                     f"or {', '.join(GROUPS)})")
                if category not in expanded:
                    expanded.append(category)
        return expanded


def data_dir() -> Path:
    """bfcl_eval/data, found without importing bfcl_eval (its __init__ pulls heavy dependencies)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ItoolError("bfcl: the bfcl-eval package is not installed (pip install --no-deps bfcl-eval==2026.3.23)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def expected_calls(ground_truth: list[dict[str, dict[str, list]]]) -> list[ToolCall]:
    """One call per accepted answer: each parameter's first accepted value; optional parameters (whose
    accepted values include "") and parameters with no accepted value are left out."""
    calls = []
    for entry in ground_truth:
        (name, params), = entry.items()
        if any(not isinstance(values, list) for values in params.values()):
            raise Malformed("accepted values are not a list")
        calls.append(ToolCall(name=name, arguments={p: v[0] for p, v in params.items() if v and "" not in v}))
    return calls


def unanswerable_parameters(ground_truth: list[dict[str, dict[str, list]]]) -> list[str]:
    """Parameters whose accepted-value list is empty: no answer can give them an accepted value."""
    return [p for entry in ground_truth for params in entry.values() for p, values in params.items() if values == []]


def messages(turn: list[dict[str, Any]]) -> list[Message]:
    return [Message(role=m["role"], content=m.get("content") or "") for m in turn]


class MultiTurnDocs:
    """Function docs of the multi-turn backends, read once per load."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.by_class: dict[str, list[dict[str, Any]]] = {}

    def docs(self, cls: str) -> list[dict[str, Any]]:
        if cls not in self.by_class:
            if cls not in CLASS_DOCS:
                raise Malformed(f"unknown class {cls}")
            lines = (self.folder / CLASS_DOCS[cls]).read_text(encoding="utf-8").splitlines()
            self.by_class[cls] = [json.loads(line) for line in lines if line.strip()]
        return self.by_class[cls]


def single_turn_sample(category: str, record: dict[str, Any], answer: dict[str, Any] | None) -> Sample:
    if not record.get("question"):
        raise Malformed("missing 'question'")
    meta: dict[str, Any] = {}
    if category in NO_CALL_CATEGORIES or category in NO_GROUND_TRUTH:
        calls: list[ToolCall] = []
        meta["expects_call"] = category in NO_GROUND_TRUTH
    elif answer is None or not isinstance(answer.get("ground_truth"), list):
        raise Malformed("missing answer")
    else:
        calls = expected_calls(answer["ground_truth"])
        meta["possible_answer"] = answer["ground_truth"]
        if unanswerable_parameters(answer["ground_truth"]):
            meta["unanswerable"] = unanswerable_parameters(answer["ground_truth"])
    return Sample(id=record["id"], category=category, messages=messages(record["question"][0]),
                  tools=record.get("function") or [], answer=calls, meta=meta)


def multi_turn_sample(category: str, record: dict[str, Any], answer: dict[str, Any] | None,
                      docs: MultiTurnDocs, parser: PythonCallFormat) -> Sample:
    """First turn as messages/answer; what an executor needs for the whole conversation in meta:
    ``turns`` (user messages per turn), ``ground_truth`` (call strings per turn), ``initial_config``,
    ``involved_classes``, ``excluded_function``, ``missed_function`` ({turn: [names]}) and
    ``missed_function_docs`` ({turn: [docs]}, the functions revealed at that turn; they are not in
    ``tools``, which holds what the model sees at the first turn)."""
    if not record.get("question"):
        raise Malformed("missing 'question'")
    if answer is None or not isinstance(answer.get("ground_truth"), list):
        raise Malformed("missing answer")
    ground_truth = answer["ground_truth"]
    first = parser.parse(f"[{', '.join(ground_truth[0])}]") if ground_truth else None
    if first is None or first.calls is None:
        raise Malformed("unparseable ground truth")
    excluded = set(record.get("excluded_function") or [])
    missed = record.get("missed_function") or {}
    hidden = {name for names in missed.values() for name in names}
    all_docs = [d for cls in record["involved_classes"] for d in docs.docs(cls) if d["name"] not in excluded]
    meta = {
        "initial_config": record.get("initial_config") or {},
        "involved_classes": record["involved_classes"],
        "turns": record["question"],
        "ground_truth": ground_truth,
        "excluded_function": sorted(excluded),
        "missed_function": missed,
        "missed_function_docs": {t: [d for d in all_docs if d["name"] in names] for t, names in missed.items()},
        "long_context": category == "multi_turn_long_context",
    }
    return Sample(id=record["id"], category=category, messages=messages(record["question"][0]),
                  tools=[d for d in all_docs if d["name"] not in hidden], answer=first.calls, meta=meta)


def question_file(folder: Path, category: str) -> Path:
    questions = folder / f"BFCL_v4_{category}.json"
    if not questions.is_file():
        raise ItoolError(f"bfcl: {questions} is missing; reinstall bfcl-eval==2026.3.23")
    return questions


def check(opts: BfclOptions) -> None:
    """Before a run: bfcl-eval is installed with a questions file for every category asked for."""
    folder = data_dir()
    for category in opts.categories:
        question_file(folder, category)


def load_all(opts: BfclOptions, skips: SkipLog) -> list[Sample]:
    folder = data_dir()
    docs = MultiTurnDocs(folder / "multi_turn_func_doc")
    parser = PythonCallFormat(PythonFormatOptions())
    samples = []
    for category in opts.categories:
        questions = question_file(folder, category)
        answer_file = folder / "possible_answer" / questions.name
        answers = {a.get("id"): a for a in json_records(answer_file, skips) if isinstance(a, dict)} if answer_file.is_file() else {}
        for record in json_records(questions, skips):
            try:
                answer = answers.get(record.get("id"))
                if category in MULTI_TURN:
                    samples.append(multi_turn_sample(category, record, answer, docs, parser))
                else:
                    samples.append(single_turn_sample(category, record, answer))
            except RECORD_ERRORS as exc:
                skips.skip(skip_reason(exc))
    return samples


def load(split: str, opts: BfclOptions) -> list[Sample]:
    """BFCL v4 from the installed bfcl-eval, split 50/50 per category by id hash (BFCL-half)."""
    check_split(split)
    skips = SkipLog("bfcl")
    samples = load_all(opts, skips)
    skips.report()
    if opts.split_mode == "all":
        if split == "train":
            return [s for s in samples if "unanswerable" not in s.meta]
        limited = split == "test" and opts.test_per_category is not None
        return per_category_subset(samples, opts.test_per_category) if limited else samples
    if split == "all":
        return samples
    train = [s for s in samples if in_half(s, "train")]
    dev = stable_subset(train, opts.dev_size) if opts.dev_size else []
    if split == "train":
        return [s for s in train if s not in dev]
    if opts.heldout == "dev":
        return dev
    return per_category_subset([s for s in samples if in_half(s, "test")], opts.test_per_category)


def in_half(sample: Sample, split: str) -> bool:
    if sample.category in NO_GROUND_TRUTH or "unanswerable" in sample.meta:
        return split != "train"
    return in_split(sample.id, split, 0.5)


@hookimpl
def register_datasets(register):
    register("bfcl", load, options=BfclOptions, check=check)
