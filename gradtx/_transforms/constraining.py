"""Constraints on updates and parameters: NaNs to zero, parameters kept non-negative."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx._base import NO_PARAMS_MSG, EmptyState, GradientTransformation, init_empty_state

__all__ = ["ZeroNansState", "zero_nans", "NonNegativeParamsState", "keep_params_nonnegative"]

NonNegativeParamsState = EmptyState  # optax's name for the state of keep_params_nonnegative


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans`."""

    found_nan: Any  # like params, bool scalars: whether that leaf's last update held a NaN


def zero_nans() -> GradientTransformation:
    """Replaces NaNs in the updates by zeros and records, per leaf, whether any were found (``optax.zero_nans``)."""

    def init(params):
        return ZeroNansState(found_nan=jax.tree.map(lambda _: jnp.array(False), params))

    def update(updates, state, params=None, **extra_args):
        del state, params, extra_args
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        return jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates), ZeroNansState(found)

    return GradientTransformation(init, update)


def keep_params_nonnegative() -> GradientTransformation:
    """Changes the updates so that no parameter goes below zero (``optax.keep_params_nonnegative``).

    Where ``params + updates`` would be negative the update becomes ``-params``,
    landing the parameter on zero. Parameters that start negative are not
    clipped upwards by this; initialise them non-negative. ``None`` leaves of
    ``params`` are kept.
    """

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        new = jax.tree.map(lambda p, u: None if p is None else jnp.where(p + u < 0.0, -p, u), params, updates,
                           is_leaf=lambda x: x is None)
        return new, state

    return GradientTransformation(init_empty_state, update)
