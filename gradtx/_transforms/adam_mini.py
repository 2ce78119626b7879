r"""Adam-mini: Adam with one second-moment value per parameter block.

Zhang et al., 2024, *Adam-mini: Use Fewer Learning Rates To Gain More*, https://arxiv.org/abs/2406.16793.
The numbers follow ``pytorch_optimizer.AdamMini`` (4.1.0), which keeps its state and computes in float32.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation
from gradtx._transforms.scion import torch_lerp

__all__ = ["ADAM_MINI_BLOCKS", "ScaleByAdamMiniState", "scale_by_adam_mini"]

ADAM_MINI_BLOCKS = ("element", "rows", "tensor")


class ScaleByAdamMiniState(NamedTuple):
    """State of :func:`scale_by_adam_mini`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    m: Any  # float32, per leaf the block view's shape (the leaf's own shape for "element" and "tensor")
    v: Any  # float32 like m with "element" (Adam's second moment), else None
    v_mean: Any  # float32 with "rows" (m's shape without its last axis) or "tensor" (a scalar), else None
    dimension: Any  # float32 scalars with "tensor" (the leaf's size), else None


def scale_by_adam_mini(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, block: str = "tensor",
                       view: tuple[int, ...] | None = None) -> GradientTransformation:
    r"""Adam-mini's direction (https://arxiv.org/abs/2406.16793): a second moment per block, in float32.

    With :math:`\bar v` the mean of :math:`g^2` over a block,

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \bar v(g_t), \quad
        u_t = \frac{m_t}{(1-\beta_1^t)(\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon)}

    ``block``: ``"element"`` (Adam: every entry is a block; embeddings and output layers), ``"rows"``
    (the leaf viewed as ``view``, one block per entry of all but the last axis: attention heads), or
    ``"tensor"`` (the whole leaf). The gradient is cast to float32 and the moments are float32, as in
    ``pytorch_optimizer.AdamMini``; the update is cast back to the leaf's dtype.

    Args:
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      eps: added to the bias-corrected root.
      block: ``"element"``, ``"rows"`` or ``"tensor"``.
      view: with ``"rows"``, the shape the leaf is viewed as (one ``-1`` allowed).

    Returns:
      A ``GradientTransformation`` whose state is :class:`ScaleByAdamMiniState`.
    """
    if block not in ADAM_MINI_BLOCKS:
        raise ValueError(f"scale_by_adam_mini: block must be one of {ADAM_MINI_BLOCKS}, got {block!r}")
    if block == "rows" and view is None:
        raise ValueError("scale_by_adam_mini: block='rows' needs view, the shape whose last axis forms a block")
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_adam_mini")
    check_range("b2", b2, 0.0, 1.0, high_open=True, where="scale_by_adam_mini")

    def shaped(p):
        return p.reshape(view) if block == "rows" else p

    def init(params):
        m = gt.tree_map(lambda p: jnp.zeros(shaped(p).shape, jnp.float32), params)
        if block == "element":
            v = gt.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        elif block == "rows":
            v = gt.tree_map(lambda p: jnp.zeros(shaped(p).shape[:-1], jnp.float32), params)
        else:
            v = gt.tree_map(lambda p: jnp.zeros((), jnp.float32), params)
        dimension = gt.tree_map(lambda p: jnp.asarray(math.prod(p.shape), jnp.float32), params)
        element = block == "element"
        return ScaleByAdamMiniState(gt.zero_count(), m, v if element else None, None if element else v,
                                    dimension if block == "tensor" else None)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = gt.safe_increment(state.count)
        beta1, beta2 = value_at(b1, state.count), value_at(b2, state.count)
        t = count.astype(jnp.result_type(float))
        bc1 = (1.0 - beta1**t).astype(jnp.float32)
        bc2_sq = jnp.sqrt(1.0 - beta2**t).astype(jnp.float32)
        # the reference's weights are Python floats (1 - beta, in float64) used by float32 kernels
        w1, w2 = jnp.asarray(1.0 - beta1).astype(jnp.float32), jnp.asarray(1.0 - beta2).astype(jnp.float32)
        eps_t = value_at(eps, state.count)

        def leaf(u, m, v, dimension):
            g = shaped(u.astype(jnp.float32))
            m = torch_lerp(m, g, w1)
            if block == "element":
                v = v * jnp.asarray(beta2, jnp.float32) + w2 * g * g
                step = m / (jnp.sqrt(v) / bc2_sq + eps_t)
                step = step * (1.0 / bc1)
            elif block == "rows":
                v = torch_lerp(v, jnp.mean(g * g, axis=-1), w2)
                step = m / (((jnp.sqrt(v) / bc2_sq + eps_t) * bc1)[..., None])
            else:
                v = torch_lerp(v, jnp.sum(g * g) / dimension, w2)
                step = m * ((1.0 / bc1) / (jnp.sqrt(v) / bc2_sq + eps_t))
            return step.reshape(u.shape).astype(u.dtype), m, v

        treedef = jax.tree.structure(updates)
        dims = treedef.flatten_up_to(state.dimension) if block == "tensor" else [None] * treedef.num_leaves
        element = block == "element"
        results = [leaf(*args) for args in zip(treedef.flatten_up_to(updates), treedef.flatten_up_to(state.m),
                                               treedef.flatten_up_to(state.v if element else state.v_mean), dims)]
        out, m, v = (treedef.unflatten([r[i] for r in results]) for i in range(3))
        return out, ScaleByAdamMiniState(count, m, v if element else None, None if element else v, state.dimension)

    return GradientTransformation(init, update)
