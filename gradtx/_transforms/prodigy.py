r"""Prodigy (Mishchenko & Defazio, 2023, https://arxiv.org/abs/2306.06101): Adam with a learned step size :math:`d`.

:math:`d` estimates the distance to the solution, :math:`D = \lVert x_0 - x_*\rVert`, from a
weighted sum of :math:`\langle g_t, x_0 - x_t\rangle` over the norm of a weighted gradient sum.
It is one number for the whole tree (its sums run over every leaf), so :func:`prodigy`
is a transform of the whole parameter tree, as optax's and the ``prodigyopt`` package's are.
"""


from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._hyper import value_at
from gradtx._base import NO_PARAMS_MSG, GradientTransformation, ScalarOrSchedule
from gradtx._transforms.schedule_free import _lowest_float_dtype

__all__ = ["ProdigyState", "prodigy"]


class ProdigyState(NamedTuple):
    """State of :func:`prodigy` (optax.contrib's ``ProdigyState``, field for field)."""

    exp_avg: Any  # like params: first moment of d * g
    exp_avg_sq: Any  # like params: second moment of d * g
    grad_sum: Any  # like params: the weighted gradient sum s
    params0: Any  # like params: the initial parameters x_0
    estim_lr: jax.Array  # shape=(), the params' lowest float dtype: the estimate d
    numerator_weighted: jax.Array  # shape=(), same dtype: the weighted sum of <g, x_0 - x>
    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def prodigy(learning_rate: ScalarOrSchedule = 1.0, betas: tuple[Any, Any] = (0.9, 0.999), beta3: Any = None, eps: Any = 1e-8,
            estim_lr0: Any = 1e-6, estim_lr_coef: Any = 1.0, weight_decay: Any = 0.0, safeguard_warmup: bool = False,
            *, bias_correction: bool = True, decouple: bool = True) -> GradientTransformation:
    r"""Prodigy: Adam on :math:`d\,g` with the step size :math:`d` learned on the fly (optax.contrib's ``prodigy``).

    With :math:`\gamma_t` the learning rate, :math:`\eta_t = d_t\gamma_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}`:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) d_t g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) d_t^2 g_t^2, \\
        r_t = \beta_3 r_{t-1} + \tfrac{d_t}{d_0}\eta_t \langle g_t, x_0 - x_t\rangle, \quad
        s_t = \beta_3 s_{t-1} + \tfrac{d_t}{d_0}\eta_t g_t, \quad
        d_{t+1} = \max\Big(d_t, c\,\frac{r_t}{\lVert s_t\rVert_1}\Big), \\
        x_{t+1} = x_t - \eta_t\Big(\frac{m_t}{\sqrt{v_t} + d_{t+1}\epsilon} + \lambda x_t\Big)

    (with ``safeguard_warmup``, :math:`s` accumulates :math:`\frac{d_t}{d_0} d_t g_t`). With
    its defaults these are optax 0.2.8's numbers. ``bias_correction=False`` drops the
    factor in :math:`\eta_t` and ``decouple=False`` adds :math:`\lambda x_t` to the gradient
    instead (L2): with both, and :math:`\gamma` the ``lr``, :math:`d_0` = ``d0`` and
    :math:`c` = ``d_coef``, these are ``prodigyopt.Prodigy``'s numbers (1.1.2, one param
    group, its default ``growth_rate=inf`` and ``slice_p=1``).

    Args:
      learning_rate: :math:`\gamma`, a number or a schedule (keep it near 1).
      betas: :math:`(\beta_1, \beta_2)`.
      beta3: :math:`\beta_3` (default :math:`\sqrt{\beta_2}`).
      eps: added to the denominator, scaled by :math:`d`.
      estim_lr0: :math:`d_0`, the initial estimate.
      estim_lr_coef: :math:`c`, a multiplier of the estimate.
      weight_decay: :math:`\lambda`.
      safeguard_warmup: leave the learning rate out of :math:`s` (for warmup schedules).
      bias_correction: Adam's bias correction in :math:`\eta_t` (optax: always; prodigyopt:
        ``use_bias_correction``, off by default).
      decouple: decoupled (AdamW) decay; ``False``: L2 added to the gradient.

    Returns:
      A GradientTransformation of the whole tree; its state is a :class:`ProdigyState`.
    """

    def init(params):
        dtype = _lowest_float_dtype(params)
        return ProdigyState(exp_avg=gt.tree_zeros_like(params), exp_avg_sq=gt.tree_zeros_like(params),
                            grad_sum=gt.tree_zeros_like(params), params0=gt.tree_copy(params),
                            estim_lr=jnp.asarray(estim_lr0, dtype=dtype), numerator_weighted=jnp.zeros((), dtype),
                            count=gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        b3 = prodigy_beta3(betas, beta3)
        if not decouple:
            updates = gt.tree_map(lambda g, p: prodigy_gradient(g, p, weight_decay), updates, params)
        count_inc = gt.safe_increment(state.count)
        d = state.estim_lr
        dlr = prodigy_rate(d, value_at(learning_rate, state.count), count_inc, betas, bias_correction)
        numerator_acum = gt.tree_vdot(updates, gt.tree_map(lambda p0, p: p0 - p, state.params0, params))

        def moments(i):
            return lambda g, m, v, s: prodigy_moments(g, m, v, s, d, dlr, betas, b3, estim_lr0, safeguard_warmup)[i]

        exp_avg, exp_avg_sq, grad_sum = (
            gt.tree_map(moments(i), updates, state.exp_avg, state.exp_avg_sq, state.grad_sum) for i in range(3))
        denominator = sum(jnp.sum(jnp.abs(s)) for s in gt.array_leaves(grad_sum))
        numerator, estim_lr = prodigy_estimate(d, dlr, state.numerator_weighted, numerator_acum, denominator, b3,
                                               estim_lr0, estim_lr_coef)
        decay = weight_decay if decouple else 0.0
        new_updates = gt.tree_map(lambda m, v, p: prodigy_direction(m, v, p, dlr, estim_lr, eps, decay),
                                  exp_avg, exp_avg_sq, params)
        return new_updates, ProdigyState(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, grad_sum=grad_sum,
                                         params0=state.params0, estim_lr=estim_lr, numerator_weighted=numerator,
                                         count=count_inc)

    return GradientTransformation(init, update)


# The steps of :func:`prodigy`'s update, leaf by leaf, for a step that visits the leaves in several programs
# (:class:`gradtx.optim.Prodigy` over thousands of parameters): the sums over every leaf are the only coupling.


def prodigy_beta3(betas: tuple[Any, Any], beta3: Any) -> Any:
    r""":math:`\beta_3`, the sums' decay: ``beta3``, or prodigyopt's :math:`\sqrt{\beta_2}` for None."""
    return betas[1] ** 0.5 if beta3 is None else beta3


def prodigy_gradient(g: Any, p: Any, weight_decay: Any) -> Any:
    r"""The gradient with L2 decay (``decouple=False``): :math:`g + \lambda x`."""
    return g + weight_decay * p


def prodigy_rate(d: Any, lr: Any, count_inc: Any, betas: tuple[Any, Any], bias_correction: bool) -> jax.Array:
    r""":math:`\eta_t = d_t\gamma_t\sqrt{1-\beta_2^t}/(1-\beta_1^t)` (without the factor when not ``bias_correction``)."""
    beta1, beta2 = betas
    correction = ((1 - beta2**count_inc) ** 0.5) / (1 - beta1**count_inc) if bias_correction else 1.0
    return jnp.asarray(d * lr * correction, dtype=d.dtype)


def prodigy_moments(g: Any, m: Any, v: Any, s: Any, d: Any, dlr: Any, betas: tuple[Any, Any], b3: Any,
                    estim_lr0: Any, safeguard_warmup: bool) -> tuple[Any, Any, Any]:
    r"""One leaf's :math:`m_t, v_t, s_t` from :math:`d_t g_t`."""
    beta1, beta2 = betas
    dg = d * g
    rate = d if safeguard_warmup else dlr
    return beta1 * m + (1 - beta1) * dg, beta2 * v + (1 - beta2) * dg * dg, b3 * s + rate * dg / estim_lr0


def prodigy_estimate(d: Any, dlr: Any, numerator_weighted: Any, vdot: Any, denominator: Any, b3: Any,
                     estim_lr0: Any, estim_lr_coef: Any) -> tuple[jax.Array, jax.Array]:
    r""":math:`(r_t, d_{t+1})` from the sums over every leaf: :math:`\langle g, x_0 - x\rangle` and :math:`\lVert s_t\rVert_1`."""
    numerator = b3 * numerator_weighted + (d / estim_lr0) * dlr * vdot
    return numerator, jnp.maximum(d, estim_lr_coef * numerator / denominator)


def prodigy_direction(m: Any, v: Any, p: Any, dlr: Any, estim_lr: Any, eps: Any, decay: Any) -> Any:
    r"""One leaf's update: :math:`-\eta_t(m_t / (\sqrt{v_t} + d_{t+1}\epsilon) + \lambda x_t)` (decoupled decay)."""
    return -decay * dlr * p - dlr * m / (jnp.sqrt(v) + estim_lr * eps)
