"""Hyperparameters as data: stored in the state, so changing them never recompiles."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree as gt
from gradtx._base import GradientTransformation, StatefulSchedule, with_extra_args_support


__all__ = ["InjectHyperparamsState", "inject_hyperparams", "InjectStatefulHyperparamsState",
           "inject_stateful_hyperparams", "WrappedScheduleState", "WrappedSchedule"]

class InjectHyperparamsState(NamedTuple):
    """State of a transformation built by :func:`inject_hyperparams`."""

    count: jax.Array  # shape=(), int32: steps taken so far
    hyperparams: dict[str, jax.Array]  # name -> current value (scalar arrays); edit to change them
    inner_state: Any  # the inner transformation's state


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.ndarray, jax.Array, np.number)) and not isinstance(value, bool)


def _highest_float_dtype(params: Any) -> Any:
    dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)]
    floats = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    return jnp.result_type(*floats) if floats else None


def _as_hyperparam(value: Any, dtype: Any) -> jax.Array:
    # A committed-dtype jax array given by the user keeps its dtype, as in optax.
    explicit = isinstance(value, jax.Array) and not getattr(value, "weak_type", False)
    value = jnp.asarray(value)
    if dtype is not None and not explicit and jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(dtype)
    return value


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams` when some argument is a :class:`gradtx.schedules.StatefulSchedule`."""

    count: jax.Array  # shape=(), int32: steps taken so far
    hyperparams: dict[str, jax.Array]  # name -> current value (scalar arrays); edit to change them
    hyperparams_states: dict[str, Any]  # name -> the state of that argument's stateful schedule
    inner_state: Any  # the inner transformation's state


class WrappedScheduleState(NamedTuple):
    """State of a :class:`WrappedSchedule`."""

    count: jax.Array  # shape=(), int32: steps so far


class WrappedSchedule:
    """A plain schedule ``count -> value`` as a :class:`gradtx.schedules.StatefulSchedule` (``optax.WrappedSchedule``)."""

    def __init__(self, schedule_fn: Callable[[Any], Any]):
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        """The count at 0."""
        return WrappedScheduleState(count=gt.zero_count())

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        """The count plus one."""
        del extra_args
        return WrappedScheduleState(count=gt.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        """The schedule at the current count."""
        del extra_args
        return self.schedule_fn(state.count)


def _check_static_args(static_names: set, signature: inspect.Signature, factory: Callable) -> None:
    unknown = static_names - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"inject_hyperparams: static_args {sorted(unknown)} are not parameters of "
            f"{getattr(factory, '__name__', factory)}; its parameters are {list(signature.parameters)}."
        )


def inject_hyperparams(inner_factory: Callable[..., Any], static_args: str | Iterable[str] = (),
                       hyperparam_dtype: Any = None) -> Callable[..., GradientTransformation]:
    """Wraps a factory so that its numeric arguments live in the state as arrays.

    Follows ``optax.inject_hyperparams``: ``inject_hyperparams(gradtx.adam)(learning_rate=1e-3)``
    builds Adam whose ``state.hyperparams["learning_rate"]`` can be edited between
    steps without recompiling a jitted update. A schedule given for any numeric
    argument is evaluated at the step count each update, and its value stored.
    A :class:`gradtx.schedules.StatefulSchedule` (``init``/``update``/``__call__``) is
    evaluated with its own state, kept in ``state.hyperparams_states`` (the state is
    then an :class:`InjectStatefulHyperparamsState`). A float array given with a
    fixed dtype (a non-weak ``jax.Array``) keeps that dtype; Python numbers and
    NumPy values take ``hyperparam_dtype``.
    Booleans, strings, ``None`` and arguments named in ``static_args`` stay static;
    a name in ``static_args`` that is not a parameter of ``inner_factory`` is a ``ValueError``.

    Args:
      inner_factory: a function returning a transformation, e.g. ``gradtx.adam``.
      static_args: names of callable arguments that are not schedules.
      hyperparam_dtype: dtype of float hyperparameters; default: the highest float dtype of the params.
    """
    return _inject(inner_factory, static_args, hyperparam_dtype, wrap_schedules=False)


def inject_stateful_hyperparams(inner_factory: Callable[..., Any], static_args: str | Iterable[str] = (),
                                hyperparam_dtype: Any = None) -> Callable[..., GradientTransformation]:
    """:func:`inject_hyperparams` with every schedule held as a stateful one (``optax.inject_stateful_hyperparams``).

    Plain schedules are wrapped in :class:`WrappedSchedule`; the state is always
    an :class:`InjectStatefulHyperparamsState`. A :class:`gradtx.schedules.StatefulSchedule`
    is called as ``schedule(state, **extra_args)`` and advanced with
    ``schedule.update(state, **extra_args)`` at each step, so it may depend on the
    update's extra arguments (e.g. ``value=``).
    """
    return _inject(inner_factory, static_args, hyperparam_dtype, wrap_schedules=True)


def _inject(inner_factory, static_args, hyperparam_dtype, wrap_schedules):
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    _check_static_args(static_names, signature, inner_factory)

    @functools.wraps(inner_factory)
    def wrapped(*args, **kwargs) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, scheduled, stateful, other = {}, {}, {}, {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"inject_hyperparams does not support *args/**kwargs factories ({name})")
            if name in static_names or isinstance(value, bool):
                other[name] = value
            elif isinstance(value, StatefulSchedule) or (callable(value) and wrap_schedules):
                stateful[name] = value if isinstance(value, StatefulSchedule) else WrappedSchedule(value)
            elif callable(value):
                scheduled[name] = value
            elif _is_numeric(value):
                numeric[name] = value
            else:
                other[name] = value

        def current(hyperparams_or_numeric, count, dtype):
            values = {k: _as_hyperparam(v, dtype) for k, v in hyperparams_or_numeric.items() if k in numeric}
            values.update({k: _as_hyperparam(f(count), dtype) for k, f in scheduled.items()})
            return values

        def wrap_state(count, hyperparams, schedule_states, inner_state):
            if stateful or wrap_schedules:
                return InjectStatefulHyperparamsState(count, hyperparams, schedule_states, inner_state)
            return InjectHyperparamsState(count=count, hyperparams=hyperparams, inner_state=inner_state)

        def init(params):
            dtype = hyperparam_dtype or _highest_float_dtype(params)
            count = gt.zero_count()
            hyperparams = current(numeric, count, dtype)
            schedule_states = {k: f.init() for k, f in stateful.items()}
            hyperparams.update({k: _as_hyperparam(f(schedule_states[k]), dtype) for k, f in stateful.items()})
            inner = inner_factory(**other, **hyperparams)
            return wrap_state(count, hyperparams, schedule_states, inner.init(params))

        def update(updates, state, params=None, **extra_args):
            dtype = hyperparam_dtype or _highest_float_dtype(updates)
            hyperparams = current(state.hyperparams, state.count, dtype)
            schedule_states = getattr(state, "hyperparams_states", {})
            hyperparams.update({k: _as_hyperparam(f(schedule_states[k], **extra_args), dtype)
                                for k, f in stateful.items()})
            schedule_states = {k: f.update(schedule_states[k], **extra_args) for k, f in stateful.items()}
            inner = with_extra_args_support(inner_factory(**other, **hyperparams))
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            return updates, wrap_state(gt.safe_increment(state.count), hyperparams, schedule_states, inner_state)

        return GradientTransformation(init, update)

    return wrapped
