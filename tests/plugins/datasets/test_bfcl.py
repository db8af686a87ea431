"""bfcl: the real BFCL v4 files shipped in bfcl-eval, BFCL-half, ground truth and multi-turn meta."""

from __future__ import annotations

import hashlib

import pytest

from itool.errors import ItoolError
from itool.schemas import ToolCall


@pytest.fixture(scope="module")
def single_turn(registry):
    component = registry.get("dataset", "bfcl")
    opts = component.parse_options({})
    return {split: component.obj(split, opts) for split in ("train", "test", "all")}


def test_default_is_the_13_single_turn_categories_split_in_half(single_turn):
    train, test = single_turn["train"], single_turn["test"]
    assert {s.category for s in single_turn["all"]} == {
        "simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
        "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
        "irrelevance", "live_irrelevance", "live_relevance"}
    assert not {s.id for s in train} & {s.id for s in test}
    assert len(train) + len(test) == len(single_turn["all"])
    assert 0.45 < len(train) / len(single_turn["all"]) < 0.55


def test_half_split_is_a_documented_hash_of_the_id(single_turn):
    for sample in single_turn["test"][:50]:
        if sample.category != "live_relevance":
            assert int.from_bytes(hashlib.sha256(sample.id.encode()).digest()[:8], "big") < 2**63


def test_ground_truth_takes_first_accepted_values_and_drops_optional_parameters(single_turn):
    by_id = {s.id: s for s in single_turn["all"]}
    triangle = by_id["simple_python_0"]  # unit: ["units", ""] is optional
    assert triangle.answer == [ToolCall(name="calculate_triangle_area", arguments={"base": 10, "height": 5})]
    assert triangle.meta["possible_answer"][0]["calculate_triangle_area"]["unit"] == ["units", ""]
    assert by_id["simple_python_1"].answer[0].name == "math.factorial"
    assert len(by_id["parallel_0"].answer) == 2
    assert by_id["irrelevance_0"].answer == [] and by_id["irrelevance_0"].tools


def test_live_relevance_has_no_ground_truth_so_it_is_test_only(single_turn):
    assert not [s for s in single_turn["train"] if s.category == "live_relevance"]
    relevance = [s for s in single_turn["test"] if s.category == "live_relevance"]
    assert relevance and all(s.meta["expects_call"] for s in relevance)


def test_multi_turn_samples_carry_what_an_executor_needs(registry):
    component = registry.get("dataset", "bfcl")
    samples = component.obj("all", component.parse_options({"categories": "multi_turn_miss_func", "split_mode": "all"}))
    sample = next(s for s in samples if s.id == "multi_turn_miss_func_0")
    assert sample.answer[0] == ToolCall(name="cd", arguments={"folder": "document"})
    assert sample.meta["involved_classes"] == ["TwitterAPI", "GorillaFileSystem"]
    assert "GorillaFileSystem" in sample.meta["initial_config"]
    assert len(sample.meta["turns"]) == len(sample.meta["ground_truth"]) == 5
    assert sample.meta["ground_truth"][3] == ["sort('final_report.pdf')"]
    names = {t["name"] for t in sample.tools}
    assert "sort" not in names and "cp" not in names and {"mv", "post_tweet"} <= names  # missed, excluded
    assert [d["name"] for d in sample.meta["missed_function_docs"]["3"]] == ["sort"]


def test_category_groups_and_unknown_categories(registry):
    component = registry.get("dataset", "bfcl")
    assert len(component.parse_options({"categories": ["all"]}).categories) == 17
    assert component.parse_options({"categories": "multi_turn"}).categories[0] == "multi_turn_base"
    with pytest.raises(ItoolError, match="dataset.options.categories.*unknown BFCL category 'simple_rust'"):
        component.parse_options({"categories": ["simple_rust"]})


def test_entries_no_answer_can_pass_are_kept_for_evaluation_only(single_turn, registry, caplog):
    """Two live_simple entries leave a required parameter without any accepted value; BFCL counts them."""
    component = registry.get("dataset", "bfcl")
    live_simple = component.obj("all", component.parse_options({"categories": ["live_simple"]}))
    assert len(live_simple) == 258 and "skipped" not in caplog.text
    unanswerable = {s.id: s.meta["unanswerable"] for s in live_simple if "unanswerable" in s.meta}
    assert unanswerable == {"live_simple_106-63-0": ["auto_loan_payment_start", "bank_hours_start"],
                            "live_simple_112-68-0": ["acc_routing_start", "atm_finder_start", "faq_link_accounts_start",
                                                     "get_balance_start", "get_transactions_start"]}
    assert set(unanswerable) <= {s.id for s in single_turn["test"]}
    assert not set(unanswerable) & {s.id for s in single_turn["train"]}


def test_the_early_check_finds_the_installed_bfcl_data(registry):
    component = registry.get("dataset", "bfcl")
    component.attrs["check"](component.parse_options({"categories": ["all"]}))


def test_a_stratified_test_subset_caps_each_category_and_keeps_small_ones_whole(single_turn, registry):
    component = registry.get("dataset", "bfcl")
    capped = component.obj("test", component.parse_options({"test_per_category": 40}))
    whole = {}
    for sample in single_turn["test"]:
        whole.setdefault(sample.category, []).append(sample.id)
    kept = {}
    for sample in capped:
        kept.setdefault(sample.category, []).append(sample.id)
    assert kept.keys() == whole.keys()
    for category, ids in whole.items():
        assert len(kept[category]) == min(40, len(ids))
        assert set(kept[category]) <= set(ids)
    assert len(kept["live_parallel"]) == len(whole["live_parallel"]) < 40  # kept whole
    again = component.obj("test", component.parse_options({"test_per_category": 40}))
    assert [s.id for s in again] == [s.id for s in capped]  # by id hash: the same subset every time


def test_a_dev_slice_comes_out_of_the_train_half_and_is_never_trained_on(single_turn, registry):
    component = registry.get("dataset", "bfcl")
    train = component.obj("train", component.parse_options({"dev_size": 30}))
    dev = component.obj("test", component.parse_options({"dev_size": 30, "heldout": "dev"}))
    test = component.obj("test", component.parse_options({"dev_size": 30}))
    assert len(dev) == 30
    assert {s.id for s in dev} <= {s.id for s in single_turn["train"]}
    assert not {s.id for s in dev} & {s.id for s in train}
    assert len(train) + len(dev) == len(single_turn["train"])
    assert [s.id for s in test] == [s.id for s in single_turn["test"]]
    with pytest.raises(ItoolError, match="heldout=dev needs dev_size"):
        component.parse_options({"heldout": "dev"})
