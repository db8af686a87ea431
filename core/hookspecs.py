"""The public plugin API of itool.

A plugin is an ordinary module with functions marked ``@hookimpl``. Each ``register_<kind>s`` hook
receives a ``register`` callable; the plugin calls it once per component it offers::

    from itool import hookimpl

    @hookimpl
    def register_losses(register):
        register("my-loss", my_loss, options=MyLossOptions)

``register(name, obj, *, options=None, description=None, **attrs)``:

- ``name``: what users type (``--loss my-loss``); unique within the kind.
- ``obj``: the component, with the call signature documented on its hook below.
- ``options``: a pydantic model whose fields are the component's options, with defaults and
  descriptions; users set them with ``--<kind>-opt key=value`` or in the config file. The component
  receives a validated instance as ``opts``.
- ``description``: one line for ``itool plugins``; defaults to the first line of ``obj``'s docstring.
- ``attrs``: kind-specific metadata (losses: ``needs_reference``; searches: ``produces``; pair builders:
  ``accepts``; see their hooks).

Built-in plugins are registered exactly like third-party ones: through the entry-point group
``itool`` of their distribution. The signatures in ``itool.components`` are the contract.

Besides the ``register_*`` hooks, a plugin may implement the *lifecycle hooks* at the end of this
module (run and stage start and end, every ``ctx.log`` row) to log, watch or gate a run without
wrapping the loop. A hook implementation names only the arguments it uses.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("itool")
hookimpl = pluggy.HookimplMarker("itool")


@hookspec
def register_models(register):
    """Model loaders: ``load(spec: str, opts, *, device, dtype) -> Policy``.

    ``spec`` is the user's ``--model`` value (an alias, a local path or a hub id)."""


@hookspec
def model_loaded(model):
    """A model loader has just loaded ``model`` (a torch module in eval mode, on its device, in its dtype).
    A plugin may change it in place for faster inference on some hardware (other kernels, another
    attention function), provided it computes the same results; what it returns is ignored. This is how
    an opt-in package speeds up a loader's models without the loader naming it."""


@hookspec
def register_backends(register):
    """Generation backends: ``factory(policy, opts) -> GenerationBackend``.

    Register with ``follows_policy=`` false, or a function of the options returning false, when the
    backend goes on serving the weights it started with after training changes the policy (a server
    it does not control): a run that trains (a warm-up or rounds) is then refused before it starts,
    while ``itool eval`` and ``itool annotate`` still use it. A backend that follows implements
    ``policy_updated``; one that declares nothing is taken to follow (it reads ``policy.model``)."""


@hookspec
def register_formats(register):
    """Tool-call formats: ``factory(opts) -> ToolFormat`` (prompt rendering and answer parsing)."""


@hookspec
def register_datasets(register):
    """Datasets: ``load(split, opts) -> list[Sample]`` with split one of ``train``, ``test``, ``all``."""


@hookspec
def register_warmups(register):
    """Warm-up trainers: ``warmup(ctx, samples, opts) -> dict`` of metrics.

    Trains ``ctx.policy``, saves the adapter into ``ctx.stage_dir / "adapter"`` (PEFT format) and
    merges it, so later stages see the trained policy."""


@hookspec
def register_samplers(register):
    """Sample selectors: ``select(ctx, samples, opts) -> list[Sample]``."""


@hookspec
def register_searches(register):
    """Tree searches: ``search(ctx, samples, opts) -> list[SearchTree]``.

    A search gets its generation backend from ``ctx.backend`` and its reward from ``ctx.reward``.

    Register with ``produces="<tree kind>"`` to say what its trees hold, so that a pair builder that
    cannot read them is refused before the run starts (``--search dfsdt --pairs step``). The built-in
    kinds:

    - ``"step-values"``: nodes are fragments of one answer; every node's ``value`` is the mean reward
      backpropagated through it, and every node with a ``rollout`` (a complete answer below it) has
      that answer's reward in ``meta["reward"]`` (``puct``).
    - ``"samples"``: a root with one child per complete answer, each its own rollout with
      ``meta["reward"]`` (``best-of-n``).
    - ``"agent-path"``: nodes are messages executed in a tool environment; ``value`` is 1 on the
      chosen path and -1 where pruned, and there are no rollouts or rewards (``dfsdt``, ``react``).

    A new kind is any other string; say what it holds in the search's docs. A search that declares
    nothing is paired with any builder (as before kinds existed)."""


@hookspec
def register_rewards(register):
    """Rewards: ``factory(ctx, opts) -> Reward``; ``Reward.score(sample, texts) -> list[float]``."""


@hookspec
def register_pair_builders(register):
    """Preference pair builders: ``build(ctx, trees, opts) -> list[PreferencePair]``.

    Register with ``accepts={"<tree kind>", ...}``, the kinds of tree (see ``register_searches``) the
    builder can read; a builder that declares nothing accepts every search's trees."""


@hookspec
def register_trainers(register):
    """Preference trainers: ``train(ctx, pairs, opts) -> dict`` of metrics.

    The loss comes from ``loss, loss_opts = ctx.component("loss")``; the trainer calls
    ``loss.obj(batch, loss_opts)`` and computes reference log-probs only when
    ``loss.attrs.get("needs_reference")`` is true. It saves its adapter into ``ctx.stage_dir / "adapter"``
    and merges it into ``ctx.policy``."""


@hookspec
def register_losses(register):
    """Preference losses: ``loss(batch: PreferenceBatch, opts) -> LossOutput``.

    Register with ``needs_reference=True`` when the loss reads the reference log-probs."""


@hookspec
def register_evaluators(register):
    """Evaluators: ``evaluate(ctx, samples, opts) -> EvalReport``."""


@hookspec
def register_environments(register):
    """Executable tool environments: ``factory(opts) -> ToolEnvironment``."""


@hookspec
def register_retrievers(register):
    """Tool retrievers: ``factory(opts) -> Retriever``; ``Retriever.rank(queries, tools, k)`` gives the
    indices of the ``k`` best tools for each query, best first (to work from a large tool pool)."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``itool`` command group: ``cli.add_command(...)``."""


# -- lifecycle hooks ----------------------------------------------------------------------------------
# Called for every installed plugin that implements them, in the process that runs the loop. They
# observe: what they return is ignored. An ``ItoolError`` raised from one stops the run with its
# message, which lets a plugin gate a run (refuse a stage, check a result); anything else raised inside
# ``stage_started`` / ``stage_finished`` fails the stage like a crash in its component.


@hookspec
def run_started(ctx):
    """The loop is about to run ``ctx.config``'s stages in ``ctx.run`` (a new run or a resumed one;
    ``ctx.attempt`` says which attempt, 1 for a new run)."""


@hookspec
def stage_started(ctx, stage):
    """Stage ``stage`` (e.g. ``"round1.search"``, the same as ``ctx.stage``) starts; its outputs will go
    to ``ctx.stage_dir``. Stages that a resumed run skips as done do not start."""


@hookspec
def stage_finished(ctx, stage, result):
    """Stage ``stage`` wrote its outputs and returned ``result`` (the dict recorded in state.json,
    with its ``seconds``); it is marked done right after this hook."""


@hookspec
def policy_updated(ctx, adapter_dir):
    """A training stage (the warm-up, a round's training) finished and merged the adapter it saved in
    ``adapter_dir`` into ``ctx.policy``: a backend that serves the policy from elsewhere (a server)
    loads the new weights here. Called after the stage is marked done."""


@hookspec
def stage_failed(ctx, stage, error):
    """Stage ``stage`` raised (``error`` is the exception, a ``KeyboardInterrupt`` included); the run
    stops and ``itool run --resume`` re-runs the stage from scratch."""


@hookspec
def run_finished(ctx, completed):
    """The loop returned: ``completed`` is true when every stage of the run is done, false when it was
    stopped on purpose (``--stop-after``). Not called when a stage failed (see ``stage_failed``)."""


@hookspec
def log_event(ctx, stage, event, metrics):
    """A row was written to metrics.jsonl by ``ctx.log(event, **metrics)``: loop events (``start``,
    ``end``, ``error``), a trainer's ``step``/``epoch`` rows, a search's per-simulation rows. ``metrics``
    is what the component logged (without the bookkeeping keys time, stage, event and attempt)."""
