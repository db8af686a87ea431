"""Test-only plugins for runs of the real model in several processes: a search and an evaluator that
need no generation (seconds on a CPU), each noting in ``calls.log`` which process ran it."""

from __future__ import annotations

import os

from itool import hookimpl
from itool.plugins.training import score_completions
from itool.schemas import EvalReport, SearchNode, SearchTree, Verdict

RIVALS = ["sub", "mul"]


def note(ctx, what: str) -> None:
    with open(ctx.run.path / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage} {what} rank={os.environ.get('RANK', '0')}\n")


def rival_calls(ctx, samples, opts):
    """A root with the accepted call (+1) and the same arguments under a wrong function name (-1 each)."""
    note(ctx, "search")
    trees = []
    for sample in samples:
        call = sample.answer[0]
        arguments = ", ".join(f"{k}={v}" for k, v in call.arguments.items())
        nodes = [SearchNode(id=0, visits=1 + len(RIVALS))]
        for i, name in enumerate([call.name, *RIVALS], start=1):
            nodes.append(SearchNode(id=i, parent=0, text=f"[{name}({arguments})]", visits=1,
                                    value=1.0 if i == 1 else -1.0, terminal=True))
        trees.append(SearchTree(sample_id=sample.id, prompt=ctx.format.render_prompt(sample, ctx.policy.tokenizer),
                                nodes=nodes))
    return trees


def answer_logp(ctx, samples, opts):
    """The policy's mean log-prob of each accepted answer (a sample is "valid" when it is above -20)."""
    note(ctx, "eval")
    policy = ctx.policy
    prompts = [ctx.format.render_prompt(s, policy.tokenizer) for s in samples]
    scores = score_completions(policy.model, policy.tokenizer, prompts, [ctx.format.render_answer(s.answer) for s in samples])
    verdicts = [Verdict(sample_id=s.id, category=s.category, valid=logp > -20, output=f"{logp:.6f}")
                for s, (logp, _) in zip(samples, scores)]
    mean = sum(logp for logp, _ in scores) / len(scores)
    return EvalReport(verdicts=verdicts, summary={"answer_logp": mean, "Overall": mean})


@hookimpl
def register_searches(register):
    register("rival-calls", rival_calls)


@hookimpl
def register_evaluators(register):
    register("answer-logp", answer_logp)
