r"""Sophia: clipped steps preconditioned by a Hessian-diagonal estimate (Liu et al., 2023,
https://arxiv.org/abs/2305.14342).

- :func:`hutchinson_estimator_diag_hessian` and :func:`scale_by_sophia` follow
  ``optax.contrib`` (Sophia-H as levanter writes it: bias-corrected momentum,
  ``gamma``-scaled Hessian EMA, clipping to ``clip_threshold``) and draw the same
  Rademacher probes from the same keys.
- :func:`scale_by_sophia_h` is the step of pytorch-optimizer's ``SophiaH``: no bias
  correction, ``momentum / max(hessian_moment, eps)`` clipped to :math:`\pm p`, the
  Hessian estimate arriving in the state (its facade computes it from the loss).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformation, with_extra_args_support

__all__ = ["HutchinsonState", "SophiaState", "SophiaHState", "hutchinson_estimator_diag_hessian",
           "scale_by_sophia", "scale_by_sophia_h"]


class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`."""

    key: jax.Array  # a raw uint32 PRNG key (shape (2,)), split once per estimate


class SophiaState(NamedTuple):
    """State of :func:`scale_by_sophia`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): the gradient's EMA
    nu: Any  # like params: the EMA of the Hessian-diagonal estimates
    hessian_fn_state: Any  # the Hessian estimator's state


class SophiaHState(NamedTuple):
    """State of :func:`scale_by_sophia_h` (pytorch-optimizer's ``SophiaH`` names in the comments)."""

    momentum: Any  # like params: the gradient's EMA, ``momentum``
    hessian_moment: Any  # like params: the EMA of the Hessian-diagonal estimates, ``hessian_moment``
    hessian: Any  # like params: the latest Hessian-diagonal estimate, ``hessian``


def _lowest_dtype(tree: Any) -> Any:
    """The dtype every leaf's dtype promotes to from below (optax's ``tree.dtype(tree, "lowest")``)."""
    dtypes = {jnp.asarray(x).dtype for x in gt.array_leaves(tree)}
    for d in dtypes:
        if all(jnp.promote_types(d, other) == other for other in dtypes):
            return d
    raise ValueError(f"the leaves' dtypes {sorted(map(str, dtypes))} have no lowest dtype; cast them to one")


def hutchinson_estimator_diag_hessian(random_seed: jax.Array | None = None) -> GradientTransformation:
    r"""Estimates the Hessian diagonal by Hutchinson's method, as ``optax.contrib.hutchinson_estimator_diag_hessian``.

    .. math::
        \widehat{\operatorname{diag} H} = z \odot (H z), \qquad z_i \in \{-1, +1\} \text{ uniformly}

    Each update splits the state's key into (next key, sample key), the sample key
    into one key per leaf, draws float32 Rademacher signs (cast to the leaves'
    lowest dtype) and computes :math:`Hz` by forward-over-reverse differentiation
    of ``obj_fn``. The incoming updates are ignored.

    Args:
      random_seed: a raw PRNG key (``jax.random.PRNGKey``); ``PRNGKey(0)`` by default.

    Returns:
      A transformation whose ``update(updates, state, params, obj_fn=...)`` needs
      ``params`` and ``obj_fn: params -> scalar loss``; state :class:`HutchinsonState`.
    """

    def init(params):
        del params
        return HutchinsonState(key=jax.random.PRNGKey(0) if random_seed is None else random_seed)

    def update(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError("params must be provided to hutchinson update function.")
        if obj_fn is None:
            raise ValueError("obj_fn must be provided to hutchinson update function.")
        key, sample_key = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(sample_key, treedef.num_leaves)
        dtype = _lowest_dtype(params)
        signs = treedef.unflatten([jax.random.rademacher(k, jnp.shape(p), jnp.float32).astype(dtype)
                                   for p, k in zip(leaves, keys)])
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return jax.tree.map(lambda h, r: h * r, hvp, signs), HutchinsonState(key=key)

    return GradientTransformation(init, update)


def scale_by_sophia(b1: Any = 0.965, b2: Any = 0.99, eps: Any = 1e-8, gamma: Any = 0.01,
                    clip_threshold: Any | None = 1.0, update_interval: Any = 10,
                    hessian_diagonal_fn: GradientTransformation | None = None, mu_dtype: Any = None,
                    verbose: bool = False, print_win_rate_every_n_steps: Any = 0) -> GradientTransformation:
    r"""Sophia's preconditioned, clipped direction, as ``optax.contrib``'s ``scale_by_sophia``.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \operatorname{clip}\Bigl(\frac{m_t / (1-\beta_1^t)}{\max(\gamma h_{t-1}, \epsilon)}, \pm c\Bigr), \\
        h_t = \beta_2 h_{t-1} + (1-\beta_2)\,\widehat{\operatorname{diag} H}_t
        \ \text{ at steps } 0, k, 2k, \dots, \text{ else } h_{t-1}

    The step uses the Hessian EMA from *before* this step's estimate, as optax's does.

    Args:
      b1: the momentum's decay rate.
      b2: the Hessian EMA's decay rate (per estimate, every ``update_interval`` steps).
      eps: the floor of the denominator.
      gamma: scales the Hessian estimate.
      clip_threshold: :math:`c`; None does not clip.
      update_interval: :math:`k`, steps between Hessian estimates.
      hessian_diagonal_fn: the estimator, a transformation ``(grads, state, params, **extra) ->
        (diag estimate, state)``; :func:`hutchinson_estimator_diag_hessian` by default (it needs
        ``obj_fn=`` in the update's extra arguments).
      mu_dtype: the momentum's dtype (None: the parameters').
      verbose: print the fraction of unclipped entries every ``print_win_rate_every_n_steps`` steps.
      print_win_rate_every_n_steps: the printing period.

    Returns:
      A GradientTransformation whose state is a :class:`SophiaState`; ``update`` needs ``params``.
    """
    hessian_fn = with_extra_args_support(
        hutchinson_estimator_diag_hessian() if hessian_diagonal_fn is None else hessian_diagonal_fn)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init(params):
        return SophiaState(count=gt.zero_count(), mu=gt.tree_zeros_like(params, mu_dtype),
                           nu=gt.tree_zeros_like(params), hessian_fn_state=hessian_fn.init(params))

    def update(updates, state, params=None, **hess_fn_kwargs):
        if params is None:
            raise ValueError("params must be provided to sophia's update function.")
        count = gt.safe_increment(state.count)
        grads = updates
        mu = gt.update_moment(updates, state.mu, b1, 1)
        mu_hat = gt.bias_correction(mu, b1, count)
        updates = jax.tree.map(lambda m, h: m / jnp.maximum(gamma * h, eps), mu_hat, state.nu)
        if clip_threshold is not None:
            if verbose:
                unclipped = sum(jnp.sum(jnp.abs(u) < clip_threshold) for u in jax.tree.leaves(updates))
                win_rate = unclipped / sum(jnp.size(u) for u in jax.tree.leaves(updates))
                jax.lax.cond(count % print_win_rate_every_n_steps == 0,
                             lambda: jax.debug.print("Sophia optimizer win rate: {}", win_rate), lambda: None)
            updates = jax.tree.map(lambda u: jnp.clip(u, -clip_threshold, clip_threshold), updates)

        def estimate(hess_state, nu):
            diag, hess_state = hessian_fn.update(grads, hess_state, params=params, **hess_fn_kwargs)
            return hess_state, gt.update_moment(diag, nu, b2, 1)

        hess_state, nu = jax.lax.cond(state.count % update_interval == 0, estimate, lambda h, n: (h, n),
                                      state.hessian_fn_state, state.nu)
        return updates, SophiaState(count, gt.tree_cast(mu, mu_dtype), nu, hess_state)

    return GradientTransformation(init, update)


def scale_by_sophia_h(betas: Any = (0.96, 0.99), eps: Any = 1e-12, p: Any = 1e-2,
                      update_hessian: Any = True) -> GradientTransformation:
    r"""pytorch-optimizer's ``SophiaH`` direction, with the Hessian estimate read from the state.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        h_t = \beta_2 h_{t-1} + (1-\beta_2)\,\hat H_t \ \text{(when an estimate arrived, else } h_{t-1}), \\
        u_t = \operatorname{clip}\bigl(m_t / \max(h_t, \epsilon), -p, p\bigr)

    ``hessian`` in the state holds the latest estimate :math:`\hat H_t` (the facade
    writes it before a step, from Hutchinson probes of the loss); ``update_hessian``
    (a bool or a 0/1 number, possibly traced) says whether this step folds it in.
    Unlike :func:`scale_by_sophia`, the step uses the Hessian EMA *after* this step's
    estimate and the momentum is not bias-corrected.

    Args:
      betas: :math:`(\beta_1, \beta_2)`.
      eps: the floor of the denominator.
      p: the clipping bound.
      update_hessian: whether this step's ``hessian`` is new.

    Returns:
      A GradientTransformation whose state is a :class:`SophiaHState`.
    """
    b1, b2 = betas

    def init(params):
        return SophiaHState(*(gt.tree_zeros_like(params) for _ in range(3)))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        momentum = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.momentum, updates)
        fresh = jnp.asarray(update_hessian) != 0
        moment = jax.tree.map(lambda h, e: jnp.where(fresh, h + (1 - b2) * (e - h), h),
                              state.hessian_moment, state.hessian)
        out = jax.tree.map(lambda m, h: jnp.clip(m / jnp.maximum(h, eps), -p, p), momentum, moment)
        return out, SophiaHState(momentum, moment, state.hessian)

    return GradientTransformation(init, update)

