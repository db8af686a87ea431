"""Fixtures shared by the plugin tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def model_ctx(make_ctx, shared_policy):
    """``make_ctx(**config)`` whose policy is the shared default model (read-only: never train it)."""

    def make(**settings):
        ctx = make_ctx(**settings)
        ctx.policy = shared_policy
        return ctx

    return make
