"""What the agent searches (``dfsdt``, ``react``) share: a depth-first decision tree over model
*messages*, executed against a tool environment, as ToolBench's DFSDT runs it.

The world is the environment plugin (``--search-opt environment=bfcl-multiturn``): it executes calls,
snapshots and restores state, and through its registration attributes (see
``itool.plugins.environments``) tells the search the user turns of a sample and checks a transcript
against the sample's ground truth. The algorithm here never looks inside it.

A node is one model message, parsed with ``ctx.format``:

- calls -> they run in the environment; their results become ``tool`` messages (kind ``call``);
- ``Finish(return_type='give_answer', final_answer=...)``, or a reply with no call at all (BFCL's
  convention for ending a turn) -> the turn's answer (kind ``answer``);
- ``Finish(return_type='give_up_and_restart')`` -> the node is pruned and the search backs up two
  levels (kind ``give_up``);
- text that does not parse -> an error result the model sees next step (kind ``invalid``).

``DFS(node)``: an answer to the last user turn ends the whole search (success); a pruned node returns
2 and a finished subtree 1 to its parent, which passes ``result - 1`` up when ``result > 1`` (so a
give-up abandons its parent too) and otherwise tries its next child, up to ``width`` children. A
non-answer node at ``max_depth`` messages into its turn is pruned. From the second child on, the prompt
lists the earlier siblings' messages and results and asks for something different (the diversity
prompt). Before each child the environment is restored to the parent's snapshot, so no branch sees
another's side effects.

Multi-turn entries: an accepted answer to turn t becomes the root of turn t+1 (the next user messages
join the conversation), so each turn is a sub-search that starts from the state its predecessor's path
left, and the plain recursion lets a turn that cannot be solved send the search back into the previous
turn's alternatives. With ``check="state"`` (default) an answer is accepted only when the transcript so
far passes the environment's check (for BFCL: state and execution results equal the ground truth's
after that turn); a rejected answer is pruned (value -1) and its siblings are tried. ``check="none"``
accepts the first answer, as ToolBench does.

Large tool pools: with ``retriever=minilm`` each turn shows only the ``top_k`` tools the retriever
ranks highest for that turn's request.

Budget and batching: ``max_queries`` model calls per sample. Each sample's DFS is a generator that
yields one generation request at a time; the searches of all samples advance together and their
pending requests go to ``ctx.backend.generate`` in one wave.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Literal

from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from itool.components import Generation, GenerationRequest, kept_prefixes
from itool.errors import ItoolError
from itool.plugins.formats.python_calls import PythonCallFormat
from itool.plugins.searches.tree import Waves, seed_sampling
from itool.schemas import Message, Sample, SearchNode, SearchTree, ToolCall

FINISH = "Finish"
GIVE_ANSWER, GIVE_UP = "give_answer", "give_up_and_restart"
STOP = 10_000  # returned up the recursion once the search is over (success or budget spent)

FINISH_DOC = {
    "name": FINISH,
    "description": "Call this when the user's request is done, with return_type='give_answer' and your "
    "final_answer; or with return_type='give_up_and_restart' when you cannot make progress from here "
    "(the attempt is abandoned and another one starts).",
    "parameters": {
        "type": "dict",
        "properties": {
            "return_type": {"type": "string", "enum": [GIVE_ANSWER, GIVE_UP]},
            "final_answer": {"type": "string", "description": "Your answer to the user (with give_answer)."},
        },
        "required": ["return_type"],
    },
}
INSTRUCTIONS = (
    "Solve the user's request step by step. In each reply, write at most one short thought, then the "
    "call(s) for this step. You will see the results before your next reply. When the request is done, "
    f"call {FINISH}(return_type='{GIVE_ANSWER}', final_answer='...'). If you are stuck, call "
    f"{FINISH}(return_type='{GIVE_UP}')."
)
DIVERSITY = (
    "This is not the first attempt at this step. Earlier attempts were:\n{attempts}\n"
    "Do something different from all of them."
)


class AgentSearchOptions(BaseModel):
    environment: str = Field("bfcl-multiturn", description="Tool environment the calls run in.")
    environment_options: dict[str, Any] = Field(default_factory=dict, description="Options of the environment.")
    max_queries: int = Field(200, ge=1, description="Model calls per sample (ToolBench: about 200).")
    max_depth: int = Field(8, ge=1, description="Messages per user turn; a non-answer at this depth is pruned.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature of each message.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of each message.")
    max_new_tokens: int = Field(96, ge=1, description="Tokens per message.")
    check: Literal["state", "none"] = Field(
        "state", description="'state': accept a turn's answer only if the environment's ground-truth check "
        "passes so far; 'none': accept the first answer (ToolBench).")
    retriever: str | None = Field(None, description="Retriever that picks the tools shown in each turn (e.g. minilm); default: all.")
    top_k: int = Field(5, ge=1, description="Tools shown per turn when a retriever is set.")
    seed: int | None = Field(None, description="Seed for sampling; default: the seed the run set for this stage.")
    wave_size: int | None = Field(None, ge=1, description="Max requests per backend call; 1 = one sample at a time.")


@dataclass
class World:
    """The environment plugin as the search sees it, resolved once per search."""

    factory: Callable[[BaseModel], Any]
    parse_options: Callable[[dict], BaseModel]
    options: dict[str, Any]
    attrs: dict[str, Any]

    @classmethod
    def resolve(cls, ctx: Any, name: str, options: dict[str, Any]) -> "World":
        component = ctx.registry.get("environment", name)
        missing = [a for a in ("turns_of", "check") if a not in component.attrs]
        if missing:
            raise ItoolError(f"environment {name!r} cannot drive an agent search (it registers no {', '.join(missing)})")
        return cls(component.obj, component.parse_options, options, component.attrs)

    def environment(self, sample: Sample) -> Any:
        per_sample = self.attrs.get("options_for", lambda s: {})(sample)
        return self.factory(self.parse_options({**self.options, **per_sample}))

    def turns(self, sample: Sample) -> list[list[Message]]:
        return self.attrs["turns_of"](sample)

    def tools(self, sample: Sample, turn: int) -> list[dict[str, Any]]:
        return self.attrs.get("tools_at", lambda s, t: s.tools)(sample, turn)

    def check(self, sample: Sample, steps: list[list[list[ToolCall]]]) -> tuple[bool, str | None]:
        result = self.attrs["check"](sample, steps)
        return result.valid, result.error_type


def call_text(calls: list[ToolCall]) -> str:
    """Parsed calls as the literal call list an environment runs (positional ``#i`` keys stay positional)."""
    return "[" + ", ".join(PythonCallFormat.render_call(c) for c in calls) + "]"


@dataclass
class Episode:
    """One sample's depth-first search: the tree, the environment and the budget."""

    ctx: Any
    sample: Sample
    world: World
    opts: AgentSearchOptions
    width: int
    retriever: Any = None
    nodes: list[SearchNode] = field(default_factory=list)
    queries: int = 0
    solution: int | None = None

    def __post_init__(self) -> None:
        self.env = self.world.environment(self.sample)
        self.turns = self.world.turns(self.sample)
        if not self.turns:
            raise ItoolError(f"sample {self.sample.id} has no user turns")
        root = SearchNode(id=0, meta={"kind": "root", "turn": 0, "step": 0, "messages": dump(self.turns[0])})
        self.nodes.append(root)
        self._tools: dict[int, list[dict[str, Any]]] = {}
        self.prompt0 = self.prompt(0, [])

    def tools(self, turn: int) -> list[dict[str, Any]]:
        """The functions shown in ``turn``: all of them, or the retriever's ``top_k`` for the turn's request."""
        if turn not in self._tools:
            tools = self.world.tools(self.sample, turn)
            if self.retriever is not None and len(tools) > self.opts.top_k:
                query = " ".join(m.content for m in self.turns[turn])
                tools = [tools[i] for i in sorted(self.retriever.rank([query], tools, self.opts.top_k)[0])]
            self._tools[turn] = tools
        return self._tools[turn]

    # -- conversation -------------------------------------------------------------------------
    def path(self, node_id: int | None) -> list[SearchNode]:
        out = []
        while node_id is not None:
            out.append(self.nodes[node_id])
            node_id = self.nodes[node_id].parent
        return out[::-1]

    def conversation(self, node_id: int) -> list[Message]:
        return [Message.model_validate(m) for n in self.path(node_id) for m in n.meta["messages"]]

    def steps(self, node_id: int) -> list[list[list[ToolCall]]]:
        """The calls on the path, per turn and per message: what the environment's check replays."""
        leaf = self.nodes[node_id]
        per_turn: list[list[list[ToolCall]]] = [[] for _ in range(leaf.meta["turn"] + 1)]
        for node in self.path(node_id):
            if node.meta.get("calls"):
                per_turn[node.meta["turn"]].append([ToolCall.model_validate(c) for c in node.meta["calls"]])
        return per_turn

    def child_turn(self, node: SearchNode) -> tuple[int, int]:
        """(turn, step) of a message that follows ``node``."""
        if node.meta["kind"] == "answer":
            return node.meta["turn"] + 1, 1
        return node.meta["turn"], node.meta["step"] + 1

    def prompt(self, node_id: int, siblings: list[SearchNode]) -> str:
        turn, _ = self.child_turn(self.nodes[node_id])
        messages = [Message(role="system", content=INSTRUCTIONS), *self.conversation(node_id)]
        if siblings:
            attempts = "\n".join(f"- {_clip(s.text.strip())} -> {_clip(str(s.meta.get('results') or s.meta['kind']))}"
                                 for s in siblings)
            messages.append(Message(role="user", content=DIVERSITY.format(attempts=attempts)))
        tools = [*self.tools(turn), FINISH_DOC]
        view = self.sample.model_copy(update={"messages": messages, "tools": tools})
        return self.ctx.format.render_prompt(view, self.ctx.policy.tokenizer)

    # -- one message ----------------------------------------------------------------------------
    def add_child(self, parent: int, generation: Generation) -> SearchNode:
        """Parse the message, run its calls, and record what it adds to the conversation."""
        turn, step = self.child_turn(self.nodes[parent])
        text = generation.text
        node = SearchNode(id=len(self.nodes), parent=parent, text=text, visits=1,
                          prior=_mean_prob(generation.token_logprobs), meta={"turn": turn, "step": step})
        self.nodes.append(node)
        parsed = self.ctx.format.parse(text)
        if parsed.calls is None:
            error = f"Error: your reply could not be read as calls ({parsed.error}). Write calls like [f(a=1)]."
            node.meta.update(kind="invalid", results=[error],
                             messages=dump([Message(role="assistant", content=text), Message(role="user", content=error)]))
            return node
        calls = [c for c in parsed.calls if c.name != FINISH]
        finish = next((c for c in parsed.calls if c.name == FINISH), None)
        messages: list[Message] = []
        if calls:
            results = self.env.call(call_text(calls))
            node.meta.update(calls=[c.model_dump() for c in calls], results=results)
            messages += [Message(role="assistant", content=text, tool_calls=calls),
                         *(Message(role="tool", name=c.name, content=r) for c, r in zip(calls, results))]
        node.meta["messages"] = dump(messages)
        if finish is not None and finish.arguments.get("return_type") == GIVE_UP:
            node.meta["kind"] = "give_up"
        elif finish is not None or not calls:
            answer = str(finish.arguments.get("final_answer", "")) if finish is not None else text
            self.answer(node, answer)
        else:
            node.meta["kind"] = "call"
        return node

    def answer(self, node: SearchNode, answer: str) -> None:
        """A turn's answer: accepted (the next turn's user messages follow) or rejected by the check."""
        node.meta.update(kind="answer", final_answer=answer)
        node.meta["messages"].append(Message(role="assistant", content=answer).model_dump(exclude_none=True))
        turn = node.meta["turn"]
        if self.opts.check == "state":
            passed, error_type = self.world.check(self.sample, self.steps(node.id))
            node.meta["check"] = error_type or "ok"
            if not passed:
                node.meta["rejected"] = True
                return
        if turn + 1 < len(self.turns):
            node.meta["messages"] += dump(self.turns[turn + 1])
        else:
            node.terminal = True

    # -- the search ------------------------------------------------------------------------------
    def prune(self, node: SearchNode) -> None:
        node.meta["pruned"] = True
        node.value = -1.0

    def dfs(self, node_id: int) -> Generator[GenerationRequest, list[Generation], int]:
        node = self.nodes[node_id]
        kind = node.meta["kind"]
        if kind == "give_up":
            self.prune(node)
            return 2
        if node.meta.get("rejected"):
            self.prune(node)
            return 1
        if node.terminal:
            self.solution = node_id
            return STOP
        if kind != "answer" and node.meta["step"] >= self.opts.max_depth:
            self.prune(node)
            return 2
        snapshot = self.env.snapshot() if self.width > 1 else None
        for index in range(self.width):
            if self.queries >= self.opts.max_queries:
                return STOP
            if index:
                self.env.restore(snapshot)
            siblings = [n for n in self.nodes if n.parent == node_id]
            generations = yield GenerationRequest(
                prompt=self.prompt(node_id, siblings), n=1, max_new_tokens=self.opts.max_new_tokens,
                temperature=self.opts.temperature, top_p=self.opts.top_p)
            self.queries += 1
            child = self.add_child(node_id, generations[0])
            result = yield from self.dfs(child.id)
            if result > 1:
                return result - 1 if result < STOP else STOP
        return 1

    def finish(self, search: str) -> SearchTree:
        """The tree with visits (model calls at or below a node), the chosen path valued 1 and marked."""
        for node in reversed(self.nodes[1:]):
            self.nodes[node.parent].visits += node.visits
        chosen = [n.id for n in self.path(self.solution)] if self.solution is not None else []
        for node_id in chosen:
            self.nodes[node_id].value = 1.0
            self.nodes[node_id].meta["chosen"] = True
        passed = self.solution is not None and self.world.check(self.sample, self.steps(self.solution))[0]
        accepted = [n.meta["turn"] + 1 for n in self.nodes if n.meta["kind"] == "answer" and not n.meta.get("rejected")]
        return SearchTree(sample_id=self.sample.id, prompt=self.prompt0, nodes=self.nodes, meta={
            "search": search, "width": self.width, "queries": self.queries, "solved": self.solution is not None,
            "passed": passed, "chosen_path": chosen, "turns": len(self.turns), "turns_solved": max(accepted, default=0)})


def dump(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in messages]


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _mean_prob(token_logprobs: list[float]) -> float:
    import math

    return math.exp(sum(token_logprobs) / len(token_logprobs)) if token_logprobs else 1.0


def run_agent_search(ctx: Any, samples: list[Sample], opts: AgentSearchOptions, width: int, name: str) -> list[SearchTree]:
    """Run one DFS per sample, all advancing together: every wave sends each live search's next request."""
    seed_sampling(opts.seed, samples)
    world = World.resolve(ctx, opts.environment, opts.environment_options)
    retriever = None
    if opts.retriever:
        component = ctx.registry.get("retriever", opts.retriever)
        retriever = component.obj(component.parse_options({}))
    episodes = [Episode(ctx, sample, world, opts, width, retriever) for sample in samples]
    searches = {i: e.dfs(0) for i, e in enumerate(episodes)}
    pending: dict[int, GenerationRequest] = {}
    for i in list(searches):
        _advance(searches, pending, i, next)
    waves = Waves(ctx.backend, opts.wave_size)
    started = time.perf_counter()
    with tqdm(total=len(samples), desc=name, unit="sample", disable=not samples) as bar, kept_prefixes(ctx.backend):
        while pending:
            order = list(pending)
            outputs = waves.generate([pending[i] for i in order])
            for i, generations in zip(order, outputs, strict=True):
                if not _advance(searches, pending, i, lambda s: s.send(generations)):
                    bar.update(1)
    trees = [e.finish(name) for e in episodes]
    ctx.log(name, samples=len(samples), solved=sum(t.meta["solved"] for t in trees),
            turns_solved=sum(t.meta["turns_solved"] for t in trees), turns=sum(t.meta["turns"] for t in trees),
            passed=sum(t.meta["passed"] for t in trees), queries=sum(e.queries for e in episodes),
            generate_calls=waves.calls, seconds=round(time.perf_counter() - started, 3))
    return trees


def _advance(searches: dict, pending: dict, i: int, step: Callable) -> bool:
    """Resume search ``i``; keep its next request in ``pending``. False once it has finished."""
    try:
        pending[i] = step(searches[i])
        return True
    except StopIteration:
        pending.pop(i, None)
        return False


def solution_messages(tree: SearchTree) -> list[Message]:
    """The conversation along the chosen path: user turns, assistant calls, tool results, answers.
    Messages that did not parse (and the error shown for them) are left out: they changed nothing."""
    by_id = {n.id: n for n in tree.nodes}
    return [Message.model_validate(m) for i in tree.meta.get("chosen_path", [])
            if by_id[i].meta["kind"] != "invalid" for m in by_id[i].meta["messages"]]
