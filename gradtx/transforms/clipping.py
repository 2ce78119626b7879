"""Clipping: by value and by the global norm of all updates together."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import tree as gt
from gradtx._checks import check_range
from gradtx.base import EmptyState, GradientTransformation


__all__ = ["clip", "clip_by_global_norm"]

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
