"""Hyperparameters as data: stored in the state, so changing them never recompiles."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree as gt
from gradtx.base import GradientTransformation, with_extra_args_support


__all__ = ["InjectHyperparamsState", "inject_hyperparams"]

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
    value = jnp.asarray(value)
    if dtype is not None and jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(dtype)
    return value


def inject_hyperparams(inner_factory: Callable[..., Any], static_args: str | Iterable[str] = (),
                       hyperparam_dtype: Any = None) -> Callable[..., GradientTransformation]:
    """Wraps a factory so that its numeric arguments live in the state as arrays.

    Follows ``optax.inject_hyperparams``: ``inject_hyperparams(gradtx.adam)(learning_rate=1e-3)``
    builds Adam whose ``state.hyperparams["learning_rate"]`` can be edited between
    steps without recompiling a jitted update. A schedule given for any numeric
    argument is evaluated at the step count each update, and its value stored.
    Booleans, strings, ``None`` and arguments named in ``static_args`` stay static.

    Args:
      inner_factory: a function returning a transformation, e.g. ``gradtx.adam``.
      static_args: names of callable arguments that are not schedules.
      hyperparam_dtype: dtype of float hyperparameters; default: the highest float dtype of the params.
    """
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)

    @functools.wraps(inner_factory)
    def wrapped(*args, **kwargs) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, scheduled, other = {}, {}, {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"inject_hyperparams does not support *args/**kwargs factories ({name})")
            if name in static_names:
                other[name] = value
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

        def init(params):
            dtype = hyperparam_dtype or _highest_float_dtype(params)
            count = gt.zero_count()
            hyperparams = current(numeric, count, dtype)
            inner = inner_factory(**other, **hyperparams)
            return InjectHyperparamsState(count=count, hyperparams=hyperparams, inner_state=inner.init(params))

        def update(updates, state, params=None, **extra_args):
            dtype = hyperparam_dtype or _highest_float_dtype(updates)
            hyperparams = current(state.hyperparams, state.count, dtype)
            inner = with_extra_args_support(inner_factory(**other, **hyperparams))
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            return updates, InjectHyperparamsState(
                count=gt.safe_increment(state.count), hyperparams=hyperparams, inner_state=inner_state
            )

        return GradientTransformation(init, update)

    return wrapped
