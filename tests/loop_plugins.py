"""Small but real test-only plugins: a toy tool-calling world that lets the loop be tested in seconds.

Each sample asks for the sum of two numbers; the candidate answers call ``add``, ``sub`` or ``mul``.
The toy policy is a learnable score per function name (a 3-way softmax), initialised to prefer ``sub``,
so the base model is always wrong. Training on preference pairs with any registered loss moves it to
``add``; evaluation measures that on held-out samples. Every stage appends to ``calls.log`` in the run
directory, so tests can check that a resumed run repeats nothing.

Like a real model, loading the toy policy draws random numbers (its "initialisation"), and the toy
search draws from every global stream (Python, NumPy, torch) into its trees: a resumed run writes the
same trees only if loading never moves the streams the loop seeded for the stage.

``EventRecorder`` is a test-only observer of the lifecycle hooks (which draws random numbers too).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy
import torch
from pydantic import BaseModel, Field

from itool import hookimpl
from itool.components import LossOutput, PreferenceBatch
from itool.rundir import atomic_path, write_json
from itool.schemas import EvalReport, Message, PreferencePair, Sample, SearchNode, SearchTree, ToolCall, Verdict

NAMES = ["add", "sub", "mul"]


def _record(ctx, what: str) -> None:
    with open(ctx.run.path / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage} {what}\n")


class ToyPolicy:
    """A softmax over function names; ``merge_adapter`` adds a saved delta, like merging a LoRA."""

    model = None
    tokenizer = None
    device = torch.device("cpu")

    def __init__(self) -> None:
        random.random(), numpy.random.rand(), torch.randn(3)  # a model's random init, then overwritten
        self.logits = torch.tensor([0.0, 1.0, 0.0])  # prefers "sub": the untrained policy is wrong

    def logp(self, name: str, logits: torch.Tensor | None = None) -> torch.Tensor:
        table = torch.log_softmax(self.logits if logits is None else logits, dim=0)
        return table[NAMES.index(name)]

    def best(self) -> str:
        return NAMES[int(self.logits.argmax())]

    def merge_adapter(self, path: Path) -> None:
        delta = json.loads((Path(path) / "adapter.json").read_text())
        self.logits = self.logits + torch.tensor(delta)


def load_toy(spec, opts, *, device, dtype):
    """A toy policy over three function names."""
    return ToyPolicy()


def toy_dataset(split, opts):
    """Sums of two numbers; 8 train and 4 test samples."""
    pairs = {"train": [(i, i + 1) for i in range(8)], "test": [(10 + i, 2 * i) for i in range(4)]}
    rows = pairs["all"] if split == "all" else pairs[split]
    return [
        Sample(id=f"{split}-{a}-{b}", category="toy", messages=[Message(role="user", content=f"What is {a}+{b}?")],
               tools=[{"name": n} for n in NAMES], answer=[ToolCall(name="add", arguments={"a": a, "b": b})])
        for a, b in rows
    ]


def every_other(ctx, samples, opts):
    """Keep every other sample."""
    _record(ctx, "select")
    return samples[::2]


class EnumerateOptions(BaseModel):
    fail_once: bool = Field(False, description="Raise mid-stage the first time (to test resume).")


def enumerate_answers(ctx, samples, opts):
    """A root with one child per candidate function, valued +1 if right and -1 if wrong; the tree's
    meta holds the policy's pick and one draw from each random stream."""
    _record(ctx, "search")
    pick = ctx.policy.best()
    marker = ctx.run.path / "failed-once"
    if opts.fail_once and not marker.exists():
        marker.touch()
        raise RuntimeError("simulated crash in the middle of a search")
    trees = []
    for s in samples:
        a, b = s.answer[0].arguments["a"], s.answer[0].arguments["b"]
        nodes = [SearchNode(id=0, visits=len(NAMES))]
        for i, name in enumerate(NAMES, start=1):
            value = 1.0 if name == "add" else -1.0
            nodes.append(SearchNode(id=i, parent=0, text=f"[{name}(a={a}, b={b})]", visits=1, value=value, terminal=True))
        draws = [random.random(), float(numpy.random.rand()), torch.rand(1).item()]
        trees.append(SearchTree(sample_id=s.id, prompt=s.messages[0].content, nodes=nodes,
                                meta={"policy_pick": pick, "draws": draws}))
    return trees


def best_vs_worst(ctx, trees, opts):
    """Highest-valued child against each lower-valued one."""
    _record(ctx, "pairs")
    pairs = []
    for tree in trees:
        kids = sorted(tree.children(0), key=lambda n: -n.value)
        pairs += [PreferencePair(prompt=tree.prompt, chosen=kids[0].text, rejected=k.text, sample_id=tree.sample_id,
                                 chosen_value=kids[0].value, rejected_value=k.value) for k in kids[1:]]
    return pairs


class ToyTrainerOptions(BaseModel):
    lr: float = Field(0.5, description="Step size.")
    steps: int = Field(20, description="Gradient steps over all pairs.")


def toy_train(ctx, pairs, opts):
    """Gradient descent on the toy policy with the configured preference loss."""
    _record(ctx, "train")
    loss_component, loss_opts = ctx.component("loss")
    policy = ctx.policy
    start = policy.logits.clone()
    logits = start.clone().requires_grad_(True)
    names = lambda text: text[1:4]  # noqa: E731 - "[add(...)]" -> "add"
    ones = torch.ones(len(pairs))
    reference = None
    if loss_component.attrs.get("needs_reference"):
        reference = [torch.stack([policy.logp(names(getattr(p, side)), start) for p in pairs]) for side in ("chosen", "rejected")]
    optim = torch.optim.SGD([logits], lr=opts.lr)
    for step in range(opts.steps):
        batch = PreferenceBatch(
            policy_chosen_logps=torch.stack([policy.logp(names(p.chosen), logits) for p in pairs]),
            policy_rejected_logps=torch.stack([policy.logp(names(p.rejected), logits) for p in pairs]),
            chosen_lengths=ones, rejected_lengths=ones,
            reference_chosen_logps=reference[0] if reference else None,
            reference_rejected_logps=reference[1] if reference else None,
        )
        loss = loss_component.obj(batch, loss_opts).losses.mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        ctx.log("step", step=step, loss=loss.item())
    adapter = ctx.stage_dir / "adapter"
    with atomic_path(adapter) as tmp:
        tmp.mkdir()
        write_json(tmp / "adapter.json", (logits.detach() - start).tolist())
    policy.merge_adapter(adapter)
    return {"final_loss": loss.item(), "used_reference": reference is not None}


def toy_warmup(ctx, samples, opts):
    """Nudges the policy half-way towards the right function."""
    _record(ctx, "warmup")
    adapter = ctx.stage_dir / "adapter"
    with atomic_path(adapter) as tmp:
        tmp.mkdir()
        write_json(tmp / "adapter.json", [0.4, 0.0, 0.0])
    ctx.policy.merge_adapter(adapter)
    return {"samples": len(samples)}


def toy_evaluate(ctx, samples, opts):
    """Accuracy of the policy's favourite function on the samples."""
    _record(ctx, "eval")
    best = ctx.policy.best()
    verdicts = [Verdict(sample_id=s.id, category=s.category, valid=best == "add",
                        error_type=None if best == "add" else "wrong_func_name", output=best) for s in samples]
    return EvalReport(verdicts=verdicts, summary=toy_summary(verdicts, opts))


def toy_summary(verdicts, opts):
    accuracy = sum(v.valid for v in verdicts) / len(verdicts)
    return {"toy": accuracy, "Overall": accuracy}


def toy_logistic(batch, opts):
    """-log σ(pc − pr): the simplest preference loss, no reference."""
    margin = batch.policy_chosen_logps - batch.policy_rejected_logps
    return LossOutput(-torch.nn.functional.logsigmoid(margin), batch.policy_chosen_logps.detach(),
                      batch.policy_rejected_logps.detach())


@hookimpl
def register_losses(register):
    register("toy-logistic", toy_logistic)


@hookimpl
def register_models(register):
    register("toy", load_toy)


@hookimpl
def register_datasets(register):
    register("toy", toy_dataset)


@hookimpl
def register_warmups(register):
    register("toy", toy_warmup)


@hookimpl
def register_samplers(register):
    register("toy-every-other", every_other)


@hookimpl
def register_searches(register):
    register("toy-enumerate", enumerate_answers, options=EnumerateOptions)


@hookimpl
def register_pair_builders(register):
    register("toy-best-worst", best_vs_worst)


@hookimpl
def register_trainers(register):
    register("toy", toy_train, options=ToyTrainerOptions)


@hookimpl
def register_evaluators(register):
    register("toy", toy_evaluate, summarize=toy_summary)


class EventRecorder:
    """Records every lifecycle hook call as ``(hook, stage, detail)``; draws random numbers in each, as a
    careless plugin might (the loop must give them back)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def _add(self, hook: str, stage: str = "", detail: object = None) -> None:
        random.random(), numpy.random.rand(), torch.rand(1)
        self.events.append((hook, stage, detail))

    @hookimpl
    def run_started(self, ctx):
        self._add("run_started", detail=ctx.attempt)

    @hookimpl
    def stage_started(self, stage):
        self._add("stage_started", stage)

    @hookimpl
    def stage_finished(self, stage, result):
        self._add("stage_finished", stage, sorted(result))

    @hookimpl
    def stage_failed(self, stage, error):
        self._add("stage_failed", stage, str(error))

    @hookimpl
    def run_finished(self, completed):
        self._add("run_finished", detail=completed)

    @hookimpl
    def log_event(self, stage, event, metrics):
        self._add("log_event", stage, (event, sorted(metrics)))


TOY_CONFIG = {
    "loader": "toy", "dataset": "toy", "warmup": "toy", "sampler": "toy-every-other",
    "search": "toy-enumerate", "pairs": "toy-best-worst", "trainer": "toy", "evaluator": "toy",
    "loss": "toy-logistic", "train_limit": None, "eval_limit": None,
}
