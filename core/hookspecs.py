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
- ``attrs``: kind-specific metadata (losses: ``needs_reference``).

Built-in plugins are registered exactly like third-party ones: through the entry-point group
``itool`` of their distribution. The signatures in ``itool.components`` are the contract.
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
def register_backends(register):
    """Generation backends: ``factory(policy, opts) -> GenerationBackend``."""


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

    A search gets its generation backend from ``ctx.backend`` and its reward from ``ctx.reward``."""


@hookspec
def register_rewards(register):
    """Rewards: ``factory(ctx, opts) -> Reward``; ``Reward.score(sample, texts) -> list[float]``."""


@hookspec
def register_pair_builders(register):
    """Preference pair builders: ``build(ctx, trees, opts) -> list[PreferencePair]``."""


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
