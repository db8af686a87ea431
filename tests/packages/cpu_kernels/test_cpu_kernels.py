"""The compiled CPU kernels: built once per machine and cached; without a compiler, torch's kernels run."""

from __future__ import annotations

import torch

from itool_cpu_kernels.cpu_kernels import library
from itool_cpu_kernels.grouped_attention import decode_attention
from itool_cpu_kernels.small_batch_linear import SmallBatchLinear


def test_the_kernels_build_on_this_machine():
    assert library() is not None


def test_a_fresh_cache_builds_the_library_once(monkeypatch, tmp_path):
    monkeypatch.setenv("ITOOL_CACHE", str(tmp_path))
    library.cache_clear()
    try:
        assert library() is not None
        built = list((tmp_path / "kernels").glob("*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        library.cache_clear()
        assert library() is not None and built[0].stat().st_mtime_ns == stamp
    finally:
        library.cache_clear()


def test_without_a_compiler_torch_kernels_run(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("ITOOL_CACHE", str(tmp_path))
    library.cache_clear()
    try:
        with caplog.at_level("INFO"):
            assert library() is None
        assert "could not build" in caplog.text
        torch.manual_seed(0)
        stock = torch.nn.Linear(64, 96)
        fast = torch.nn.Linear(64, 96)
        fast.load_state_dict(stock.state_dict())
        fast.__class__ = SmallBatchLinear
        x = torch.randn(3, 64)
        with torch.inference_mode():
            assert torch.equal(fast(x), stock(x))
        assert decode_attention(torch.randn(2, 9, 1, 64), torch.randn(2, 3, 5, 64), torch.randn(2, 3, 5, 64),
                                None, None) is None
    finally:
        library.cache_clear()
