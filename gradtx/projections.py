r"""Euclidean projections of pytrees onto convex sets, as ``optax.projections`` (optax 0.2.8).

Each ``projection_*`` returns the point of the set nearest to its input, the
whole tree taken as one vector: use them after each step of projected gradient
descent (``params = projection_box(apply_updates(params, updates), 0, 1)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import flatten_util

from gradtx import _tree_math as tm

__all__ = [
    "projection_non_negative", "projection_box", "projection_hypercube", "projection_simplex",
    "projection_l1_sphere", "projection_l1_ball", "projection_l2_sphere", "projection_l2_ball",
    "projection_linf_ball", "projection_vector", "projection_hyperplane", "projection_halfspace",
]


def projection_non_negative(tree: Any) -> Any:
    r"""Onto the non-negative orthant: :math:`\max(x, 0)` leafwise."""
    return jax.tree.map(jax.nn.relu, tree)


def projection_box(tree: Any, lower: Any, upper: Any) -> Any:
    r"""Onto the box :math:`\{x : \text{lower} \le x \le \text{upper}\}`: ``clip`` leafwise.

    Args:
      tree: the point.
      lower: the lower bounds, a scalar or a tree like ``tree``.
      upper: the upper bounds, a scalar or a tree like ``tree``.

    Scalar bounds apply to every leaf (optax 0.2.8 takes them for a single array only).
    """
    structure = jax.tree.structure(tree)
    lower, upper = (b if jax.tree.structure(b) == structure else jax.tree.map(lambda _: b, tree)
                    for b in (lower, upper))
    return jax.tree.map(jnp.clip, tree, lower, upper)


def projection_hypercube(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the hypercube :math:`[0, \text{scale}]^d`."""
    return projection_box(tree, lower=0, upper=scale)


@jax.custom_jvp
def _projection_unit_simplex(values: jax.Array) -> jax.Array:
    """Onto the unit simplex, by sorting (Duchi et al., 2008, https://doi.org/10.1145/1390156.1390191)."""
    u = jnp.sort(values)[::-1]
    cumsum_u = jnp.cumsum(u)
    # In the values' dtype: an integer range would promote float32 values to float64 when x64 is on.
    ind = jnp.arange(1, values.shape[0] + 1, dtype=values.dtype)
    idx = jnp.count_nonzero(1 / ind + (u - cumsum_u / ind) > 0)
    size = idx.astype(values.dtype)
    return jax.nn.relu(1 / size + (values - cumsum_u[idx - 1] / size))


@_projection_unit_simplex.defjvp
def _projection_unit_simplex_jvp(primals, tangents):
    (values,), (values_dot,) = primals, tangents
    out = _projection_unit_simplex(values)
    support = out > 0
    tangent = support * values_dot - (jnp.dot(support, values_dot) / jnp.count_nonzero(support)) * support
    return out, tangent


def projection_simplex(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the simplex :math:`\{x \ge 0 : \sum_i x_i = \text{scale}\}` (all leaves together).

    Keeps the leaves' dtype (optax 0.2.8 returns float64 for float32 leaves when x64 is on).

    Differentiable: its JVP is that of the projection on the support (Blondel et al., 2020,
    https://arxiv.org/abs/2002.08871).
    """
    values, unravel = flatten_util.ravel_pytree(tree)
    return unravel(scale * _projection_unit_simplex(values / scale))


def projection_l1_sphere(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the L1 sphere :math:`\{x : \|x\|_1 = \text{scale}\}`."""
    projected = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
    return tm.mul(jax.tree.map(jnp.sign, tree), projected)


def projection_l1_ball(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the L1 ball :math:`\{x : \|x\|_1 \le \text{scale}\}`."""
    return jax.lax.cond(tm.norm(tree, ord=1) <= scale, lambda t: t, lambda t: projection_l1_sphere(t, scale),
                        operand=tree)


def projection_l2_sphere(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the L2 sphere :math:`\{x : \|x\|_2 = \text{scale}\}`: :math:`\text{scale}\, x / \|x\|_2`."""
    return tm.scale(scale / tm.norm(tree), tree)


def projection_l2_ball(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the L2 ball :math:`\{x : \|x\|_2 \le \text{scale}\}`."""
    factor = scale / jnp.sqrt(jnp.maximum(tm.norm(tree, squared=True), scale**2))
    return tm.scale(factor, tree)


def projection_linf_ball(tree: Any, scale: Any = 1) -> Any:
    r"""Onto the L-infinity ball :math:`\{x : \|x\|_\infty \le \text{scale}\}`."""
    return projection_box(tree, lower=tm.full_like(tree, -scale), upper=tm.full_like(tree, scale))


def projection_vector(x: Any, a: Any) -> Any:
    r"""Onto the line spanned by ``a``: :math:`\frac{\langle x, a\rangle}{\langle a, a\rangle} a`."""
    return tm.scale(tm.vdot(x, a) / tm.vdot(a, a), a)


def projection_hyperplane(x: Any, a: Any, b: Any) -> Any:
    r"""Onto the hyperplane :math:`\{y : \langle a, y\rangle = b\}`."""
    return tm.add_scale(x, (b - tm.vdot(x, a)) / tm.vdot(a, a), a)


def projection_halfspace(x: Any, a: Any, b: Any) -> Any:
    r"""Onto the half-space :math:`\{y : \langle a, y\rangle \le b\}`."""
    scalar = jnp.clip((b - tm.vdot(x, a)) / tm.vdot(a, a), max=0)
    return tm.add_scale(x, scalar, a)
