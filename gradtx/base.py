"""The gradient-transformation protocol and its smallest pieces.

A :class:`GradientTransformation` is a pair of pure functions ``(init, update)``
over pytrees, in the same protocol that optax uses::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params, **extra_args)
    params = apply_updates(params, updates)

Because the pair is a ``NamedTuple`` of two callables with optax's signatures,
a gradtx transform can be placed inside ``optax.chain`` and an optax transform
inside :func:`gradtx.chain`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, Union, runtime_checkable

import jax
import jax.numpy as jnp

from gradtx.tree import check_matching_trees, tree_map

PyTree = Any
Shape = Sequence[int]
PRNGKey = jax.Array
ArrayTree = Union[jax.typing.ArrayLike, Iterable["ArrayTree"], Mapping[Any, "ArrayTree"]]
Params = Any  # a pytree of arrays
Updates = Any  # a pytree shaped like Params
OptState = Any  # a pytree of arrays (usually nested NamedTuples)
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
ScheduleState = Any  # the state of a StatefulSchedule
ScalarOrSchedule = Union[float, jax.Array, Schedule]  # noqa: UP007 - a typing.Union, as optax's
MaskOrFn = Union[Any, Callable[[Params], Any], None]  # noqa: UP007 - a tree of booleans, or a function returning one

NO_PARAMS_MSG = (
    "This transformation needs the current parameters: call "
    "`update(updates, state, params)` with `params`."
)


class TransformInitFn(Protocol):
    """``init(params) -> state``: builds the initial state for ``params``."""

    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None, **extra_args) -> (updates, state)``."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule that keeps a state (``optax.StatefulSchedule``).

    ``init() -> state``; ``update(state, **extra_args) -> state``;
    ``__call__(state, **extra_args) -> value``. :func:`gradtx.inject_stateful_hyperparams`
    evaluates it at each step and then advances its state.
    """

    def init(self) -> ScheduleState: ...

    def update(self, state: ScheduleState, **extra_args: Any) -> ScheduleState: ...

    def __call__(self, state: ScheduleState, **extra_args: Any) -> jax.typing.ArrayLike: ...


class TransformUpdateExtraArgsFn(Protocol):
    """``update(updates, state, params=None, **extra_args) -> (updates, state)``, extra keywords allowed."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


def _optax_class(name: str) -> type | None:
    # Read from sys.modules, never imported: gradtx does not depend on optax.
    optax = sys.modules.get("optax")
    return getattr(optax, name, None) if optax is not None else None


class _InitUpdatePair(NamedTuple):
    init: TransformInitFn
    update: TransformUpdateFn


class GradientTransformation(_InitUpdatePair):
    """A pure ``(init, update)`` pair; structurally identical to optax's.

    When optax has been imported, ``isinstance(tx, optax.GradientTransformation)``
    is true of a gradtx transformation, and so is
    ``isinstance(tx, optax.GradientTransformationExtraArgs)`` when its update
    accepts ``**extra_args`` (every gradtx update does). That is the test optax's
    ``chain``, ``MultiSteps``, ``masked``, ... use to decide whether to pass
    ``value=``, ``grad=``, ``value_fn=`` through, so gradtx's line searches and
    Polyak steps keep their extra arguments inside optax's wrappers. ``type(tx)``
    stays the gradtx class; only ``tx.__class__`` (which ``isinstance`` consults
    after the real type) reports optax's class.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
        Every gradtx update accepts (and, unless it uses them, ignores) extra
        keyword arguments such as ``value`` or ``grad``.
    """

    __slots__ = ()

    @property
    def __class__(self) -> type:  # noqa: D105 - see the class docstring
        name = "GradientTransformationExtraArgs" if accepts_extra_args(self.update) else "GradientTransformation"
        return _optax_class(name) or type(self)

    def __repr__(self) -> str:
        from gradtx._describe import format_text

        return format_text(self)

    def _repr_html_(self) -> str:
        from gradtx._describe import format_html

        return f"<div style='font-family: monospace'>{format_html(self)}</div>"


class _TakesExtraArgs(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, GradientTransformation) and accepts_extra_args(obj.update)


class GradientTransformationExtraArgs(GradientTransformation, metaclass=_TakesExtraArgs):
    """A :class:`GradientTransformation` whose update takes extra keyword arguments (``optax``'s name).

    Every gradtx transformation accepts extra arguments, so ``isinstance(tx,
    GradientTransformationExtraArgs)`` is decided by the update's signature
    (true of ``gradtx.adam(...)``, of ``gradtx.chain(...)``, and of optax's
    extra-args transformations); :func:`with_extra_args_support` returns one.
    """

    __slots__ = ()


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a transformation that keeps no state (``optax.init_empty_state``)."""
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """The transformation that returns the updates unchanged (``optax.identity``)."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformation(init, update)


def set_to_zero() -> GradientTransformation:
    """Replaces every update with zeros (``optax.set_to_zero``), e.g. to freeze parameters."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree_map(jnp.zeros_like, updates), state

    return GradientTransformation(init, update)


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transformation from a function ``f(updates, params) -> updates`` that keeps no state.

    Follows ``optax.stateless``. Example::

        clip_sign = stateless(lambda u, p: jax.tree.map(jnp.sign, u))
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return f(updates, params), state

    return GradientTransformation(init, update)


def stateless_with_tree_map(f: Callable[[jax.Array, jax.Array | None], jax.Array]) -> GradientTransformation:
    """Like :func:`stateless`, with ``f(update_leaf, param_leaf)`` applied leaf by leaf."""

    def tree_f(updates, params):
        if params is None:
            return tree_map(lambda u: f(u, None), updates)
        return tree_map(f, updates, params)

    return stateless(tree_f)


def accepts_extra_args(update: Callable) -> bool:
    """Whether ``update`` takes ``**extra_args`` (optax's plain transforms do not)."""
    try:
        signature = inspect.signature(update)
    except (TypeError, ValueError):  # builtins and some C callables
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def with_extra_args_support(tx: Any) -> GradientTransformationExtraArgs:
    """Wraps any ``(init, update)`` pair so that its update tolerates extra keyword args.

    Follows ``optax.with_extra_args_support``, but decides by the update's
    signature rather than its class, so an optax transformation whose update
    already takes ``**extra_args`` keeps receiving them.
    """
    if accepts_extra_args(tx.update):
        return GradientTransformationExtraArgs(tx.init, tx.update)

    def tolerant_update(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, tolerant_update)


def chain(*transforms: Any) -> GradientTransformation:
    """Applies transformations in sequence; the state is the tuple of their states.

    Follows ``optax.chain``: any ``(init, update)`` pair may take part, optax's
    included. Extra keyword arguments reach every member that accepts them.

    Example::

        tx = chain(clip_by_global_norm(1.0), scale_by_adam(), scale_by_learning_rate(1e-3))
    """
    members = tuple(with_extra_args_support(t) for t in transforms)

    def init(params):
        return tuple(t.init(params) for t in members)

    def update(updates, state, params=None, **extra_args):
        if params is not None and jax.tree.structure(params) != jax.tree.structure(updates):
            check_matching_trees(params, updates, what="updates", against="params", check_shapes=False)
        if not isinstance(state, tuple) or len(state) != len(members):
            raise ValueError(
                f"chain of {len(members)} transformations got a state of "
                f"{len(state) if isinstance(state, tuple) else type(state).__name__} "
                "entries; build the state with this chain's `init`."
            )
        new_state = []
        for t, s in zip(members, state):
            updates, s = t.update(updates, s, params, **extra_args)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def named_chain(*named: tuple[str, Any]) -> GradientTransformation:
    """A chain whose state is a dict keyed by the members' names.

    The state can then be read by name (``state["adam"].mu``). Follows
    ``optax.named_chain``.
    """
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be unique, got {names}")
    members = {name: with_extra_args_support(t) for name, t in named}

    def init(params):
        return {name: t.init(params) for name, t in members.items()}

    def update(updates, state, params=None, **extra_args):
        missing = [name for name in members if name not in state]
        if missing:
            raise ValueError(f"named_chain: the state has no entry for {missing}")
        new_state = {}
        for name, t in members.items():
            updates, new_state[name] = t.update(updates, state[name], params, **extra_args)
        return updates, new_state

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``params + updates``, each result in its parameter's dtype (``optax.apply_updates``).

    A ``None`` in ``params`` stays ``None`` whatever ``updates`` holds there (as
    in optax); other non-array leaves of ``params`` (functions, strings in a model
    tree) are returned as they are. A mismatch of structure, or an update whose
    shape differs from its parameter's (which would otherwise broadcast), raises a
    ``ValueError`` naming the first path where they differ and both shapes.
    """
    try:
        updates = jax.tree.map(lambda p, u: None if p is None else u, params, updates, is_leaf=lambda x: x is None)
    except ValueError:
        pass  # the structures differ: check_matching_trees says where
    check_matching_trees(params, updates, what="updates", against="params")
    return tree_map(lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype), params, updates)


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    """Polyak averaging: ``step_size * new + (1 - step_size) * old`` leaf by leaf (``optax.incremental_update``).

    Used to keep an exponential moving average of parameters (e.g. a target
    network). ``None`` leaves of ``new_tensors`` stay ``None``.
    """
    return jax.tree.map(lambda new, old: None if new is None else step_size * new + (1.0 - step_size) * old,
                        new_tensors, old_tensors, is_leaf=lambda x: x is None)


def periodic_update(new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any) -> Params:
    """``new_tensors`` when ``steps`` is a multiple of ``update_period``, else ``old_tensors``.

    Follows ``optax.periodic_update``, e.g. to refresh a target network every few steps.
    """
    return jax.lax.cond(jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors)
