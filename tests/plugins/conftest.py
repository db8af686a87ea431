"""Fixtures shared by the plugin tests."""

from __future__ import annotations

import pytest


def context_maker(make_ctx, policy):
    def make(**settings):
        ctx = make_ctx(**settings)
        ctx.policy = policy
        return ctx

    return make


@pytest.fixture
def model_ctx(make_ctx, shared_policy):
    """``make_ctx(**config)`` whose policy is the shared default model (read-only: never train it), in the
    dtype ``auto`` picks."""
    return context_maker(make_ctx, shared_policy)


@pytest.fixture
def model_ctx_fp32(make_ctx, shared_policy_fp32):
    """``model_ctx`` on the float32 model: for tests whose subject is not the dtype and that emulated
    bfloat16 (~7x slower scoring on a CPU without AVX512-BF16) would slow down for nothing; the backend
    tests check scoring and sampling in bfloat16."""
    return context_maker(make_ctx, shared_policy_fp32)
