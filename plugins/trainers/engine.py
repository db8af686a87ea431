"""Training on ``transformers.Trainer`` for the warm-ups and the preference trainer.

The Trainer (accelerate underneath) owns the optimisation: AdamW with linear warm-up and decay, gradient
accumulation, clipping, mixed precision, gradient checkpointing, reporters (TensorBoard by default) and
resumable checkpoints. What stays here is what the Trainer cannot know:

- **The order.** The examples arrive already laid out (epochs, curriculum buckets); micro-batches are
  read from that order as given, so nothing is shuffled across buckets and a resumed run skips exactly
  the micro-batches it already did.
- **Several processes.** ``batch_size`` is the whole micro-batch, whatever the number of processes:
  each process trains on its contiguous share of it (:class:`ProcessShare`), the gradients are
  averaged, and every loss is scaled so that the average is the one-process gradient. N processes
  therefore train what one does with the same options (up to float rounding). A process whose share
  is empty (a last micro-batch shorter than the processes) still joins the gradient exchange with a
  zero loss. Step metrics, running totals and the reference log-probs are shared, and only the main
  process writes (``itool.processes``).
- **The loss.** A subclass computes the loss of some examples (completion log-probs, a loss plugin).
  Each example has a *weight* (SFT: its answer tokens; preference: 1 per pair); a micro-batch's loss is
  the sum of its examples' losses divided by the whole optimiser step's weight (over every process),
  so gradient accumulation weighs every example as one big batch would, and a short last step (fewer
  micro-batches) counts as a full step, as the Trainer does: it is the mean over its own examples.
- **The token cap.** A micro-batch whose padded size would pass ``max_tokens`` runs as several
  forward/backward passes (memory: 8 × 1024 tokens with gradients needed over 24 GB); by the weighting
  above the parts add up to the gradient of the whole micro-batch.
- **The stage folder.** Checkpoints go to ``<stage>/checkpoints`` (the last two kept, each marked
  complete only once fully written); a re-run of the stage (``itool run --resume``) continues from the
  newest complete one made for the same data and options, and they are deleted once the adapter is
  saved. TensorBoard events go to ``<stage>/tensorboard``; every logged step also becomes a row of
  ``metrics.jsonl`` through ``ctx.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from itool import processes
from itool.components import PreferenceBatch
from itool.plugins.trainers.engine_options import EngineOptions
from itool.plugins.trainers.lora import forward_pairs, pair_lengths, pair_tokens
from itool.plugins.training import collate, save_and_merge, sequence_logps
from itool.rundir import write_json

CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
COMPLETE = "itool_checkpoint.json"  # written last into a checkpoint: the marker that it is whole
T = TypeVar("T")


def token_parts(items: Sequence[T], tokens: Callable[[T], int], max_tokens: int | None) -> Iterator[list[T]]:
    """``items`` in consecutive parts whose padded size (count × longest) stays within ``max_tokens``
    (a single item always makes a part)."""
    part: list[T] = []
    longest = 0
    for item in items:
        size = tokens(item)
        if part and max_tokens is not None and (len(part) + 1) * max(longest, size) > max_tokens:
            yield part
            part, longest = [], 0
        part.append(item)
        longest = max(longest, size)
    if part:
        yield part


def rows_batch(rows: list[int]) -> dict[str, torch.Tensor]:
    """The collator: a micro-batch is the positions of its examples in the laid-out order."""
    return {"rows": torch.tensor(rows, dtype=torch.long)}


class ProcessShare(Sampler):
    """This process's share of each micro-batch, in order. Micro-batch k is positions
    ``[k·batch_size, (k+1)·batch_size)`` of the laid-out order, cut into ``processes`` contiguous parts
    of near-equal size; this process reads part ``index``, which is empty when the micro-batch has fewer
    examples than there are processes. Every process reads as many micro-batches, so all take their
    optimiser steps together.

    Not accelerate's sharding of a sampler: that fills a short last micro-batch with repeated examples."""

    def __init__(self, n_examples: int, batch_size: int, processes: int, index: int):
        self.n_examples, self.batch_size, self.processes, self.index = n_examples, batch_size, processes, index

    def __len__(self) -> int:
        return math.ceil(self.n_examples / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, self.n_examples, self.batch_size):
            size = min(self.batch_size, self.n_examples - start)
            share, extra = divmod(size, self.processes)
            first = start + self.index * share + min(self.index, extra)
            yield list(range(first, first + share + (self.index < extra)))


class ExampleTrainer(Trainer):
    """A Trainer over ``n`` examples that the subclass holds, read in their given order.

    Subclasses implement ``example_tokens(row)`` (padded tokens the example adds to a forward pass),
    ``example_weight(row)`` and ``part_loss(model, part, batch)``: the *sum* of the weighted losses of
    the examples at positions ``part``, which are some of the micro-batch ``batch``. They may add to
    ``self.totals`` (kept in checkpoints, so they survive a resume) and call ``self.record`` for step
    metrics (means over the examples since the last log)."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the optimiser step's weight itself

    def __init__(self, *, model: Any, args: TrainingArguments, n_examples: int, batch_size: int,
                 max_tokens: int | None, callbacks: list[TrainerCallback] | None = None):
        super().__init__(model=model, args=args, train_dataset=range(n_examples), data_collator=rows_batch,
                         callbacks=callbacks)
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.totals: dict[str, float] = defaultdict(float)
        self._step_sums: dict[str, float] = defaultdict(float)
        self.remove_callback(ProgressCallback)
        if not args.disable_tqdm:
            self.add_callback(QuietProgress)

    # -- what a subclass says about its examples --------------------------------------------------------
    def example_tokens(self, row: int) -> int:
        raise NotImplementedError

    def example_weight(self, row: int) -> float:
        raise NotImplementedError

    def part_loss(self, model: Any, part: list[int], batch: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def record(self, count: int, **sums: float) -> None:
        """Add sums over ``count`` examples to this step's metrics (logged as means)."""
        self._step_sums["n"] += count
        for key, value in sums.items():
            self._step_sums[key] += float(value)

    # -- the Trainer's hooks ----------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        share = ProcessShare(len(self.train_dataset), self.batch_size, self.args.world_size, self.args.process_index)
        return DataLoader(self.train_dataset, batch_sampler=share, collate_fn=rows_batch)

    def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> float:
        """The weight of the whole optimiser step (on every process), which every micro-batch's loss is divided by."""
        return sum(processes.gathered(
            sum(self.example_weight(row) for batch in batch_samples for row in batch["rows"].tolist())))

    def training_step(self, model: Any, inputs: dict[str, torch.Tensor], num_items_in_batch: Any = None) -> torch.Tensor:
        """One forward/backward pass per part of the micro-batch that fits the token cap. With several
        processes the gradients are exchanged once per micro-batch, after its last part (the others run
        under ``no_sync``), and a process with no examples in it still takes part, with a zero loss."""
        batch = inputs["rows"]
        parts = list(token_parts(batch.tolist(), self.example_tokens, self.max_tokens)) or [[]]
        losses = []
        for number, part in enumerate(parts, start=1):
            exchange = contextlib.nullcontext() if number == len(parts) else self.accelerator.no_sync(model)
            with exchange:
                losses.append(super().training_step(
                    model, {"rows": torch.tensor(part, dtype=torch.long), "batch": batch}, num_items_in_batch))
        return torch.stack(losses).sum()

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        """The part's share of the step loss. Times the number of processes, as the Trainer does: the
        gradient exchange averages over processes, and the step's loss is their sum."""
        part = inputs["rows"].tolist()
        if not part:
            return self.zero_loss(model)
        loss = self.part_loss(model, part, inputs["batch"].tolist()) / num_items_in_batch
        return loss * self.accelerator.num_processes

    def zero_loss(self, model: Any) -> torch.Tensor:
        """A zero through every trainable weight (one token's forward pass): the backward pass of a
        process without examples, which the gradient exchange waits for."""
        token = torch.zeros((1, 1), dtype=torch.long, device=self.args.device)
        return model(input_ids=token, logits_to_keep=1).logits.sum() * 0.0

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        return 0  # the inputs are positions, not token ids: nothing to estimate from

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a step's row (on every process at once): its metrics over every process's examples
            sums = processes.summed(self._step_sums)
            self._step_sums.clear()
            count = sums.pop("n", 0)
            if count:
                logs.update({key: value / count for key, value in sums.items()})
        super().log(logs, start_time)


class PreferenceTrainer(ExampleTrainer):
    """Examples are (epoch, pair index); a pair's loss comes from the loss plugin on its micro-batch.

    A micro-batch split by the token cap still reaches the loss whole: the rows of the other parts hold
    stand-ins (their reference log-probs, else −1 per token) and only this part's losses are kept. The
    loss sees the true batch size and token counts, so one that couples examples through them (ORPO's
    NLL is a token mean over the batch) gives each part its exact share."""

    def __init__(self, *, encoded: list[tuple], order: list[tuple[int, int]], reference: Any, loss: Any,
                 loss_opts: Any, pad_id: int, **kwargs: Any):
        self.encoded, self.order, self.loss, self.loss_opts, self.pad_id = encoded, order, loss, loss_opts, pad_id
        super().__init__(n_examples=len(order), **kwargs)
        device = self.args.device
        self.lengths = tuple(t.to(device) for t in pair_lengths(encoded))
        self.reference = tuple(t.to(device) for t in reference) if reference else None

    def example_tokens(self, row: int) -> int:
        return pair_tokens(self.encoded[self.order[row][1]])

    def example_weight(self, row: int) -> float:
        return 1.0

    def part_loss(self, model: Any, part: list[int], batch: list[int]) -> torch.Tensor:
        device = self.args.device
        at = torch.tensor([batch.index(row) for row in part], device=device)
        index = torch.tensor([self.order[row][1] for row in batch], device=device)
        lengths = [t[index] for t in self.lengths]
        reference = [t[index] for t in self.reference] if self.reference else [None, None]
        pc, pr, _, _ = forward_pairs(model, [self.encoded[self.order[row][1]] for row in part], self.pad_id, device,
                                     prompt_model=self.accelerator.unwrap_model(model))
        if len(part) < len(batch):
            pc, pr = (stand_in(ref, n).index_put((at,), logps) for ref, n, logps in zip(reference, lengths, (pc, pr)))
        out = self.loss.obj(PreferenceBatch(pc, pr, *lengths, *reference), self.loss_opts)
        losses = out.losses[at]
        margins = (out.chosen_rewards - out.rejected_rewards)[at].detach().float()
        for row, example_loss, margin in zip(part, losses.tolist(), margins.tolist()):
            epoch = self.order[row][0] + 1
            self.totals[f"{epoch}.loss"] += example_loss
            self.totals[f"{epoch}.reward_margin"] += margin
            self.totals[f"{epoch}.accuracy"] += float(margin > 0)
            self.totals[f"{epoch}.n"] += 1
        self.record(len(part), reward_margin=margins.sum().item(), accuracy=(margins > 0).sum().item())
        return losses.sum()


def stand_in(reference: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
    """Log-probs for rows a part does not compute: the reference's, else −1 per token."""
    return reference.detach().clone() if reference is not None else -lengths.float()


class CompletionTrainer(ExampleTrainer):
    """Supervised training on answer tokens: examples are (prompt ids, answer ids, group), weighted by
    their answer tokens, so the loss of a step is its token-mean NLL. ``totals`` keep each group's NLL
    sum and token count (the curriculum's buckets)."""

    def __init__(self, *, encoded: list[tuple[list[int], list[int], str]], pad_id: int, **kwargs: Any):
        self.encoded, self.pad_id = encoded, pad_id
        super().__init__(n_examples=len(encoded), **kwargs)

    def example_tokens(self, row: int) -> int:
        prompt, answer, _ = self.encoded[row]
        return len(prompt) + len(answer)

    def example_weight(self, row: int) -> float:
        return float(len(self.encoded[row][1]))

    def part_loss(self, model: Any, part: list[int], batch: list[int]) -> torch.Tensor:
        examples = [self.encoded[row] for row in part]
        logps, counts = sequence_logps(model, collate([(p, a) for p, a, _ in examples], self.pad_id, self.args.device))
        for (_, _, group), logp, count in zip(examples, logps.tolist(), counts.tolist()):
            self.totals[f"{group}.nll"] -= logp
            self.totals[f"{group}.tokens"] += count
        return -logps.sum()


class QuietProgress(ProgressCallback):
    """The Trainer's progress bar, with the logged numbers as its postfix rather than a printed line per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()
                                           if isinstance(v, float) and k not in ("epoch", "total_flos")})


class StageLog(TrainerCallback):
    """Each logged step as a ``metrics.jsonl`` row (``event``; ``lr`` for the Trainer's ``learning_rate``)
    and the Trainer's closing summary (runtime, samples/s) as a ``trainer`` row."""

    def __init__(self, ctx: Any, event: str):
        self.ctx, self.event = ctx, event

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs:
            self.ctx.log("trainer", **logs)
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if k not in ("epoch", "learning_rate")}}
        if "learning_rate" in logs:
            row["lr"] = logs["learning_rate"]
        self.ctx.log(self.event, **row)


class CompleteCheckpoints(TrainerCallback):
    """Marks a checkpoint whole (the last file written into it), with the trainer's running totals and
    the plan it was made for; also asks for a save every ``minutes`` of training."""

    def __init__(self, trainer: ExampleTrainer, plan: str, minutes: float):
        self.trainer, self.plan, self.minutes = trainer, plan, minutes
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        """The main process's clock decides, so that every process saves at the same step."""
        if self.minutes and args.save_strategy != "no" and processes.on_main(
                lambda: time.monotonic() - self.last_save >= 60 * self.minutes):
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        """After every process saved its part (RNG state); the totals are the sum over processes."""
        self.last_save = time.monotonic()
        totals = processes.summed(self.trainer.totals)
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_json(folder / COMPLETE, {"plan": self.plan, "totals": totals})


def plan_key(opts: EngineOptions, *parts: Any) -> str:
    """A fingerprint of what a training run's numbers depend on (options, data order, token ids):
    checkpoints of another plan are never resumed. Where checkpoints and reports go is left out."""
    settings = opts.model_dump(exclude={"checkpoint_steps", "checkpoint_minutes", "report_to"})
    return hashlib.sha256(json.dumps([settings, *parts], sort_keys=True, default=str).encode()).hexdigest()


def last_checkpoint(folder: Path, plan: str) -> Path | None:
    """The newest complete checkpoint made for ``plan``; checkpoints of another plan are deleted."""
    marked = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        marker = path / COMPLETE
        if marker.is_file():
            if json.loads(marker.read_text(encoding="utf-8"))["plan"] != plan:
                shutil.rmtree(folder)
                return None
            marked.append((int(path.name.split("-")[1]), path))
    return max(marked)[1] if marked else None


def training_arguments(ctx: Any, opts: EngineOptions, *, lr: float, batch_size: int, grad_accum: int,
                       warmup_ratio: float, total_steps: int, seed: int) -> TrainingArguments:
    """The Trainer's settings for one stage: AdamW (no weight decay) with ``round(warmup_ratio × steps)``
    linear warm-up steps then linear decay to 0, clipping at 1, one log row per step, checkpoints in the
    stage folder, seeds from the stage seed. On a quantised policy (``--quantize``: QLoRA) the AdamW is
    bitsandbytes' paged one, as in QLoRA: the same update, its state paged out under memory spikes."""
    policy = ctx.policy
    precision = opts.mixed_precision
    if precision == "auto":
        precision = "bf16" if policy.dtype == torch.bfloat16 else "no"
    return TrainingArguments(
        output_dir=str(ctx.stage_dir / CHECKPOINTS),
        per_device_train_batch_size=math.ceil(batch_size / processes.count()), gradient_accumulation_steps=grad_accum,
        num_train_epochs=1, optim="adamw_torch" if ctx.config.quantize == "none" else "paged_adamw_32bit",
        learning_rate=lr, lr_scheduler_type="linear", warmup_steps=round(warmup_ratio * total_steps),
        weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, report_to=[r for r in opts.report_to if r != TENSORBOARD] or "none",
        save_strategy="steps" if opts.checkpoint_steps or opts.checkpoint_minutes else "no",
        save_steps=opts.checkpoint_steps or total_steps + 1, save_total_limit=2,
        seed=seed, data_seed=seed, use_cpu=policy.device.type == "cpu",
        bf16=precision == "bf16", fp16=precision == "fp16",
        activation_checkpointing=opts.gradient_checkpointing, activation_checkpointing_kwargs={"use_reentrant": False},
        dataloader_pin_memory=False, remove_unused_columns=False, label_names=[],
        ddp_find_unused_parameters=False,  # every trainable (LoRA) weight is in every forward pass
    )


def fit(ctx: Any, trainer: ExampleTrainer, opts: EngineOptions, plan: str, event: str) -> list[dict[str, Any]]:
    """Train, continuing from the last complete checkpoint of this plan if the stage ran before.
    Returns the step rows of the whole training (those before a resumed checkpoint included)."""
    trainer.add_callback(StageLog(ctx, event))
    trainer.add_callback(CompleteCheckpoints(trainer, plan, opts.checkpoint_minutes))
    if TENSORBOARD in opts.report_to and processes.is_main():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        trainer.add_callback(TensorBoardCallback(SummaryWriter(log_dir=str(ctx.stage_dir / TENSORBOARD))))
    resume = processes.on_main(lambda: last_checkpoint(Path(trainer.args.output_dir), plan))
    if resume is not None:
        if processes.is_main():  # the totals are sums over processes: kept once, whatever the number now
            trainer.totals.update(json.loads((resume / COMPLETE).read_text(encoding="utf-8"))["totals"])
        ctx.log("resume", checkpoint=resume.name)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    trainer.model.eval()
    trainer.totals = processes.summed(trainer.totals)
    return [row for row in trainer.state.log_history if "loss" in row]


def finish(ctx: Any, policy: Any, peft_model: Any) -> None:
    """Save the stage's adapter (the main process) and merge it into the policy (every process); the
    checkpoints that led there go."""
    save_and_merge(policy, peft_model, ctx.stage_dir / "adapter")
    if processes.is_main():
        shutil.rmtree(ctx.stage_dir / CHECKPOINTS, ignore_errors=True)
