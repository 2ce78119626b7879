r"""MARS (variance-reduced Adam/Lion) and LaProp (momentum over the normalized gradient).

MARS: Yuan et al., 2024, *MARS: Unleashing the Power of Variance Reduction for Training Large
Models*, https://arxiv.org/abs/2411.10438. LaProp: Ziyin et al., 2020, *LaProp: Separating Momentum
and Adaptivity in Adam*, https://arxiv.org/abs/2002.04839. The numbers follow ``pytorch_optimizer``
4.1.0's ``MARS`` and ``LaProp``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation

__all__ = ["ScaleByMarsState", "ScaleByLapropState", "scale_by_mars", "scale_by_laprop"]

# pytorch_optimizer adds this to the second moment under the square root (apply_ams_bound's exp_avg_sq_eps).
EPS_ROOT = 1e-15


class ScaleByMarsState(NamedTuple):
    """State of :func:`scale_by_mars`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params: first moment of the corrected gradient, pytorch_optimizer's exp_avg
    nu: Any  # like params: second moment, exp_avg_sq (untouched with sign=True)
    last_grad: Any  # like params: the previous step's gradient, last_grad
    nu_max: Any  # like params with ams_bound (max_exp_avg_sq), else None


class ScaleByLapropState(NamedTuple):
    """State of :func:`scale_by_laprop`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params: momentum of the normalized gradient (scaled by the lr), exp_avg
    nu: Any  # like params: second moment, exp_avg_sq
    lr_avg: jax.Array  # shape=(), float64 (float32 without x64): the lr averaged with decay b1, exp_avg_lr_1
    weight_avg: jax.Array  # shape=(), like lr_avg: 1 - b2^t accumulated, exp_avg_lr_2
    mean: Any  # like params with centered (exp_mean_avg_beta2), else None
    nu_max: Any  # like params with ams_bound (max_exp_avg_sq), else None


def cautious_mask(update: jax.Array, grad: jax.Array) -> jax.Array:
    """Zeroes the entries of ``update`` whose sign disagrees with ``grad`` and rescales the rest by
    ``numel / (kept + 1)`` (Liang et al., 2024, *Cautious Optimizers*, https://arxiv.org/abs/2411.16085,
    in pytorch_optimizer's ``apply_cautious`` form)."""
    mask = (update * grad > 0).astype(grad.dtype)
    mask = mask * (mask.size / (jnp.sum(mask) + 1))
    return update * mask


def _denominator(nu: jax.Array, nu_max: Any, eps: Any, ams_bound: bool) -> tuple[jax.Array, Any]:
    if ams_bound:
        nu_max = jnp.maximum(nu_max, nu)
        nu = nu_max
    return jnp.sqrt(nu + EPS_ROOT) + eps, nu_max


def _zeros_if(flag: bool, params: Any) -> Any:
    return gt.tree_map(jnp.zeros_like, params) if flag else None


def _leaves(treedef: Any, tree: Any, flag: bool = True) -> list:
    return treedef.flatten_up_to(tree) if flag else [None] * treedef.num_leaves


def scale_by_mars(b1: Any = 0.95, b2: Any = 0.99, gamma: Any = 0.025, eps: Any = 1e-8, *, correct: bool = True,
                  sign: bool = False, ams_bound: bool = False, cautious: bool = False,
                  stored_grad_decay: Any = 0.0, step: Any = None) -> GradientTransformation:
    r"""MARS's direction (https://arxiv.org/abs/2411.10438), as pytorch_optimizer's MARS computes it.

    .. math::
        c_t = g_t + \gamma \tfrac{\beta_1}{1-\beta_1} (g_t - g_{t-1}), \quad
        c_t \leftarrow c_t / \max(1, \lVert c_t \rVert), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) c_t, \\
        v_t = \beta_2 v_{t-1} + (1-\beta_2) c_t^2, \quad
        u_t = \frac{m_t}{(\sqrt{v_t + 10^{-15}} + \epsilon)\, (1-\beta_1^t) / \sqrt{1-\beta_2^t}}

    (MARS-AdamW), or :math:`u_t = \operatorname{sign}(m_t)` with ``sign=True`` (MARS-Lion). With
    ``correct=False`` :math:`c_t = g_t` (no correction, no clipping: the reference's path for 1-D
    parameters). The norm is per leaf.

    Args:
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      gamma: :math:`\gamma`, the weight of the gradient correction.
      eps: added to the root of the second moment.
      correct: apply the variance-reduction correction and the norm clipping.
      sign: MARS-Lion's sign step instead of the adaptive one.
      ams_bound: divide by the running maximum of :math:`v_t` (``max_exp_avg_sq``).
      cautious: mask the entries of :math:`m_t` whose sign disagrees with :math:`g_t` (:func:`cautious_mask`).
      stored_grad_decay: :math:`\lambda`, adds :math:`\lambda \theta` to the gradient kept as :math:`g_{t}` for the
        next step (the reference's coupled weight decay, applied to the gradient after the update used it).
      step: the steps taken before this one, from outside the state (a param group's counter, as
        ``pytorch_optimizer`` keeps it); default: the state's count.

    Returns:
      A ``GradientTransformation`` whose state is :class:`ScaleByMarsState`.
    """
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_mars")
    check_range("b2", b2, 0.0, 1.0, high_open=True, where="scale_by_mars")

    def init(params):
        return ScaleByMarsState(gt.zero_count(), gt.tree_map(jnp.zeros_like, params),
                                gt.tree_map(jnp.zeros_like, params), gt.tree_map(jnp.zeros_like, params),
                                _zeros_if(ams_bound, params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        before = gt.steps_before(state.count, step)
        count = gt.safe_increment(before)
        beta1, beta2 = value_at(b1, before), value_at(b2, before)
        decay = value_at(stored_grad_decay, before)
        t = count.astype(jnp.result_type(float))
        bc1, bc2_sq = 1.0 - beta1**t, jnp.sqrt(1.0 - beta2**t)

        def leaf(g, mu, nu, last, nu_max, p):
            c = g
            if correct:
                c = (g - last) * (value_at(gamma, before) * beta1 / (1.0 - beta1)) + g
                c = c / jnp.maximum(jnp.sqrt(jnp.sum(c * c)), 1.0)
            mu = mu + (1.0 - beta1) * (c - mu)
            u = cautious_mask(mu, g) if cautious else mu
            if sign:
                u = jnp.sign(u)
            else:
                nu = beta2 * nu + (1.0 - beta2) * c * c
                denominator, nu_max = _denominator(nu, nu_max, value_at(eps, before), ams_bound)
                u = u / (denominator / bc2_sq * bc1)
            stored = g if p is None else g + decay * p
            return u.astype(g.dtype), mu, nu, stored.astype(g.dtype), nu_max

        treedef = jax.tree.structure(updates)
        has_params = params is not None
        results = [leaf(*args) for args in zip(
            treedef.flatten_up_to(updates), treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu),
            treedef.flatten_up_to(state.last_grad), _leaves(treedef, state.nu_max, ams_bound),
            _leaves(treedef, params, has_params))]
        fields = [treedef.unflatten([r[i] for r in results]) for i in range(5)]
        nu_max = fields[4] if ams_bound else None
        return fields[0], ScaleByMarsState(count, fields[1], fields[2], fields[3], nu_max)

    return GradientTransformation(init, update)


def scale_by_laprop(learning_rate: Any = 4e-4, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-15, *,
                    centered: bool = False, steps_before_using_centered: int = 10, ams_bound: bool = False,
                    cautious: bool = False, float32_step_size: bool = False,
                    step: Any = None) -> GradientTransformation:
    r"""LaProp's step (https://arxiv.org/abs/2002.04839), learning rate included, as pytorch_optimizer's LaProp.

    The momentum averages the *normalized* gradient, each scaled by the learning rate of its step:

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\,\eta_t\,
            \frac{g_t \sqrt{1-\beta_2^t}}{\sqrt{v_t + 10^{-15}} + \epsilon}, \quad
        u_t = -\frac{m_t}{\bar\eta_t / \eta_t}

    where :math:`\bar\eta_t = \beta_1 \bar\eta_{t-1} + (1-\beta_1)\eta_t` (1 when :math:`\eta_t = 0`).
    With ``centered``, :math:`v_t - \bar g_t^2` replaces :math:`v_t` after ``steps_before_using_centered``
    steps (:math:`\bar g_t`, the gradient's average with decay :math:`\beta_2`, is kept from the start).
    The result is the update itself (negated): place no learning-rate scaling after it.

    Args:
      learning_rate: :math:`\eta_t` (a number, array or schedule).
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      eps: added to the root of the second moment.
      centered: subtract the squared mean gradient.
      steps_before_using_centered: steps before the centering applies.
      ams_bound: divide by the running maximum of the second moment.
      cautious: mask the entries of :math:`m_t` whose sign disagrees with :math:`g_t` (:func:`cautious_mask`).
      float32_step_size: round :math:`\eta_t / \bar\eta_t` to float32 (the reference's batched path does).
      step: the steps taken before this one, from outside the state (a param group's counter, as
        ``pytorch_optimizer`` keeps it); default: the state's count.

    Returns:
      A ``GradientTransformation`` whose state is :class:`ScaleByLapropState`.
    """
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_laprop")
    check_range("b2", b2, 0.0, 1.0, high_open=True, where="scale_by_laprop")

    def init(params):
        scalar = jnp.zeros((), jnp.result_type(float))  # the reference keeps these two as Python floats
        return ScaleByLapropState(gt.zero_count(), gt.tree_map(jnp.zeros_like, params),
                                  gt.tree_map(jnp.zeros_like, params), scalar, scalar,
                                  _zeros_if(centered, params), _zeros_if(ams_bound, params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        before = gt.steps_before(state.count, step)
        count = gt.safe_increment(before)
        lr = value_at(learning_rate, before)
        beta1, beta2 = value_at(b1, before), value_at(b2, before)
        lr_avg = state.lr_avg * beta1 + (1.0 - beta1) * lr
        weight_avg = state.weight_avg * beta2 + (1.0 - beta2)
        step_size = 1.0 / jnp.where(lr != 0.0, lr_avg / jnp.where(lr != 0.0, lr, 1.0), 1.0)
        if float32_step_size:
            step_size = step_size.astype(jnp.float32)
        bc2_sq = jnp.sqrt(1.0 - beta2 ** count.astype(jnp.result_type(float)))
        use_centered = count > steps_before_using_centered

        def leaf(g, mu, nu, mean, nu_max):
            nu = beta2 * nu + (1.0 - beta2) * g * g
            second = nu
            if centered:
                mean = mean + (1.0 - beta2) * (g - mean)
                second = jnp.where(use_centered, nu - mean * mean, nu)
            denominator, nu_max = _denominator(second, nu_max, value_at(eps, before), ams_bound)
            mu = (beta1 * mu + ((1.0 - beta1) * lr) * (g / (denominator / bc2_sq))).astype(mu.dtype)
            u = cautious_mask(mu, g) if cautious else mu
            return (-(u * step_size)).astype(g.dtype), mu, nu, mean, nu_max

        treedef = jax.tree.structure(updates)
        results = [leaf(*args) for args in zip(
            treedef.flatten_up_to(updates), treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu),
            _leaves(treedef, state.mean, centered), _leaves(treedef, state.nu_max, ams_bound))]
        fields = [treedef.unflatten([r[i] for r in results]) for i in range(5)]
        new_state = ScaleByLapropState(count, fields[1], fields[2], lr_avg.astype(state.lr_avg.dtype),
                                       weight_avg.astype(state.weight_avg.dtype),
                                       fields[3] if centered else None, fields[4] if ams_bound else None)
        return fields[0], new_state

    return GradientTransformation(init, update)
