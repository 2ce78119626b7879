"""Clipping: by value and by the global norm of all updates together; torch.nn.utils' clipping over gradient trees."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._base import EmptyState, GradientTransformation


__all__ = ["clip", "clip_by_global_norm", "clip_grad_norm", "clip_grad_value", "total_norm"]

def _no_state(params):
    del params
    return EmptyState()


def clip(max_delta: Any) -> GradientTransformation:
    """Clips every element of the updates to ``[-max_delta, max_delta]`` (``optax.clip``)."""
    check_range("max_delta", max_delta, 0.0, where="clip")

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return gt.tree_map(lambda u: jnp.clip(u, -max_delta, max_delta), updates), state

    return GradientTransformation(_no_state, update)


def clip_by_global_norm(max_norm: Any) -> GradientTransformation:
    r"""Rescales all updates together so that their global norm is at most ``max_norm``.

    .. math:: u \leftarrow u \cdot \min\left(1, \frac{c}{\lVert u \rVert_2}\right)

    The norm spans every leaf (Pascanu et al., 2013, https://arxiv.org/abs/1211.5063),
    as ``optax.clip_by_global_norm`` and ``torch.nn.utils.clip_grad_norm_`` compute it.
    """
    check_range("max_norm", max_norm, 0.0, where="clip_by_global_norm")

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = gt.tree_global_norm(updates)
        keep = norm < max_norm
        clipped = gt.tree_map(
            lambda u: jax.lax.select(keep, u, ((u / norm.astype(u.dtype)) * max_norm).astype(u.dtype)), updates
        )
        return clipped, state

    return GradientTransformation(_no_state, update)


def _vector_norm(x: jax.Array, ord: float) -> jax.Array:
    """``torch.linalg.vector_norm(x, ord)`` over all elements: max/min of abs for +-inf, a count for 0."""
    a = jnp.abs(x).ravel()
    if ord == math.inf:
        return jnp.max(a)
    if ord == -math.inf:
        return jnp.min(a)
    if ord == 0:
        return jnp.sum(a != 0).astype(a.dtype)
    if ord == 1:
        return jnp.sum(a)
    if ord == 2:
        return jnp.sqrt(jnp.sum(a * a))
    return jnp.sum(a**ord) ** (1.0 / ord)


def total_norm(grads: Any, norm_type: float = 2.0) -> jax.Array:
    """The ``norm_type``-norm of all leaves together (``torch.nn.utils.get_total_norm``).

    As torch computes it: the norm of each leaf, then the same norm of the vector of
    those norms (for p-norms with ``0 < p`` this is the norm of all elements
    concatenated; ``inf`` is the largest absolute value; ``0`` counts, as torch
    does, the leaves with a nonzero element). ``0.0`` (float32) for a tree without
    leaves.

    Args:
      grads: a pytree of arrays.
      norm_type: the order ``p`` (a float, ``float("inf")`` or the string ``"inf"``).

    Returns:
      a scalar array of the leaves' (promoted, real) dtype.
    """
    norm_type = float(norm_type)
    leaves = gt.array_leaves(grads)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    return _vector_norm(jnp.stack([_vector_norm(g, norm_type) for g in leaves]), norm_type)


def clip_grad_norm(grads: Any, max_norm: Any, norm_type: float = 2.0) -> tuple[Any, jax.Array]:
    r"""Scales all gradients together so that their total norm is at most ``max_norm``: torch's rule, functionally.

    .. math:: g \leftarrow g \cdot \min\left(1, \frac{\text{max\_norm}}{\lVert g \rVert_p + 10^{-6}}\right)

    The numbers of ``torch.nn.utils.clip_grad_norm_`` (note the ``1e-6``, and that
    the factor multiplies every gradient even when it is 1); :func:`clip_by_global_norm`
    is optax's variant (no epsilon, 2-norm only). Jit-able; for torch's
    ``error_if_nonfinite`` test the returned norm (``jnp.isfinite``) or use
    :func:`gradtx.optim.clip_grad_norm_`.

    Args:
      grads: a pytree of gradient arrays.
      max_norm: the largest total norm (a number or a scalar array).
      norm_type: the order of the norm, see :func:`total_norm`.

    Returns:
      ``(clipped, total)``: the scaled tree and the total norm before clipping.
    """
    total = total_norm(grads, norm_type)
    coef = jnp.minimum(max_norm / (total + 1e-6), 1.0)
    return gt.tree_map(lambda g: g * coef.astype(g.dtype), grads), total


def clip_grad_value(grads: Any, clip_value: Any) -> Any:
    """Clamps every gradient element to ``[-clip_value, clip_value]`` (``torch.nn.utils.clip_grad_value_``, functionally).

    Args:
      grads: a pytree of gradient arrays.
      clip_value: the largest absolute value kept.

    Returns:
      the clamped tree.
    """
    return gt.tree_map(lambda g: jnp.clip(g, -clip_value, clip_value).astype(g.dtype), grads)
