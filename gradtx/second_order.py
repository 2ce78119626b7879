"""Second-order quantities of a loss: Hessian-vector products and the diagonals of the Hessian and the
empirical Fisher, as ``optax.second_order`` (optax 0.2.8; optax deprecates its module, gradtx keeps it).

Each takes ``loss(params, inputs, targets)`` and works on the parameters
flattened into one vector (``jax.flatten_util.ravel_pytree``'s order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import flatten_util

__all__ = ["hvp", "hessian_diag", "fisher_diag"]

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _ravel(tree: Any) -> jax.Array:
    return flatten_util.ravel_pytree(tree)[0]


def hvp(loss: LossFn, v: jax.Array, params: Any, inputs: jax.Array, targets: jax.Array) -> Any:
    r"""The Hessian-vector product :math:`\nabla^2 \ell(\theta)\, v` by forward-over-reverse differentiation
    (Pearlmutter, 1994, https://doi.org/10.1162/neco.1994.6.1.147).

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      v: a flat vector with as many elements as ``params``.
      params: the point :math:`\theta`.
      inputs: the loss's inputs.
      targets: the loss's targets.

    Returns:
      The product, shaped like ``params``.
    """
    _, unravel = flatten_util.ravel_pytree(params)
    return jax.jvp(jax.grad(lambda p: loss(p, inputs, targets)), [params], [unravel(v)])[1]


def hessian_diag(loss: LossFn, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    r"""The diagonal of the Hessian, :math:`\operatorname{diag} \nabla^2 \ell(\theta)`, as a flat vector.

    Computed exactly, one Hessian-vector product per parameter (:math:`e_i^\top H e_i`): for small models.

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      params: the point :math:`\theta`.
      inputs: the loss's inputs.
      targets: the loss's targets.
    """
    basis = jnp.eye(_ravel(params).size)
    return jax.vmap(lambda v: jnp.vdot(v, _ravel(hvp(loss, v, params, inputs, targets))))(basis)


def fisher_diag(negative_log_likelihood: LossFn, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    r"""The diagonal of the empirical Fisher on one batch, :math:`(\nabla_\theta (-\log p))^2`, as a flat vector
    (Martens, 2020, https://arxiv.org/abs/1412.1193).

    Args:
      negative_log_likelihood: ``nll(params, inputs, targets) -> scalar``.
      params: the point :math:`\theta`.
      inputs: the inputs.
      targets: the targets.
    """
    return jnp.square(_ravel(jax.grad(negative_log_likelihood)(params, inputs, targets)))
