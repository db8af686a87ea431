"""Loading datasets through the registry, as the loop does."""

from __future__ import annotations

import pytest


@pytest.fixture
def load_dataset(registry):
    """``load_dataset("xlam", "all", path=...)``: the registered loader with validated options."""

    def load(name: str, split: str = "all", **options):
        component = registry.get("dataset", name)
        return component.obj(split, component.parse_options(options))

    return load
