"""The package's tests run from its source whether or not it is installed (it is opt-in)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "packages" / "itool-cpu-kernels"
if str(PACKAGE) not in sys.path:
    sys.path.insert(0, str(PACKAGE))


@pytest.fixture(scope="session")
def kernel_policy():
    """The default model in float32, loaded by the transformers loader while this package is a plugin:
    what a user who installed it gets."""
    import itool.cli
    from itool.registry import Registry

    registry = Registry(extra_modules=["itool_cpu_kernels"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(itool.cli, "_registry", registry)  # the registry whose hooks the loader calls
        loader = registry.get("model", "transformers")
        return loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="float32")
