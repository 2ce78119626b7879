"""Scaling transforms: constant factors, learning rates, schedules and sign flips."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import EmptyState, GradientTransformation, ScalarOrSchedule, Schedule, identity


__all__ = ["ScaleByScheduleState", "scale", "scale_by_schedule", "scale_by_learning_rate", "maximize", "negate_if"]

class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def scale(step_size: Any) -> GradientTransformation:
    """Multiplies every update by ``step_size`` (``optax.scale``).

    Example::

        tx = gradtx.chain(gradtx.scale_by_adam(), gradtx.scale(-1e-3))
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return gt.tree_map(lambda u: (step_size * u).astype(u.dtype), updates), state

    return GradientTransformation(init, update)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiplies updates by ``step_size_fn(count)``, ``count`` being the steps taken before this one.

    Follows ``optax.scale_by_schedule``.
    """

    def init(params):
        del params
        return ScaleByScheduleState(count=gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        factor = step_size_fn(state.count)
        updates = gt.tree_map(lambda u: (factor * u).astype(u.dtype), updates)
        return updates, ScaleByScheduleState(count=gt.safe_increment(state.count))

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> GradientTransformation:
    """Scales updates by the learning rate, negated by default so that updates descend.

    ``learning_rate`` may be a float, an array or a schedule ``count -> lr``.
    Follows ``optax.scale_by_learning_rate``.
    """
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


def maximize() -> GradientTransformation:
    """Negates the updates, turning a minimiser into a maximiser (torch's ``maximize=True``).

    Placed first in a chain it negates the gradient before any other step, as
    torch.optim does.
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return gt.tree_map(jnp.negative, updates), state

    return GradientTransformation(init, update)


def negate_if(flag: bool) -> GradientTransformation:
    """:func:`maximize` when ``flag`` is true, else :func:`gradtx.identity`: torch's ``maximize`` option as a link.

    ``flag`` is structure, not a hyperparameter: it is read once, when the chain
    is built (a facade optimizer rebuilds its chain when ``maximize`` changes).

    Example::

        tx = gradtx.chain(gradtx.negate_if(maximize), gradtx.scale_by_adam(), gradtx.scale_by_learning_rate(1e-3))
    """
    return maximize() if flag else identity()
