r"""ADOPT, AdEMAMix, simplified AdEMAMix and cautious updates: rescalings from ``optax.contrib`` and beyond.

Each transform gives ``optax.contrib``'s numbers with its defaults; keyword-only
options reach the ``pytorch_optimizer`` classes of the same optimizers (the
group's step counter in place of the state's count, cautious masking), which
:class:`gradtx.optim.ADOPT` and :class:`gradtx.optim.AdEMAMix` declare.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation
from gradtx._transforms.moments import ScaleByAdamState

__all__ = ["ScaleByAdemamixState", "ScaleBySimplifiedAdEMAMixState", "cautious", "cautious_mask",
           "scale_by_adopt", "scale_by_ademamix", "scale_by_simplified_ademamix"]


def cautious_mask(update: jax.Array, grad: jax.Array) -> jax.Array:
    r"""``update`` kept where it agrees in sign with ``grad``, rescaled by :math:`n / (\#\text{kept} + 1)`.

    Cautious optimizers (Liang et al., 2024, https://arxiv.org/abs/2411.16085):
    :math:`\phi = \mathbb{1}[u \circ g > 0]`, :math:`u \leftarrow u \circ \phi \cdot
    \frac{\dim \phi}{\lVert\phi\rVert_0 + 1}`, per array, as ``pytorch_optimizer``'s
    ``apply_cautious``. ``update`` is a direction (subtracted from the parameters).
    """
    mask = (update * grad > 0).astype(update.dtype)
    return update * (mask * (mask.size / (jnp.sum(mask) + 1)))


def cautious(tx: GradientTransformation, *, direction: bool = False) -> GradientTransformation:
    r"""Makes any optimizer cautious: each update component that would increase the loss is dropped.

    Cautious optimizers (Liang et al., 2024, https://arxiv.org/abs/2411.16085): the
    updates of ``tx`` are masked by their agreement with the gradient and rescaled
    (:func:`cautious_mask`, per leaf). ``tx`` is a whole optimizer whose updates are
    added to the parameters (``gradtx.adamw(1e-3)``: a component is kept where it
    points against the gradient); with ``direction=True`` it is a direction that a
    later learning rate negates (``gradtx.scale_by_adam()``: kept where it points
    along the gradient).

    Args:
      tx: the transformation to wrap; its state is this one's.
      direction: whether ``tx``'s updates are directions to subtract rather than steps to add.

    Returns:
      A GradientTransformation with ``tx``'s state.
    """
    sign = 1.0 if direction else -1.0

    def update(updates, state, params=None, **extra_args):
        new_updates, state = tx.update(updates, state, params, **extra_args)
        masked = gt.tree_map(lambda u, g: sign * cautious_mask(sign * u, g.astype(u.dtype)), new_updates, updates)
        return masked, state

    return GradientTransformation(tx.init, update)


def _adopt_clip(count: Any) -> Any:
    return count**0.25


def scale_by_adopt(b1: Any = 0.9, b2: Any = 0.9999, eps: Any = 1e-6, mu_dtype: Any = None, *, nesterov: bool = False,
                   use_clipping: bool = True, clip_value_fn: Callable[[Any], Any] = _adopt_clip,
                   step: Any = None, cautious: bool = False) -> GradientTransformation:
    r"""ADOPT's rescaling (Taniguchi et al., 2024, https://arxiv.org/abs/2411.02853): normalise by the *previous* second moment.

    .. math::
        u_t = \mathrm{clip}\Big(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)}, c(t)\Big), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) u_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

    with :math:`v_0 = g_0^2` and no step at the first update (optax.contrib's
    ``scale_by_adopt``, state ``ScaleByAdamState``). Returns :math:`m_t` (Nesterov:
    :math:`\beta_1 m_t + (1-\beta_1) u_t`).

    Args:
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: floor of the denominator.
      mu_dtype: dtype of the first moment.
      nesterov: Nesterov's look-ahead.
      use_clipping: clip the normalised gradient to :math:`\pm c`.
      clip_value_fn: :math:`c` as a function of the steps taken before this one
        (default :math:`t^{1/4}`, optax's).
      step: the steps taken before this one, from outside the state (a param
        group's counter, as ``pytorch_optimizer`` keeps it); default: the state's count.
      cautious: mask the returned moment by its agreement with :math:`u_t`
        (:func:`cautious_mask`), ``pytorch_optimizer``'s ``cautious=True``.

    Returns:
      A GradientTransformation whose state is a ``ScaleByAdamState``.
    """

    def init(params):
        return ScaleByAdamState(count=gt.zero_count(), mu=gt.tree_zeros_like(params, mu_dtype),
                                nu=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = state.count if step is None else step
        first = count == 0
        b2_ = jnp.where(first, 0.0, b2)
        b1_ = jnp.where(first, 1.0, b1)
        nu = gt.tree_map(lambda v, g: b2_ * v + (1 - b2_) * g * g, state.nu, updates)

        def normalised(g, v):
            u = g / jnp.maximum(jnp.sqrt(v), eps)
            return jnp.clip(u, -clip_value_fn(count), clip_value_fn(count)) if use_clipping else u

        mu_updates = gt.tree_map(normalised, updates, state.nu)
        mu = gt.tree_map(lambda m, u: b1_ * m + (1 - b1_) * u, state.mu, mu_updates)
        out = gt.tree_map(lambda m, u: b1_ * m + (1 - b1_) * u, mu, mu_updates) if nesterov else mu
        if cautious:
            out = gt.tree_map(cautious_mask, out, mu_updates)
        mu = gt.tree_cast_like(mu, state.mu)
        return out, ScaleByAdamState(count=gt.safe_increment(state.count), mu=mu, nu=nu)

    return GradientTransformation(init, update)


class ScaleByAdemamixState(NamedTuple):
    """State of :func:`scale_by_ademamix` (optax.contrib's ``ScaleByAdemamixState``)."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    count_m2: jax.Array  # shape=(), dtype=int32: steps taken so far, for the slow EMA's schedules
    m1: Any  # like params (in mu_dtype): fast EMA of the gradient, pytorch_optimizer's exp_avg
    m2: Any  # like params (in mu_dtype): slow EMA of the gradient, pytorch_optimizer's exp_avg_slow
    nu: Any  # like params (in mu_dtype): second moment, pytorch_optimizer's exp_avg_sq


def scale_by_ademamix(b1: Any = 0.9, b2: Any = 0.999, b3: Any = 0.9999, alpha: Any = 6.0, eps: Any = 1e-8,
                      eps_root: Any = 0.0, mu_dtype: Any = None, *, step: Any = None,
                      cautious: bool = False) -> GradientTransformation:
    r"""AdEMAMix's rescaling (Pagliardini et al., 2024, https://arxiv.org/abs/2409.03137): a fast and a slow EMA.

    .. math::
        m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \quad
        m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1-\beta_3) g_t, \quad
        u_t = \frac{\hat m^{(1)}_t + \alpha\, m^{(2)}_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    with Adam's bias-corrected :math:`\hat m^{(1)}` and :math:`\hat v` (optax.contrib's
    ``scale_by_ademamix``). ``b3`` and ``alpha`` may be schedules of ``count_m2``.

    Args:
      b1: decay of the fast EMA.
      b2: decay of the second moment.
      b3: decay of the slow EMA (number or schedule).
      alpha: weight of the slow EMA (number or schedule).
      eps: added to the denominator.
      eps_root: added under the root.
      mu_dtype: dtype of the three moments.
      step: the steps taken before this one, from outside the state (a param group's
        counter, as ``pytorch_optimizer`` keeps it); default: the state's counts.
      cautious: mask the fast EMA by its agreement with the gradient before adding
        the slow one (:func:`cautious_mask`), ``pytorch_optimizer``'s ``cautious=True``.

    Returns:
      A GradientTransformation whose state is a :class:`ScaleByAdemamixState`.
    """

    def init(params):
        zeros = lambda: gt.tree_zeros_like(params, mu_dtype)  # noqa: E731 - buffers of their own (a step donates each)
        return ScaleByAdemamixState(count=gt.zero_count(), count_m2=gt.zero_count(), m1=zeros(), m2=zeros(),
                                    nu=zeros())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = state.count if step is None else step
        count_m2 = state.count_m2 if step is None else step
        c_b3, c_alpha = value_at(b3, count_m2), value_at(alpha, count_m2)
        m1 = gt.update_moment(updates, state.m1, b1, 1)
        m2 = gt.update_moment(updates, state.m2, c_b3, 1)
        nu = gt.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        t = gt.safe_increment(jnp.asarray(count))
        fast = gt.tree_map(cautious_mask, m1, updates) if cautious else m1
        m1_hat, nu_hat = gt.bias_correction(fast, b1, t), gt.bias_correction(nu, b2, t)
        new_updates = gt.tree_map(lambda a, s, v: (a + c_alpha * s) / (jnp.sqrt(v + eps_root) + eps), m1_hat, m2,
                                  nu_hat)
        return new_updates, ScaleByAdemamixState(count=gt.safe_increment(state.count),
                                                 count_m2=gt.safe_increment(state.count_m2), m1=m1, m2=m2, nu=nu)

    return GradientTransformation(init, update)


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of :func:`scale_by_simplified_ademamix` (optax.contrib's ``ScaleBySimplifiedAdEMAMixState``)."""

    t: jax.Array  # shape=(), dtype=int32: steps taken so far
    m: Any  # like params: the undamped momentum, sum of b1^i g_{t-i}
    n: Any  # like params: second moment


def scale_by_simplified_ademamix(b1: Any = 0.99, b2: Any = 0.95, alpha: Any = 0.0, eps: Any = 1e-8,
                                 eps_root: Any = 0.0) -> GradientTransformation:
    r"""Simplified AdEMAMix's rescaling (Morwani et al., 2024, https://arxiv.org/abs/2502.02431): one undamped momentum.

    .. math::
        m_t = \beta_1 m_{t-1} + g_t, \quad n_t = \beta_2 n_{t-1} + (1-\beta_2) g_t^2, \quad
        u_t = \frac{m_t + \alpha g_t}{\sqrt{n_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    optax.contrib's ``scale_by_simplified_ademamix``; ``alpha`` may be a schedule of ``t``.

    Args:
      b1: decay of the momentum.
      b2: decay of the second moment.
      alpha: weight of the current gradient (number or schedule).
      eps: added to the denominator.
      eps_root: added under the root.

    Returns:
      A GradientTransformation whose state is a :class:`ScaleBySimplifiedAdEMAMixState`.
    """

    def init(params):
        return ScaleBySimplifiedAdEMAMixState(t=gt.zero_count(), m=gt.tree_zeros_like(params),
                                              n=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        c_alpha = value_at(alpha, state.t)
        m = gt.tree_map(lambda g, m: g + b1 * m, updates, state.m)
        n = gt.tree_map(lambda g, n: g * g + b2 * (n - g * g), updates, state.n)
        t = gt.safe_increment(state.t)
        n_hat = gt.bias_correction(n, b2, t)
        new_updates = gt.tree_map(lambda m, g, n: (m + c_alpha * g) / (jnp.sqrt(n + eps_root) + eps), m, updates,
                                  n_hat)
        return new_updates, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)

    return GradientTransformation(init, update)
