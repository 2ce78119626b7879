"""Adam's moment estimates, with bias correction, AMSGrad and Nesterov variants as options."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation
from gradtx._transforms._slots import slot_zeros, widen_slots, widen_updates


__all__ = ["ScaleByAdamState", "ScaleByAmsgradState", "scale_by_adam", "scale_by_amsgrad"]

class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): first moment, torch's exp_avg
    nu: Any  # like params (real, or nu_dtype): second moment, torch's exp_avg_sq


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_adam` with ``amsgrad=True`` and of :func:`scale_by_amsgrad`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): first moment, torch's exp_avg
    nu: Any  # like params (real, or nu_dtype): second moment, torch's exp_avg_sq
    nu_max: Any  # like nu: running maximum of the second moment, torch's max_exp_avg_sq


def scale_by_adam(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
                  mu_dtype: Any = None, *, nesterov: bool = False, amsgrad: bool = False,
                  amsgrad_max_of: str = "raw", bias_correction_mu: bool = True,
                  bias_correction_nu: bool = True, nu_dtype: Any = None) -> GradientTransformation:
    r"""Rescales updates by Adam's bias-corrected moments (Kingma & Ba, 2015, https://arxiv.org/abs/1412.6980).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2, \quad
        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    With default options this is ``optax.scale_by_adam`` and the direction of
    ``torch.optim.Adam``. Options:

    - ``nesterov``: NAdam's look-ahead first moment as optax computes it (Dozat, 2016).
    - ``amsgrad`` (Reddi et al., 2018, https://openreview.net/forum?id=ryQu7f-RZ): divide by
      the running maximum of the second moment. ``amsgrad_max_of="raw"`` keeps the
      maximum of the raw :math:`v_t` and bias-corrects it afterwards (torch's
      ``amsgrad=True``); ``"corrected"`` keeps the maximum of the bias-corrected
      :math:`\hat v_t` (``optax.scale_by_amsgrad``).
    - ``bias_correction_mu`` / ``bias_correction_nu``: switch either correction off.

    Every numeric hyperparameter may be a float, an array or a schedule ``count -> value``
    of the steps taken before this one. A scheduled :math:`\beta` is used at its current
    value everywhere, in the bias correction too (:math:`1-\beta_1(t)^t`, not the product
    of past values): the numbers of ``inject_hyperparams(scale_by_adam)`` with the value
    set by hand before each step.

    State dtypes: ``mu_dtype`` (optax's) and ``nu_dtype`` (gradtx's; ``nu_max`` follows it)
    store the moments in another dtype than the parameters: float32 moments for bfloat16
    parameters, or bfloat16 moments to halve the state of float32 ones. ``None`` keeps the
    parameters' dtype (the real one for ``nu``). The moments are updated in the wider of
    the gradient's and the slot's dtype, the step is computed from these unrounded values,
    and only the stored copy is rounded to the slot's dtype (optax's ``mu_dtype`` rounds the
    same way, but multiplies :math:`(1-\beta_1) g_t` in the gradient's dtype first).
    """
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_adam")
    check_range("b2", b2, 0.0, 1.0, high_open=True, where="scale_by_adam")
    check_range("eps", eps, 0.0, where="scale_by_adam")
    if amsgrad_max_of not in ("raw", "corrected"):
        raise ValueError(f"scale_by_adam: amsgrad_max_of must be 'raw' or 'corrected', got {amsgrad_max_of!r}")

    def init(params):
        mu = slot_zeros(params, mu_dtype)
        nu = slot_zeros(params, nu_dtype, real=True)
        if amsgrad:
            return ScaleByAmsgradState(count=gt.zero_count(), mu=mu, nu=nu, nu_max=gt.tree_zeros_like(nu))
        return ScaleByAdamState(count=gt.zero_count(), mu=mu, nu=nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2 = value_at(b1, state.count), value_at(b2, state.count)
        epsilon, epsilon_root = value_at(eps, state.count), value_at(eps_root, state.count)
        mu = gt.update_moment(widen_updates(updates, state.mu), widen_slots(state.mu, updates), beta1, 1)
        nu = gt.update_moment_per_elem_norm(widen_updates(updates, state.nu), widen_slots(state.nu, updates), beta2, 2)
        count = gt.safe_increment(state.count)

        correct_mu = (lambda m, c: gt.bias_correction(m, beta1, c)) if bias_correction_mu else (lambda m, c: m)
        # reciprocal: the corrected moments feed a square root and a division only (see gt.bias_correction)
        correct_nu = ((lambda v: gt.bias_correction(v, beta2, count, reciprocal=True)) if bias_correction_nu
                      else (lambda v: v))
        if nesterov:
            mu_hat = gt.tree_map(lambda m, g: beta1 * m + (1 - beta1) * g,
                                 correct_mu(mu, gt.safe_increment(count)),
                                 correct_mu(widen_updates(updates, state.mu), count))
        else:
            mu_hat = gt.bias_correction(mu, beta1, count, reciprocal=True) if bias_correction_mu else mu

        nu_max = None
        if not amsgrad:
            nu_hat = correct_nu(nu)
        elif amsgrad_max_of == "raw":
            nu_max = gt.tree_map(jnp.maximum, widen_slots(state.nu_max, updates), nu)
            nu_hat = correct_nu(nu_max)
        else:
            nu_max = gt.tree_map(jnp.maximum, widen_slots(state.nu_max, updates), correct_nu(nu))
            nu_hat = nu_max

        updates = gt.tree_map(
            lambda m, v, g: (m / (jnp.sqrt(v + epsilon_root) + epsilon)).astype(g.dtype), mu_hat, nu_hat, updates
        )
        mu = gt.tree_cast_like(mu, state.mu)
        nu = gt.tree_cast_like(nu, state.nu)
        if amsgrad:
            return updates, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=gt.tree_cast_like(nu_max, state.nu_max))
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)


def scale_by_amsgrad(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
                     mu_dtype: Any = None, bias_correction_mu: bool = True,
                     bias_correction_nu: bool = True, *, nu_dtype: Any = None) -> GradientTransformation:
    """``optax.scale_by_amsgrad``: :func:`scale_by_adam` keeping the maximum of the corrected second moment.

    ``nu_dtype`` (gradtx's, keyword-only) stores the second moment and its maximum in that dtype.
    """
    return scale_by_adam(b1, b2, eps, eps_root, mu_dtype, amsgrad=True, amsgrad_max_of="corrected",
                         bias_correction_mu=bias_correction_mu, bias_correction_nu=bias_correction_nu,
                         nu_dtype=nu_dtype)
