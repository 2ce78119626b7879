"""Reduce-on-plateau: a stateful transform that scales updates down when a metric stops improving."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range, concrete_float
from gradtx._base import GradientTransformation

__all__ = ["ReduceLROnPlateauState", "reduce_on_plateau"]


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau` (optax's field names, so states convert both ways)."""

    scale: jax.Array  # shape=(), lowest float dtype of params: the factor applied to the updates
    best_value: jax.Array  # shape=(), highest float dtype of params: the best average metric so far
    plateau_count: jax.Array  # shape=(), int32: accumulations without improvement
    cooldown_count: jax.Array  # shape=(), int32: accumulations left in the cooldown
    count: jax.Array  # shape=(), int32: values in the current accumulation
    avg_value: jax.Array  # shape=(), highest float dtype of params: running mean of the accumulation


def _float_dtypes(params: Any) -> list[Any]:
    dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)]
    return [d for d in dtypes if jnp.issubdtype(d, jnp.floating)] or [jnp.dtype(jnp.float32)]


def reduce_on_plateau(factor: float = 0.1, patience: Any = 10, rtol: float = 1e-4, atol: float = 0.0,
                      cooldown: Any = 0, accumulation_size: Any = 1, min_scale: Any = 0.0) -> GradientTransformation:
    r"""Scales the updates by ``factor`` when a metric has not improved for ``patience`` evaluations.

    Follows ``optax.contrib.reduce_on_plateau`` (arguments, state fields and
    numbers); torch's ``ReduceLROnPlateau`` is the same idea for the facade
    (:class:`gradtx.optim.lr_scheduler.ReduceLROnPlateau`). Pass the metric as the
    extra argument ``value`` of ``update``. Every ``accumulation_size`` calls the
    mean :math:`\bar v` of the values is compared with the best so far:

    .. math::
        \text{improved} = \bar v < (1 - r_{tol})\, v_{best} - a_{tol}, \qquad
        s \leftarrow \max(s \cdot \text{factor}, s_{min}) \text{ after } \text{patience}
        \text{ evaluations without improvement}

    after which ``cooldown`` evaluations are ignored. Place it after the learning
    rate (``chain(adam(lr), reduce_on_plateau())``): it multiplies the updates by ``scale``.

    Args:
      factor: the reduction, in (0, 1).
      patience: evaluations without improvement before a reduction.
      rtol: relative tolerance of an improvement, in [0, 1].
      atol: absolute tolerance of an improvement, >= 0 (``rtol`` and ``atol`` not both 0).
      cooldown: evaluations to wait after a reduction.
      accumulation_size: values averaged into one evaluation (1 for a validation metric;
        more for a noisy minibatch loss).
      min_scale: the scale below which it does not go.
    """
    check_range("factor", factor, 0.0, 1.0, low_open=True, high_open=True, where="reduce_on_plateau")
    check_range("rtol", rtol, 0.0, 1.0, where="reduce_on_plateau")
    check_range("atol", atol, 0.0, where="reduce_on_plateau")
    if concrete_float(rtol) == 0.0 and concrete_float(atol) == 0.0:
        raise ValueError("reduce_on_plateau: at least one of rtol or atol must be positive, got rtol = 0 and atol = 0")

    def init(params):
        dtypes = _float_dtypes(params)
        lowest = min(dtypes, key=lambda d: d.itemsize)
        highest = max(dtypes, key=lambda d: d.itemsize)
        return ReduceLROnPlateauState(
            scale=jnp.ones((), lowest),
            best_value=jnp.asarray(jnp.inf, highest),
            plateau_count=gt.zero_count(),
            cooldown_count=gt.zero_count(),
            count=gt.zero_count(),
            avg_value=jnp.zeros((), highest),
        )

    def evaluate(state):
        improved = state.avg_value < (1 - rtol) * state.best_value - atol
        best = jnp.where(improved, state.avg_value, state.best_value).astype(state.best_value.dtype)
        plateau = jnp.where(improved, 0, gt.safe_increment(state.plateau_count))
        in_cooldown = state.cooldown_count > 0
        reduce = jnp.logical_and(~in_cooldown, plateau == patience)
        scale = jnp.where(reduce, state.scale * factor, state.scale)
        scale = jnp.where(in_cooldown, state.scale, jnp.maximum(scale, min_scale)).astype(state.scale.dtype)
        return ReduceLROnPlateauState(
            scale=scale,
            best_value=best,
            plateau_count=jnp.where(in_cooldown | reduce, 0, plateau).astype(jnp.int32),
            cooldown_count=jnp.where(in_cooldown, state.cooldown_count - 1,
                                     jnp.where(reduce, cooldown, 0)).astype(jnp.int32),
            count=gt.zero_count(),
            avg_value=jnp.zeros((), state.avg_value.dtype),
        )

    def update(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        count = gt.safe_increment(state.count)
        avg = (state.count * state.avg_value + jnp.asarray(value).astype(state.avg_value.dtype)) / count
        state = state._replace(avg_value=avg.astype(state.avg_value.dtype), count=count)
        state = jax.lax.cond(count == accumulation_size, evaluate, lambda s: s, state)
        return gt.tree_map(lambda u: (state.scale * u).astype(u.dtype), updates), state

    return GradientTransformation(init, update)
