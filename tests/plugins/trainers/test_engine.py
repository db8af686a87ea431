"""The Trainer engine's own decisions: token-capped parts, which checkpoint a stage resumes, reporter options."""

from __future__ import annotations

import json

import pytest

from itool.errors import ItoolError
from itool.plugins.trainers.engine import (
    COMPLETE, ProcessShare, last_checkpoint, plan_key, token_parts, training_arguments,
)
from itool.plugins.trainers.engine_options import EngineOptions


def test_parts_stay_within_the_token_cap_and_keep_the_order():
    sizes = {"a": 3, "b": 3, "c": 5, "d": 1, "e": 9}
    parts = list(token_parts(list(sizes), sizes.get, max_tokens=7))
    # padded size = rows × longest: [a, b] is 6, adding c would be 15; c alone is 5, [c, d] 10 > 7
    assert parts == [["a", "b"], ["c"], ["d"], ["e"]]  # e alone is over the cap: it still runs
    assert list(token_parts(list(sizes), sizes.get, max_tokens=None)) == [list(sizes)]


@pytest.mark.parametrize("processes", [1, 2, 3, 4])
def test_the_processes_share_each_micro_batch_in_order_and_step_together(processes):
    shares = [list(ProcessShare(7, 3, processes, index)) for index in range(processes)]
    # micro-batches [0,1,2] [3,4,5] [6]: every process reads three, together they read each one whole
    assert all(len(share) == 3 for share in shares)
    for k, whole in enumerate([[0, 1, 2], [3, 4, 5], [6]]):
        assert [row for share in shares for row in share[k]] == whole
    if processes == 2:
        assert shares == [[[0, 1], [3, 4], [6]], [[2], [5], []]]  # a share may be empty: it still steps


@pytest.mark.parametrize("quantize,optimiser", [("none", "adamw_torch"), ("4bit", "paged_adamw_32bit")])
def test_the_trainer_reads_the_runs_quantize_switch(make_ctx, shared_policy, quantize, optimiser):
    ctx = make_ctx(quantize=quantize)
    ctx.policy = shared_policy
    args = training_arguments(ctx, EngineOptions(), lr=1e-4, batch_size=4, grad_accum=1, warmup_ratio=0.1,
                              total_steps=10, seed=0)
    assert args.optim == optimiser  # QLoRA trains with the paged AdamW


def checkpoint(folder, step: int, plan: str, complete: bool = True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / COMPLETE).write_text(json.dumps({"plan": plan, "totals": {}}))
    return path


def test_the_newest_complete_checkpoint_of_the_same_plan_is_resumed(tmp_path):
    assert last_checkpoint(tmp_path / "none", "p") is None
    checkpoint(tmp_path, 2, "p")
    newest = checkpoint(tmp_path, 10, "p")
    checkpoint(tmp_path, 12, "p", complete=False)  # killed while saving: not whole
    assert last_checkpoint(tmp_path, "p") == newest


def test_checkpoints_of_another_plan_are_deleted_not_resumed(tmp_path):
    folder = tmp_path / "checkpoints"
    checkpoint(folder, 4, "old data")
    assert last_checkpoint(folder, "new data") is None and not folder.exists()


def test_the_plan_ignores_where_things_are_written_but_not_what_is_trained():
    opts = EngineOptions()
    assert plan_key(opts, [1, 2]) == plan_key(EngineOptions(report_to=[], checkpoint_steps=5), [1, 2])
    assert plan_key(opts, [1, 2]) != plan_key(opts, [2, 1])
    assert plan_key(opts, [1]) != plan_key(EngineOptions(gradient_checkpointing=True), [1])


@pytest.mark.parametrize("given,expected", [("wandb", ["wandb"]), ("tensorboard, wandb", ["tensorboard", "wandb"]),
                                            ("none", []), ([], []), (["mlflow"], ["mlflow"])])
def test_report_to_takes_one_name_a_comma_list_or_a_list(given, expected):
    assert EngineOptions(report_to=given).report_to == expected


def test_an_unknown_trainer_option_is_refused(registry):
    with pytest.raises(ItoolError, match="checkpoint_step"):
        registry.get("trainer", "lora").parse_options({"checkpoint_step": 5})
    with pytest.raises(ItoolError, match="report_too"):
        registry.get("warmup", "curriculum").parse_options({"report_too": "wandb"})
