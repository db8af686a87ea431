"""``itool data``: look at a dataset before training on it."""

from __future__ import annotations

import logging
from collections import Counter

import click

from itool import hookimpl
from itool.plugins.datasets.buckets import BUCKETS, bucket


class SkipCollector(logging.Handler):
    """Collects the skipped-record counts that dataset plugins log through ``SkipLog``."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.skipped.update(getattr(record, "skipped", {}))


def load_counting_skips(load, split: str, opts) -> tuple[list, Counter[str]]:
    collector = SkipCollector()
    logger = logging.getLogger("itool.datasets")
    logger.addHandler(collector)
    try:
        return load(split, opts), collector.skipped
    finally:
        logger.removeHandler(collector)


@click.group()
def data() -> None:
    """Inspect datasets: split sizes, curriculum buckets, skipped records."""


@data.command()
@click.argument("name")
@click.option("--dataset-opt", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="Set an option of the dataset (repeatable; see `itool plugins dataset NAME`).")
def stats(name: str, dataset_opts: tuple[str, ...]) -> None:
    """Per-category train/test counts and the easy/medium/hard buckets of the train split."""
    from rich.console import Console
    from rich.table import Table

    from itool.cli import get_registry
    from itool.config import parse_option

    component = get_registry().get("dataset", name)
    opts = component.parse_options(dict(parse_option(o, "--dataset-opt") for o in dataset_opts))
    train, skipped = load_counting_skips(component.obj, "train", opts)
    test, _ = load_counting_skips(component.obj, "test", opts)  # same records, same skips

    counts: dict[str, Counter[str]] = {}
    for split, samples in (("train", train), ("test", test)):
        for sample in samples:
            row = counts.setdefault(sample.category or name, Counter())
            row[split] += 1
            if split == "train":
                row[bucket(sample)] += 1
    columns = ["train", "test", *BUCKETS]
    table = Table("category", *columns, title=f"{name}: train/test split and train buckets")
    for category in sorted(counts):
        table.add_row(category, *(str(counts[category][c]) for c in columns))
    totals = sum(counts.values(), Counter())
    table.add_row("total", *(str(totals[c]) for c in columns), style="bold")
    console = Console()
    console.print(table)
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    console.print(f"skipped records: {sum(skipped.values())}" + (f" ({detail})" if detail else ""), soft_wrap=True)


@hookimpl
def register_commands(cli):
    cli.add_command(data)
