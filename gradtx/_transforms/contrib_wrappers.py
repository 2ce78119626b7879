r"""Wrappers and gradient filters of ``optax.contrib``: SAM, Mechanic, global normalisation, split complex
numbers and differentially private aggregation.

Each follows the ``optax.contrib`` function of the same name (optax 0.2.8): the
same arguments and defaults, the same state fields, the same numbers (and, for
the private aggregation, the same noise for the same key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import NO_PARAMS_MSG, EmptyState, GradientTransformation, apply_updates, with_extra_args_support
from gradtx._transforms.step_rules import resolve_key

__all__ = [
    "NormalizeState", "normalize", "SAMState", "sam", "MechanicState", "mechanize",
    "SplitRealAndImaginaryArrays", "SplitRealAndImaginaryState", "split_real_and_imaginary",
    "DifferentiallyPrivateAggregateState", "differentially_private_aggregate",
]


# --------------------------------------------------------------------------- normalize and SAM

NormalizeState = EmptyState


def normalize() -> GradientTransformation:
    r"""Divides the updates by their global norm, :math:`u = g / \|g\|` (``optax.contrib.normalize``).

    SAM's usual adversarial step is ``chain(normalize(), sgd(rho))``.
    """

    def init(params):
        del params
        return NormalizeState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        g_norm = gt.norm(updates)
        return jax.tree.map(lambda g: g / g_norm, updates), state

    return GradientTransformation(init, update)


class SAMState(NamedTuple):
    """State of :func:`sam`."""

    steps_since_sync: jax.Array  # shape=(), dtype=int32: steps since the outer optimizer last stepped
    opt_state: Any  # the outer optimizer's state
    adv_state: Any  # the adversarial optimizer's state
    cache: Any  # like params, or None in opaque mode: the parameters at the last outer step


def _pick(cond: jax.Array, if_true: Any, if_false: Any) -> Any:
    """``if_true`` where ``cond`` else ``if_false``, leafwise, by arithmetic (as optax picks, so NaNs spread alike)."""
    return jax.tree.map(lambda t, f: cond * t + (1 - cond) * f, if_true, if_false)


def sam(optimizer: GradientTransformation, adv_optimizer: GradientTransformation, sync_period: int = 2,
        reset_state: bool = True, opaque_mode: bool = False,
        batch_axis_name: str | None = None) -> GradientTransformation:
    r"""Sharpness-Aware Minimization (Foret et al., 2021, https://arxiv.org/abs/2010.01412), as ``optax.contrib.sam``.

    ``adv_optimizer`` climbs for ``sync_period - 1`` steps (its updates are negated,
    so ``chain(normalize(), sgd(rho))`` ascends by :math:`\rho\, g / \|g\|`); then
    ``optimizer`` steps from the parameters cached before the climb, with the
    gradient at the climbed point.

    In the default (transparent) mode every call is one of those steps, so the
    training loop sees the adversarial points. With ``opaque_mode=True`` one call
    does the whole cycle and needs ``grad_fn(params, i) -> grads`` as an extra
    argument of ``update``.

    Example::

        tx = gradtx.sam(gradtx.sgd(0.1), gradtx.chain(gradtx.normalize(), gradtx.sgd(0.05)))
        # every call: grads at the current params; odd calls climb, even calls take the outer step
        updates, state = tx.update(grads, state, params)

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the adversarial optimizer (its updates are negated).
      sync_period: adversarial steps plus one outer step per cycle.
      reset_state: re-initialise ``adv_optimizer``'s state after each outer step.
      opaque_mode: do the whole cycle in one ``update`` call.
      batch_axis_name: in opaque mode, ``pmean`` the adversarial gradients over this axis.

    Raises:
      ValueError: if ``sync_period < 1``; in opaque mode, at ``update`` without ``grad_fn``.
    """
    if sync_period < 1:
        raise ValueError(f"Synchronization period must be >= 1 (sam got sync_period={sync_period}).")

    def init(params):
        return SAMState(steps_since_sync=jnp.zeros([], jnp.int32), opt_state=optimizer.init(params),
                        adv_state=adv_optimizer.init(params), cache=None if opaque_mode else gt.tree_copy(params))

    def transparent_update(updates, state, params=None, *, grad_fn: Callable | None = None, **extra_args):
        del grad_fn, extra_args
        first_step = state.steps_since_sync == 0
        last_step = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
        adv_updates = jax.tree.map(jnp.negative, adv_updates)
        opt_updates, opt_state = optimizer.update(updates, state.opt_state, state.cache)
        # The outer step starts from the cached parameters, so the update first undoes the climb.
        opt_updates = jax.tree.map(lambda c, p, u: c - p + u, state.cache, params, opt_updates)
        cache = _pick(first_step, params, state.cache)
        updates = _pick(last_step, opt_updates, adv_updates)
        adv_after_sync = adv_optimizer.init(params) if reset_state else state.adv_state
        return updates, SAMState(steps_since_sync=(state.steps_since_sync + 1) % sync_period,
                                 opt_state=_pick(last_step, opt_state, state.opt_state),
                                 adv_state=_pick(last_step, adv_after_sync, adv_state), cache=cache)

    def opaque_update(updates, state, params=None, *, grad_fn: Callable | None = None, **extra_args):
        del extra_args
        if grad_fn is None:
            raise ValueError("grad_fn must be provided when opaque_mode=True: call "
                             "update(grads, state, params, grad_fn=lambda params, i: grads_at(params)).")
        adv_params, adv_updates, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params)
            adv_params = apply_updates(adv_params, jax.tree.map(jnp.negative, adv_updates))
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        updates, opt_state = optimizer.update(adv_updates, state.opt_state, params)
        return updates, SAMState(steps_since_sync=jnp.zeros([], jnp.int32), opt_state=opt_state,
                                 adv_state=adv_state, cache=None)

    return GradientTransformation(init, opaque_update if opaque_mode else transparent_update)


# --------------------------------------------------------------------------- Mechanic


class MechanicState(NamedTuple):
    """State of :func:`mechanize`."""

    base_optimizer_state: Any  # the wrapped optimizer's state
    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    r: jax.Array  # shape=(num_betas,), lowest params dtype: the betting rewards
    m: jax.Array  # shape=(num_betas,): the running maxima of |h|
    v: jax.Array  # shape=(num_betas,): the running second moments of h
    s: jax.Array  # shape=(num_betas,): the scale bets; their sum scales the base updates
    x0: Any  # like params: the parameters at the first step


def mechanize(base_optimizer: Any, weight_decay: Any = 1e-2, eps: Any = 1e-8, s_init: Any = 1e-6,
              num_betas: int = 6) -> GradientTransformation:
    r"""Mechanic: learns a scale for another optimizer's updates (Cutkosky et al., 2023,
    https://arxiv.org/abs/2306.00144), as ``optax.contrib.mechanize``.

    The parameters are kept at :math:`x_0 + s \Delta_t`, where :math:`\Delta_t`
    sums ``base_optimizer``'s updates and the scale :math:`s = \sum_i s_i` comes
    from ``num_betas`` parallel coin bettors (decays :math:`1 - 10^{-i}`) fed with
    :math:`h_t = \langle g_t + \lambda s \frac{\|g_t\|}{\|x_t\|} x_t, \Delta_{t-1}\rangle`.

    Args:
      base_optimizer: the optimizer to tune (its learning rate is best 1).
      weight_decay: :math:`\lambda`, the bettors' weight decay.
      eps: keeps divisions finite.
      s_init: the bettors' initial wealth.
      num_betas: how many bettors.
    """
    base_optimizer = with_extra_args_support(base_optimizer)

    def init(params):
        lowest = gt.dtype(params, "lowest")
        zeros = lambda: jnp.zeros([num_betas], dtype=lowest)  # noqa: E731 - three buffers (a step donates each)
        return MechanicState(base_optimizer_state=base_optimizer.init(params), count=gt.zero_count(), r=zeros(),
                             m=zeros(), v=zeros(), s=jnp.ones([num_betas], dtype=lowest) * s_init,
                             x0=gt.tree_copy(params))

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        base_updates, base_state = base_optimizer.update(updates, state.base_optimizer_state, params, **extra_args)
        x0 = jax.lax.cond(state.count == 0, lambda: params, lambda: state.x0)
        s_sum = jnp.sum(state.s)
        decay_scale = weight_decay * s_sum * gt.norm(updates) / (gt.norm(params) + eps)
        updates = jax.tree.map(lambda g, p: g + decay_scale * p, updates, params)
        delta_prev = jax.tree.map(lambda x, x0: (x0 - x) / (s_sum + eps), params, x0)
        delta = jax.tree.map(lambda d, u: d - u, delta_prev, base_updates)
        h = gt.vdot(updates, delta_prev)
        clipped_h = jax.lax.clamp(-state.m, jnp.ones_like(state.m) * h, state.m)
        betas = jnp.array([1.0 - 0.1**i for i in range(1, num_betas + 1)], dtype=state.s.dtype)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = betas**2 * state.v + h**2
        r = betas * state.r + clipped_h * state.s
        wealth = (s_init / jnp.size(betas)) * m + jnp.maximum(0.0, r)
        s = wealth / (jnp.sqrt(v) + eps)
        new = jax.tree.map(lambda x0, d, x: x0 - jnp.sum(s) * d - x, x0, delta, params)
        return new, MechanicState(base_optimizer_state=base_state, count=gt.safe_increment(state.count),
                                  r=r, m=m, v=v, s=s, x0=x0)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- complex numbers as real pairs


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex leaf as its two real parts."""

    real: Any  # the real part
    imaginary: Any  # the imaginary part


class SplitRealAndImaginaryState(NamedTuple):
    """State of :func:`split_real_and_imaginary`."""

    inner_state: Any  # the inner transformation's state over the split tree


def _split(x: Any) -> Any:
    return SplitRealAndImaginaryArrays(x.real, x.imag) if jnp.iscomplexobj(x) else x


def _join(x: Any) -> Any:
    return x.real + x.imaginary * 1j if isinstance(x, SplitRealAndImaginaryArrays) else x


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on complex leaves split into their real and imaginary parts (optax#196), as
    ``optax.contrib.split_real_and_imaginary``.

    Each complex leaf becomes a :class:`SplitRealAndImaginaryArrays` pair of real
    leaves, so ``inner`` keeps separate statistics for each part; its updates are
    joined back into complex leaves. Real leaves pass through as they are.
    (:func:`gradtx.complex_as_real` is torch's layout of the same idea.)

    Args:
      inner: the transformation to run on the split tree.
    """

    def init(params):
        return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        new, inner_state = inner.update(jax.tree.map(_split, updates), state.inner_state,
                                        jax.tree.map(_split, params))
        new = jax.tree.map(_join, new, is_leaf=lambda x: isinstance(x, SplitRealAndImaginaryArrays))
        return new, SplitRealAndImaginaryState(inner_state)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- differentially private SGD


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`."""

    rng_key: jax.Array  # a typed PRNG key (shape=()), split once per step


def per_example_global_norm_clip(grads: list, l2_norm_clip: Any) -> tuple[list, jax.Array]:
    """Clips each example's gradient to global norm ``l2_norm_clip`` and sums them.

    As ``optax.per_example_global_norm_clip``.

    Args:
      grads: arrays whose leading axis is the batch (the same size in each).
      l2_norm_clip: the largest norm of one example's gradient, over all arrays together.

    Returns:
      The clipped gradients summed over the batch, and how many examples were clipped.

    Raises:
      ValueError: if an array has no leading axis of the batch's size.
    """
    leaves = jax.tree.leaves(grads)
    batch = leaves[0].shape[0]
    if not all(g.ndim >= 1 and g.shape[0] == batch for g in leaves):
        raise ValueError("Unlike other transforms, `per_example_global_norm_clip` expects `grads` to have a batch "
                         f"dimension in the 0th axis (of size {batch} in every array); got shapes "
                         f"{[g.shape for g in leaves]}.")
    norms = jax.vmap(gt.norm)(grads)
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    clipped = jax.tree.map(lambda g: jnp.tensordot(multipliers, g, axes=1), grads)
    return clipped, jnp.sum(multipliers < 1.0)


def differentially_private_aggregate(l2_norm_clip: Any, noise_multiplier: Any, key: Any = None, *,
                                     seed: int | None = None) -> GradientTransformation:
    r"""DP-SGD's aggregation (Abadi et al., 2016, https://arxiv.org/abs/1607.00133), as
    ``optax.contrib.differentially_private_aggregate``.

    Takes per-example gradients (each leaf with a leading batch axis of size
    :math:`B`), clips each example to global norm :math:`C`, sums them, adds
    Gaussian noise of standard deviation :math:`C\sigma` and divides by :math:`B`.
    The same key gives optax's noise.

    Args:
      l2_norm_clip: :math:`C`.
      noise_multiplier: :math:`\sigma`.
      key: a ``jax.random.key`` or an integer seed.
      seed: optax's older name for an integer ``key``.
    """
    key = resolve_key(key, seed, "differentially_private_aggregate")
    noise_std = l2_norm_clip * noise_multiplier

    def init(params):
        del params
        return DifferentiallyPrivateAggregateState(rng_key=key)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        leaves, treedef = jax.tree.flatten(updates)
        batch = leaves[0].shape[0]
        clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        new_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)
        noised = [(g + noise_std * jax.random.normal(k, g.shape, g.dtype)) / batch for g, k in zip(clipped, keys)]
        return jax.tree.unflatten(treedef, noised), DifferentiallyPrivateAggregateState(rng_key=new_key)

    return GradientTransformation(init, update)
