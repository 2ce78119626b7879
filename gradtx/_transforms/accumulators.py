"""Accumulators of squared (or absolute) gradients: Adagrad, RMSprop, Adadelta and Adamax.

Each transform divides the update by a root of some accumulated statistic of
past gradients. torch.optim's and optax's variants of one rule are options of
the same transform (where ``eps`` sits, the initial accumulator, centering);
the step size, weight decay, momentum and ``maximize`` are separate transforms
placed around these in a chain.

Every state keeps a step ``count`` (torch's ``step``), so any numeric
hyperparameter may also be a schedule ``count -> value``. Second moments of
complex parameters are real (:math:`|g|^2`), as in :func:`gradtx.scale_by_adam`.

Each slot may be stored in its own dtype (keyword-only ``<slot>_dtype`` options,
gradtx's: optax has none here): it is updated in the wider of the gradient's and
the slot's dtype and stored rounded, as :func:`gradtx.scale_by_adam` does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation
from gradtx._transforms._slots import slot_zeros, widen_slots, widen_updates


__all__ = [
    "ScaleByRssState", "ScaleByRmsState", "ScaleByRStdDevState", "ScaleByAdaDeltaState", "ScaleByAdamaxState",
    "scale_by_rss", "scale_by_rms", "scale_by_stddev", "scale_by_adadelta", "scale_by_adamax",
]


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's step
    sum_of_squares: Any  # like params (real dtype, or sum_of_squares_dtype): running sum of |g|^2, torch's sum


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's step
    nu: Any  # like params (real dtype, or nu_dtype): moving average of |g|^2, torch's square_avg


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's step
    mu: Any  # like params (or mu_dtype): moving average of g, torch's grad_avg
    nu: Any  # like params (real dtype, or nu_dtype): moving average of |g|^2, torch's square_avg


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's step
    e_g: Any  # like params (real dtype): moving average of |g|^2, torch's square_avg
    e_x: Any  # like params (real dtype): moving average of |update|^2, torch's acc_delta


class ScaleByAdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's step
    mu: Any  # like params (or mu_dtype): first moment, torch's exp_avg
    nu: Any  # like params (real dtype, or nu_dtype): decayed infinity norm, torch's exp_inf


def _abs_sq(g: jax.Array) -> jax.Array:
    """``|g|^2``, real for complex ``g``."""
    return jnp.real(g * jnp.conj(g)) if jnp.iscomplexobj(g) else g * g


def _real_full_like(params: Any, value: Any, dtype: Any = None) -> Any:
    """``value`` shaped like each leaf, in ``dtype`` or the leaf's real dtype (``value`` may be traced)."""
    return gt.tree_map(lambda z: z + jnp.asarray(value).astype(z.dtype), slot_zeros(params, dtype, real=True))


def _divide_by_root(g: jax.Array, v: jax.Array, eps: Any, eps_in_sqrt: bool) -> jax.Array:
    r"""``g / sqrt(v + eps)`` or ``g / (sqrt(v) + eps)``, in ``g``'s dtype."""
    if eps_in_sqrt:
        return (jax.lax.rsqrt(v + eps) * g).astype(g.dtype)
    return (g / (jnp.sqrt(v) + eps)).astype(g.dtype)


def scale_by_rss(initial_accumulator_value: Any = 0.1, eps: Any = 1e-7, *,
                 eps_in_sqrt: bool = True, sum_of_squares_dtype: Any = None) -> GradientTransformation:
    r"""Divides updates by the root of the sum of all squared gradients so far: Adagrad's rescaling.

    .. math::
        s_t = s_{t-1} + |g_t|^2, \qquad
        u_t = \begin{cases} g_t / \sqrt{s_t + \epsilon} \ (0 \text{ where } s_t = 0) & \text{eps\_in\_sqrt} \\
                            g_t / (\sqrt{s_t} + \epsilon) & \text{otherwise} \end{cases}

    Duchi et al., 2011 (https://jmlr.org/papers/v12/duchi11a.html). The defaults are
    ``optax.scale_by_rss``; torch.optim.Adagrad is ``initial_accumulator_value=0,
    eps=1e-10, eps_in_sqrt=False`` (its ``lr_decay`` is a step-size schedule, see
    :func:`gradtx.optim.chains.adagrad_chain`).

    Args:
      initial_accumulator_value: :math:`s_0`, the starting value of the sum (>= 0).
      eps: :math:`\epsilon`, keeps the denominator away from zero.
      eps_in_sqrt: add ``eps`` under the square root (optax) or after it (torch).
      sum_of_squares_dtype: the accumulator's dtype (``None``: the parameters' real dtype).
    """
    check_range("initial_accumulator_value", initial_accumulator_value, 0.0, where="scale_by_rss")
    check_range("eps", eps, 0.0, where="scale_by_rss")

    def init(params):
        sums = _real_full_like(params, initial_accumulator_value, sum_of_squares_dtype)
        return ScaleByRssState(count=gt.zero_count(), sum_of_squares=sums)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        epsilon = value_at(eps, state.count)
        sums = gt.tree_map(lambda g, s: s + _abs_sq(g), widen_updates(updates, state.sum_of_squares),
                           widen_slots(state.sum_of_squares, updates))
        if eps_in_sqrt:
            scaled = lambda g, s: jnp.where(s > 0, _divide_by_root(g, s, epsilon, True), 0).astype(g.dtype)  # noqa: E731
        else:
            scaled = lambda g, s: _divide_by_root(g, s, epsilon, False)  # noqa: E731
        updates = gt.tree_map(scaled, updates, sums)
        sums = gt.tree_cast_like(sums, state.sum_of_squares)
        return updates, ScaleByRssState(count=gt.safe_increment(state.count), sum_of_squares=sums)

    return GradientTransformation(init, update)


def _rms_like(decay: Any, eps: Any, initial_scale: Any, eps_in_sqrt: bool, bias_correction: bool,
              centered: bool, where: str, mu_dtype: Any = None, nu_dtype: Any = None) -> GradientTransformation:
    """The shared body of :func:`scale_by_rms` (``centered=False``) and :func:`scale_by_stddev`."""
    check_range("decay", decay, 0.0, 1.0, where=where)
    check_range("eps", eps, 0.0, where=where)
    check_range("initial_scale", initial_scale, 0.0, where=where)

    def init(params):
        nu = _real_full_like(params, initial_scale, nu_dtype)
        if centered:
            return ScaleByRStdDevState(count=gt.zero_count(), mu=slot_zeros(params, mu_dtype), nu=nu)
        return ScaleByRmsState(count=gt.zero_count(), nu=nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        rho, epsilon = value_at(decay, state.count), value_at(eps, state.count)
        count = gt.safe_increment(state.count)
        correct = (lambda m: gt.bias_correction(m, rho, count)) if bias_correction else (lambda m: m)
        nu = gt.update_moment_per_elem_norm(widen_updates(updates, state.nu), widen_slots(state.nu, updates), rho, 2)
        if centered:
            mu = gt.update_moment(widen_updates(updates, state.mu), widen_slots(state.mu, updates), rho, 1)
            variance = gt.tree_map(lambda v, m: v - _abs_sq(m), correct(nu), correct(mu))
            mu = gt.tree_cast_like(mu, state.mu)
        else:
            variance = correct(nu)
        nu = gt.tree_cast_like(nu, state.nu)
        updates = gt.tree_map(lambda g, v: _divide_by_root(g, v, epsilon, eps_in_sqrt), updates, variance)
        if centered:
            return updates, ScaleByRStdDevState(count=count, mu=mu, nu=nu)
        return updates, ScaleByRmsState(count=count, nu=nu)

    return GradientTransformation(init, update)


def scale_by_rms(decay: Any = 0.9, eps: Any = 1e-8, initial_scale: Any = 0.0, eps_in_sqrt: bool = True,
                 bias_correction: bool = False, *, nu_dtype: Any = None) -> GradientTransformation:
    r"""Divides updates by the root of a moving average of squared gradients: RMSprop's rescaling.

    .. math::
        v_t = \rho\, v_{t-1} + (1-\rho)\, |g_t|^2, \qquad
        u_t = \begin{cases} g_t / \sqrt{\hat v_t + \epsilon} & \text{eps\_in\_sqrt} \\
                            g_t / (\sqrt{\hat v_t} + \epsilon) & \text{otherwise} \end{cases}

    with :math:`\hat v_t = v_t / (1-\rho^t)` when ``bias_correction`` else :math:`v_t`
    (Tieleman & Hinton, 2012, Lecture 6.5 of "Neural Networks for Machine Learning").
    The defaults are ``optax.scale_by_rms``; torch.optim.RMSprop (non-centered) is
    ``decay=alpha, eps_in_sqrt=False``. With ``eps_in_sqrt=False, bias_correction=True``
    this is Adam's rescaling without a first moment.

    Args:
      decay: :math:`\rho`, torch's ``alpha``.
      eps: :math:`\epsilon`, keeps the denominator away from zero.
      initial_scale: :math:`v_0` (>= 0).
      eps_in_sqrt: add ``eps`` under the square root (optax) or after it (torch).
      bias_correction: divide :math:`v_t` by :math:`1-\rho^t`.
      nu_dtype: the moving average's dtype (``None``: the parameters' real dtype).
    """
    return _rms_like(decay, eps, initial_scale, eps_in_sqrt, bias_correction, False, "scale_by_rms", nu_dtype=nu_dtype)


def scale_by_stddev(decay: Any = 0.9, eps: Any = 1e-8, initial_scale: Any = 0.0, eps_in_sqrt: bool = True,
                    bias_correction: bool = False, *, mu_dtype: Any = None, nu_dtype: Any = None
                    ) -> GradientTransformation:
    r"""Divides updates by a moving estimate of the gradients' standard deviation: centered RMSprop.

    .. math::
        m_t = \rho\, m_{t-1} + (1-\rho)\, g_t, \quad
        v_t = \rho\, v_{t-1} + (1-\rho)\, |g_t|^2, \quad
        u_t = \begin{cases} g_t / \sqrt{\hat v_t - |\hat m_t|^2 + \epsilon} & \text{eps\_in\_sqrt} \\
                            g_t / (\sqrt{\hat v_t - |\hat m_t|^2} + \epsilon) & \text{otherwise} \end{cases}

    with hats marking bias correction when ``bias_correction`` is set (Graves, 2013,
    https://arxiv.org/abs/1308.0850). The defaults are ``optax.scale_by_stddev``;
    torch.optim.RMSprop with ``centered=True`` is ``decay=alpha, eps_in_sqrt=False``.

    Args:
      decay: :math:`\rho`, torch's ``alpha``.
      eps: :math:`\epsilon`, keeps the denominator away from zero.
      initial_scale: :math:`v_0` (>= 0).
      eps_in_sqrt: add ``eps`` under the square root (optax) or after it (torch).
      bias_correction: divide both moments by :math:`1-\rho^t`.
      mu_dtype: the mean's dtype (``None``: the parameters').
      nu_dtype: the moving average of squares' dtype (``None``: the parameters' real dtype).
    """
    return _rms_like(decay, eps, initial_scale, eps_in_sqrt, bias_correction, True, "scale_by_stddev",
                     mu_dtype, nu_dtype)


def scale_by_adadelta(rho: Any = 0.9, eps: Any = 1e-6) -> GradientTransformation:
    r"""Adadelta's rescaling: the ratio of the RMS of past updates to the RMS of gradients.

    .. math::
        a_t = \rho\, a_{t-1} + (1-\rho)\, |g_t|^2, \quad
        u_t = \frac{\sqrt{d_{t-1} + \epsilon}}{\sqrt{a_t + \epsilon}}\, g_t, \quad
        d_t = \rho\, d_{t-1} + (1-\rho)\, |u_t|^2

    Zeiler, 2012 (https://arxiv.org/abs/1212.5701). This is ``optax.scale_by_adadelta``
    and the step direction of torch.optim.Adadelta, which then multiplies by ``lr``
    (eps sits under both roots in both libraries).

    Args:
      rho: :math:`\rho`, the decay of both averages.
      eps: :math:`\epsilon`, added under both square roots.
    """
    check_range("rho", rho, 0.0, 1.0, where="scale_by_adadelta")
    check_range("eps", eps, 0.0, where="scale_by_adadelta")

    def init(params):
        return ScaleByAdaDeltaState(count=gt.zero_count(), e_g=gt.tree_real_zeros_like(params),
                                    e_x=gt.tree_real_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        decay, epsilon = value_at(rho, state.count), value_at(eps, state.count)
        e_g = gt.tree_cast_like(gt.update_moment_per_elem_norm(updates, state.e_g, decay, 2), state.e_g)
        updates = gt.tree_map(lambda g, a, d: (jnp.sqrt(d + epsilon) / jnp.sqrt(a + epsilon) * g).astype(g.dtype),
                              updates, e_g, state.e_x)
        e_x = gt.tree_cast_like(gt.update_moment_per_elem_norm(updates, state.e_x, decay, 2), state.e_x)
        return updates, ScaleByAdaDeltaState(count=gt.safe_increment(state.count), e_g=e_g, e_x=e_x)

    return GradientTransformation(init, update)


def scale_by_adamax(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, *, mu_dtype: Any = None,
                    nu_dtype: Any = None) -> GradientTransformation:
    r"""Adamax's rescaling: Adam with the infinity norm in place of the second moment.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \quad
        u^\infty_t = \max(\beta_2\, u^\infty_{t-1},\ |g_t| + \epsilon), \quad
        u_t = \frac{m_t}{(1-\beta_1^t)\, u^\infty_t}

    Kingma & Ba, 2015, section 7 (https://arxiv.org/abs/1412.6980). This is
    ``optax.scale_by_adamax`` and the direction of torch.optim.Adamax: both put
    ``eps`` inside the maximum and bias-correct only the first moment.

    Args:
      b1: :math:`\beta_1`, decay of the first moment.
      b2: :math:`\beta_2`, decay of the infinity norm.
      eps: :math:`\epsilon`, added to :math:`|g_t|` inside the maximum.
      mu_dtype: the first moment's dtype (``None``: the parameters').
      nu_dtype: the infinity norm's dtype (``None``: the parameters' real dtype).
    """
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_adamax")
    check_range("b2", b2, 0.0, 1.0, where="scale_by_adamax")
    check_range("eps", eps, 0.0, where="scale_by_adamax")

    def init(params):
        return ScaleByAdamaxState(count=gt.zero_count(), mu=slot_zeros(params, mu_dtype),
                                  nu=slot_zeros(params, nu_dtype, real=True))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, epsilon = value_at(b1, state.count), value_at(b2, state.count), value_at(eps, state.count)
        count = gt.safe_increment(state.count)
        mu = gt.update_moment(widen_updates(updates, state.mu), widen_slots(state.mu, updates), beta1, 1)
        nu = gt.tree_map(lambda g, u: jnp.maximum(beta2 * u, jnp.abs(g) + epsilon),
                         widen_updates(updates, state.nu), widen_slots(state.nu, updates))
        updates = gt.tree_map(lambda m, u, g: (m / u).astype(g.dtype), gt.bias_correction(mu, beta1, count), nu, updates)
        return updates, ScaleByAdamaxState(count=count, mu=gt.tree_cast_like(mu, state.mu),
                                           nu=gt.tree_cast_like(nu, state.nu))

    return GradientTransformation(init, update)
