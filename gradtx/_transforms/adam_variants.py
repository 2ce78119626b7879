"""Adam's relatives: NAdam (torch's schedule), RAdam, AdaBelief, Yogi, NovoGrad, Lion, Adan and trust ratios.

Each transform computes a *direction*; the learning rate, weight decay and sign
flips are separate links of a chain (see :func:`gradtx.nadam` and
:func:`gradtx.optim.chains.nadam_chain`). optax's NAdam is ``scale_by_adam(nesterov=True)``
(:func:`gradtx.scale_by_adam`); torch's, with its momentum schedule, is
:func:`scale_by_nadam` here.

Scalars that depend on the step (bias corrections, momentum schedules,
rectification terms) are computed once and cast to each leaf's dtype, so a
float32 parameter keeps float32 updates and state.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range, concrete_float
from gradtx._hyper import value_at
from gradtx._base import NO_PARAMS_MSG, GradientTransformation, ScalarOrSchedule, stateless
from gradtx._transforms._slots import slot_zeros, widen_slots, widen_updates
from gradtx._transforms.moments import ScaleByAdamState

__all__ = [
    "ScaleByNAdamState", "scale_by_nadam",
    "scale_by_radam",
    "ScaleByBeliefState", "scale_by_belief",
    "scale_by_yogi",
    "ScaleByNovogradState", "scale_by_novograd",
    "ScaleByLionState", "scale_by_lion",
    "ScaleByAdanState", "scale_by_adan",
    "scale_by_trust_ratio",
]


def _values_at(count: jax.Array, *hyperparams: Any) -> tuple:
    """Each hyperparameter's value at ``count`` (schedules are called, numbers and arrays pass)."""
    return tuple(value_at(h, count) for h in hyperparams)


def _cast(scalar: Any, like: jax.Array) -> jax.Array:
    """A step-dependent scalar in the (real) dtype of the leaf it multiplies."""
    return jnp.asarray(scalar).astype(gt.real_dtype(like))


def _abs_sq(g: jax.Array) -> jax.Array:
    """``|g|^2`` elementwise, real for complex ``g``."""
    return jnp.real(g * jnp.conj(g)) if jnp.iscomplexobj(g) else g * g


def _corrected_first_moment(mu: Any, updates: Any, b1: Any, count: jax.Array, nesterov: bool) -> Any:
    r"""Bias-corrected first moment :math:`\hat m_t`; with ``nesterov``, optax's look-ahead
    :math:`\beta_1 m_t / (1-\beta_1^{t+1}) + (1-\beta_1) g_t / (1-\beta_1^t)`."""
    if not nesterov:
        return gt.bias_correction(mu, b1, count)
    return gt.tree_map(lambda m, g: b1 * m + (1 - b1) * g,
                       gt.bias_correction(mu, b1, gt.safe_increment(count)), gt.bias_correction(updates, b1, count))


def _fresh_moments(state_class: type, params: Any, mu_dtype: Any = None, nu_dtype: Any = None) -> Any:
    """``state_class(count, mu, nu)`` at step 0: zero moments (in their slot dtypes), the second one real."""
    return state_class(count=gt.zero_count(), mu=slot_zeros(params, mu_dtype), nu=slot_zeros(params, nu_dtype, real=True))


def _moment(updates: Any, slot: Any, decay: Any, order: int) -> Any:
    """The next moving average of ``g`` (order 1) or ``|g|^2`` (order 2), in the wider of the gradient's and
    the slot's dtype (the stored copy is rounded by :func:`_next_moments`)."""
    update = gt.update_moment if order == 1 else gt.update_moment_per_elem_norm
    return update(widen_updates(updates, slot), widen_slots(slot, updates), decay, order)


def _next_moments(state: Any, count: jax.Array, mu: Any, nu: Any) -> Any:
    """The next ``(count, mu, nu)`` state, the moments cast back to the dtypes they had."""
    return state._replace(count=count, mu=gt.tree_cast_like(mu, state.mu), nu=gt.tree_cast_like(nu, state.nu))


def _check_betas(where: str, **betas: Any) -> None:
    for name, value in betas.items():
        check_range(name, value, 0.0, 1.0, high_open=True, where=where)


# --------------------------------------------------------------------------- NAdam (torch)


class ScaleByNAdamState(NamedTuple):
    """State of :func:`scale_by_nadam`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's step
    mu_product: jax.Array  # shape=(), dtype=mu_product_dtype: prod_{i<=t} mu_i, torch's mu_product
    mu: Any  # like params: first moment, torch's exp_avg
    nu: Any  # like params (real): second moment, torch's exp_avg_sq


def scale_by_nadam(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, momentum_decay: Any = 4e-3,
                   mu_product_dtype: Any = "float32", *, mu_dtype: Any = None,
                   nu_dtype: Any = None) -> GradientTransformation:
    r"""NAdam's direction with torch's momentum schedule.

    Dozat, 2016, *Incorporating Nesterov Momentum into Adam*, https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.

    .. math::
        \mu_t = \beta_1 \left(1 - \tfrac12\, 0.96^{t \psi}\right), \quad
        \Pi_t = \prod_{i \le t} \mu_i, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2,

        u_t = \frac{1}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}
              \left( \frac{1-\mu_t}{1-\Pi_t}\, g_t + \frac{\mu_{t+1}}{1-\Pi_t \mu_{t+1}}\, m_t \right)

    This is the direction of ``torch.optim.NAdam`` (``psi`` is its ``momentum_decay``);
    chain it with a learning rate (``-lr``) for the step. optax's ``nadam``
    (``scale_by_adam(nesterov=True)``) is the limit :math:`\mu_t \equiv \beta_1`,
    i.e. ``momentum_decay=inf``.

    Args:
      b1: :math:`\beta_1`, the first moment's decay.
      b2: :math:`\beta_2`, the second moment's decay.
      eps: added to the bias-corrected root of the second moment.
      momentum_decay: :math:`\psi`, how fast :math:`\mu_t` rises from :math:`\beta_1/2` to :math:`\beta_1`.
      mu_product_dtype: dtype of the running product :math:`\Pi_t`. torch keeps it in its
        default scalar dtype (float32) even for float64 parameters; pass ``"float64"``
        to follow ``torch.set_default_dtype(torch.float64)``.
      mu_dtype, nu_dtype: the moments' dtypes (``None``: the parameters'), with the numerics of
        :func:`gradtx.scale_by_adam`'s: updated in the wider dtype, stored rounded.
    Every numeric hyperparameter may be a float, an array or a schedule of the step.
    """
    _check_betas("scale_by_nadam", b1=b1, b2=b2)
    check_range("eps", eps, 0.0, where="scale_by_nadam")
    check_range("momentum_decay", momentum_decay, 0.0, where="scale_by_nadam")

    def init(params):
        moments = _fresh_moments(ScaleByAdamState, params, mu_dtype, nu_dtype)
        return ScaleByNAdamState(count=moments.count, mu_product=jnp.ones([], mu_product_dtype),
                                 mu=moments.mu, nu=moments.nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, epsilon, psi = _values_at(state.count, b1, b2, eps, momentum_decay)
        count = gt.safe_increment(state.count)
        mu_t = beta1 * (1.0 - 0.5 * 0.96 ** (count * psi))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((count + 1) * psi))
        mu_product = (state.mu_product * jnp.asarray(mu_t).astype(state.mu_product.dtype)).astype(
            state.mu_product.dtype)

        mu = _moment(updates, state.mu, beta1, 1)
        nu = _moment(updates, state.nu, beta2, 2)
        nu_hat = gt.bias_correction(nu, beta2, count)

        def direction(g, m, v, out):
            mu_t_, mu_next_, prod = _cast(mu_t, g), _cast(mu_next, g), _cast(mu_product, g)
            denom = jnp.sqrt(v) + _cast(epsilon, g)
            grad_coef = (1 - mu_t_) / (1 - prod)
            mom_coef = mu_next_ / (1 - prod * mu_next_)
            return (grad_coef * g / denom + mom_coef * m / denom).astype(out.dtype)

        updates = gt.tree_map(direction, widen_updates(updates, state.mu), mu, nu_hat, updates)
        return updates, _next_moments(state, count, mu, nu)._replace(mu_product=mu_product)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- RAdam


def scale_by_radam(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0, threshold: Any = 5.0, *,
                   nesterov: bool = False, eps_on_raw: bool = False,
                   strict_threshold: bool = False, mu_dtype: Any = None,
                   nu_dtype: Any = None) -> GradientTransformation:
    r"""Rectified Adam (Liu et al., 2020, https://arxiv.org/abs/1908.03265).

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},

        u_t = \begin{cases}
          r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon) & \rho_t \ge \text{threshold} \\
          \hat m_t & \text{otherwise}
        \end{cases}

    with Adam's bias-corrected moments :math:`\hat m_t, \hat v_t`. The defaults are
    ``optax.scale_by_radam``. ``torch.optim.RAdam`` is
    ``scale_by_radam(eps_on_raw=True, strict_threshold=True)`` (threshold 5).

    Args:
      b1: :math:`\beta_1`, the first moment's decay.
      b2: :math:`\beta_2`, the second moment's decay.
      eps: added to the root of the second moment.
      eps_root: added to the second moment inside the root.
      threshold: the smallest :math:`\rho_t` at which the adaptive step is used.
      nesterov: use optax's Nesterov look-ahead first moment (as in ``scale_by_adam``).
      eps_on_raw: add ``eps`` to the root of the *uncorrected* second moment and
        correct afterwards, :math:`\sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon)`, as torch does.
      strict_threshold: rectify only when :math:`\rho_t > \text{threshold}` (torch) rather than ``>=`` (optax).
      mu_dtype, nu_dtype: (gradtx's) the moments' dtypes (``None``: the parameters'), with the
        numerics of :func:`gradtx.scale_by_adam`'s: updated in the wider dtype, stored rounded.
    Every numeric hyperparameter may be a float, an array or a schedule of the step.
    """
    _check_betas("scale_by_radam", b1=b1, b2=b2)
    check_range("eps", eps, 0.0, where="scale_by_radam")

    def init(params):
        return _fresh_moments(ScaleByAdamState, params, mu_dtype, nu_dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, epsilon, epsilon_root = _values_at(state.count, b1, b2, eps, eps_root)
        mu = _moment(updates, state.mu, beta1, 1)
        nu = _moment(updates, state.nu, beta2, 2)
        count = gt.safe_increment(state.count)

        correction2 = 1 - beta2**count
        rho_inf = 2 / (1 - beta2) - 1
        rho = rho_inf - 2 * count * beta2**count / correction2
        (limit,) = _values_at(state.count, threshold)
        rectify = rho > limit if strict_threshold else rho >= limit
        # Where rho is below the threshold r_t may be NaN; evaluate it at rho_inf (r = 1) there.
        safe_rho = jnp.where(rectify, rho, rho_inf)
        rect = jnp.sqrt((safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho))

        mu_hat = _corrected_first_moment(mu, widen_updates(updates, state.mu), beta1, count, nesterov)
        if eps_on_raw:
            def adaptive(m, v):
                scale = jnp.sqrt(_cast(correction2, m)) / (jnp.sqrt(v + epsilon_root) + _cast(epsilon, m))
                return m * scale * _cast(rect, m)
            second = nu
        else:
            def adaptive(m, v):
                return _cast(rect, m) * m / (jnp.sqrt(v + epsilon_root) + _cast(epsilon, m))
            second = gt.bias_correction(nu, beta2, count)

        updates = gt.tree_map(lambda m, v, g: jnp.where(rectify, adaptive(m, v), m).astype(g.dtype),
                              mu_hat, second, updates)
        return updates, _next_moments(state, count, mu, nu)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- AdaBelief


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params: first moment
    nu: Any  # like params (real): second moment of the prediction error g - m


def scale_by_belief(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-16, eps_root: Any = 1e-16, *,
                    nesterov: bool = False) -> GradientTransformation:
    r"""AdaBelief (Zhuang et al., 2020, https://arxiv.org/abs/2010.07468), as ``optax.scale_by_belief``.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        s_t = \beta_2 s_{t-1} + (1-\beta_2) |g_t - m_t|^2 + \epsilon_{root}, \quad
        u_t = \frac{\hat m_t}{\sqrt{s_t / (1-\beta_2^t)} + \epsilon}

    Args:
      b1: :math:`\beta_1`, the first moment's decay.
      b2: :math:`\beta_2`, the decay of the belief (prediction-error) moment.
      eps: added to the root of the corrected belief moment.
      eps_root: added to the belief moment at every step (kept in the state, as optax does).
      nesterov: use optax's Nesterov look-ahead first moment.
    Every numeric hyperparameter may be a float, an array or a schedule of the step.
    """
    _check_betas("scale_by_belief", b1=b1, b2=b2)
    check_range("eps", eps, 0.0, where="scale_by_belief")

    def init(params):
        return _fresh_moments(ScaleByBeliefState, params)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, epsilon, epsilon_root = _values_at(state.count, b1, b2, eps, eps_root)
        mu = gt.update_moment(updates, state.mu, beta1, 1)
        error = gt.tree_map(jnp.subtract, updates, mu)
        nu = gt.tree_map(lambda v: v + epsilon_root, gt.update_moment_per_elem_norm(error, state.nu, beta2, 2))
        count = gt.safe_increment(state.count)
        mu_hat = _corrected_first_moment(mu, updates, beta1, count, nesterov)
        nu_hat = gt.bias_correction(nu, beta2, count)
        updates = gt.tree_map(lambda m, v, g: (m / (jnp.sqrt(v) + epsilon)).astype(g.dtype), mu_hat, nu_hat, updates)
        return updates, _next_moments(state, count, mu, nu)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- Yogi


def scale_by_yogi(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-3, eps_root: Any = 0.0,
                  initial_accumulator_value: Any = 1e-6) -> GradientTransformation:
    r"""Yogi (Zaheer et al., 2018, https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = v_{t-1} - (1-\beta_2)\, \operatorname{sign}(v_{t-1} - |g_t|^2)\, |g_t|^2, \quad
        u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    The second moment moves additively towards :math:`|g_t|^2`, so it cannot grow
    as fast as Adam's. Follows ``optax.scale_by_yogi``, including the bias corrections.

    Args:
      b1: :math:`\beta_1`, the first moment's decay.
      b2: :math:`\beta_2`, sets the second moment's additive step.
      eps: added to the root of the corrected second moment.
      eps_root: added to the corrected second moment inside the root.
      initial_accumulator_value: the starting value of both moments (positive).
    Every numeric hyperparameter may be a float, an array or a schedule of the step.
    """
    _check_betas("scale_by_yogi", b1=b1, b2=b2)
    check_range("eps", eps, 0.0, where="scale_by_yogi")
    check_range("initial_accumulator_value", initial_accumulator_value, 0.0, where="scale_by_yogi")

    def init(params):
        zeros = _fresh_moments(ScaleByAdamState, params)
        start = lambda z: z + jnp.asarray(initial_accumulator_value, z.dtype)  # noqa: E731
        return zeros._replace(mu=gt.tree_map(start, zeros.mu), nu=gt.tree_map(start, zeros.nu))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, epsilon, epsilon_root = _values_at(state.count, b1, b2, eps, eps_root)
        mu = gt.update_moment(updates, state.mu, beta1, 1)
        nu = gt.tree_map(lambda v, g: v - (1 - beta2) * jnp.sign(v - _abs_sq(g)) * _abs_sq(g), state.nu, updates)
        count = gt.safe_increment(state.count)
        mu_hat = gt.bias_correction(mu, beta1, count)
        nu_hat = gt.bias_correction(nu, beta2, count)
        updates = gt.tree_map(lambda m, v, g: (m / (jnp.sqrt(v + epsilon_root) + epsilon)).astype(g.dtype),
                              mu_hat, nu_hat, updates)
        return updates, _next_moments(state, count, mu, nu)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- NovoGrad


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): the momentum of normalised gradients
    nu: Any  # one scalar per leaf (real): moving average of the leaf's squared gradient norm


def scale_by_novograd(b1: Any = 0.9, b2: Any = 0.25, eps: Any = 1e-8, eps_root: Any = 0.0,
                      weight_decay: ScalarOrSchedule = 0.0, mu_dtype: Any = None) -> GradientTransformation:
    r"""NovoGrad (Ginsburg et al., 2019, https://arxiv.org/abs/1905.11286): layer-wise second moments.

    For each leaf (layer) :math:`l`, with :math:`\lambda` the weight decay:

    .. math::
        v^l_t = \beta_2 v^l_{t-1} + (1-\beta_2) \lVert g^l_t \rVert^2 \quad (v^l_1 = \lVert g^l_1 \rVert^2),

        m^l_t = \beta_1 m^l_{t-1} + \frac{g^l_t}{\sqrt{v^l_t + \epsilon_{root}} + \epsilon} + \lambda w^l_t
        \quad (m^l_0 = 0), \qquad u_t = m_t

    Follows ``optax.scale_by_novograd``. The params are needed unless ``weight_decay`` is 0.

    Args:
      b1: :math:`\beta_1`, the momentum of the normalised gradients.
      b2: :math:`\beta_2`, the decay of the per-leaf squared norms.
      eps: added to the root of the norm average.
      eps_root: added to the norm average inside the root.
      weight_decay: :math:`\lambda`, added to the normalised gradient (a float, an array or a schedule).
      mu_dtype: dtype of the momentum; ``None`` keeps the parameters'.
    """
    _check_betas("scale_by_novograd", b2=b2)
    check_range("b1", b1, 0.0, where="scale_by_novograd")
    check_range("eps", eps, 0.0, where="scale_by_novograd")
    skip_decay = concrete_float(weight_decay) == 0.0

    def init(params):
        return ScaleByNovogradState(count=gt.zero_count(), mu=gt.tree_zeros_like(params, mu_dtype),
                                    nu=gt.tree_map(lambda p: jnp.zeros([], gt.real_dtype(p)), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None and not skip_decay:
            raise ValueError(NO_PARAMS_MSG)
        beta1, beta2, epsilon, epsilon_root, decay = _values_at(state.count, b1, b2, eps, eps_root, weight_decay)
        first = state.count == 0

        def new_nu(g, v):
            norm2 = jnp.sum(_abs_sq(g)).astype(v.dtype)
            return jnp.where(first, norm2, beta2 * v + (1 - beta2) * norm2).astype(v.dtype)

        nu = gt.tree_map(new_nu, updates, state.nu)

        def new_mu(g, m, v, p):
            step = g / (jnp.sqrt(v + epsilon_root) + epsilon)
            if not skip_decay:
                step = step + decay * p
            return (beta1 * m + step).astype(m.dtype)

        mu = gt.tree_map(new_mu, updates, state.mu, nu, updates if params is None else params)
        out = gt.tree_map(lambda m, g: m.astype(g.dtype), mu, updates)
        return out, ScaleByNovogradState(count=gt.safe_increment(state.count), mu=mu, nu=nu)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- Lion


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): the momentum, an EMA of gradients with decay b2


def scale_by_lion(b1: Any = 0.9, b2: Any = 0.99, mu_dtype: Any = None, *,
                  mode: Literal["hard", "smooth", "refined"] = "hard",
                  smooth_beta: Any = 1.0) -> GradientTransformation:
    r"""Lion (Chen et al., 2023, https://arxiv.org/abs/2302.06675): the sign of an interpolated momentum.

    .. math::
        c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \operatorname{sign}(c_t), \quad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    Follows ``optax.scale_by_lion``, including its ``mode``: ``"hard"`` is the sign,
    ``"smooth"`` is :math:`\tanh(\text{smooth\_beta}\; c_t)`, ``"refined"`` keeps
    :math:`c_t` where :math:`|c_t| < 1` and takes its sign elsewhere.

    Args:
      b1: :math:`\beta_1`, the interpolation between momentum and gradient for the step.
      b2: :math:`\beta_2`, the momentum's decay.
      mu_dtype: dtype of the momentum; ``None`` keeps the parameters'.
      mode: ``"hard"``, ``"smooth"`` or ``"refined"``.
      smooth_beta: the tanh's sharpness in ``"smooth"`` mode.
    Every numeric hyperparameter may be a float, an array or a schedule of the step.
    """
    _check_betas("scale_by_lion", b1=b1, b2=b2)
    signs = {
        "hard": lambda c, beta: jnp.sign(c),
        "smooth": lambda c, beta: jnp.tanh(beta * c),
        "refined": lambda c, beta: jnp.where(jnp.abs(c) < 1.0, c, jnp.sign(c)),
    }

    def init(params):
        return ScaleByLionState(count=gt.zero_count(), mu=gt.tree_zeros_like(params, mu_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        # optax checks the mode at the first update, not when the transform is built.
        if mode not in signs:
            raise ValueError(f"scale_by_lion: mode must be one of {sorted(signs)}, got {mode!r}")
        sign = signs[mode]
        beta1, beta2, sharpness = _values_at(state.count, b1, b2, smooth_beta)
        out = gt.tree_map(lambda g, m: sign((1.0 - beta1) * g + beta1 * m, sharpness).astype(g.dtype),
                          updates, state.mu)
        mu = gt.tree_cast_like(gt.update_moment(updates, state.mu, beta2, 1), state.mu)
        return out, ScaleByLionState(count=gt.safe_increment(state.count), mu=mu)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- Adan


class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    m: Any  # like params: EMA of gradients
    v: Any  # like params: EMA of gradient differences g_t - g_{t-1}
    n: Any  # like params (real): EMA of |g_t + (1-b2)(g_t - g_{t-1})|^2
    prev_grad: Any  # like params: the previous step's gradient


def scale_by_adan(b1: Any = 0.98, b2: Any = 0.92, b3: Any = 0.99, eps: Any = 1e-8,
                  eps_root: Any = 0.0) -> GradientTransformation:
    r"""Adan, adaptive Nesterov momentum (Xie et al., 2022, https://arxiv.org/abs/2208.06677).

    Follows ``optax.scale_by_adan``.

    With :math:`\Delta_t = g_t - g_{t-1}` (zero on the first step):

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \Delta_t, \quad
        n_t = \beta_3 n_{t-1} + (1-\beta_3) |g_t + (1-\beta_2) \Delta_t|^2,

        u_t = \frac{\hat m_t + (1-\beta_2) \hat v_t}{\sqrt{\hat n_t + \epsilon_{root}} + \epsilon}

    with every moment bias-corrected by its own :math:`1-\beta^t`.

    Args:
      b1: decay of the gradient average.
      b2: decay of the gradient-difference average.
      b3: decay of the squared-term average.
      eps: added to the root of the corrected squared term.
      eps_root: added to the corrected squared term inside the root.
    Every numeric hyperparameter may be a float, an array or a schedule of the step.
    """
    _check_betas("scale_by_adan", b1=b1, b2=b2, b3=b3)
    check_range("eps", eps, 0.0, where="scale_by_adan")

    def init(params):
        return ScaleByAdanState(count=gt.zero_count(), m=gt.tree_zeros_like(params), v=gt.tree_zeros_like(params),
                                n=gt.tree_real_zeros_like(params), prev_grad=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        beta1, beta2, beta3, epsilon, epsilon_root = _values_at(state.count, b1, b2, b3, eps, eps_root)
        first = state.count == 0
        diff = gt.tree_map(lambda g, p: jnp.where(first, jnp.zeros_like(g), g - p), updates, state.prev_grad)
        m = gt.update_moment(updates, state.m, beta1, 1)
        v = gt.update_moment(diff, state.v, beta2, 1)
        lookahead = gt.tree_map(lambda g, d: g + (1 - beta2) * d, updates, diff)
        n = gt.update_moment_per_elem_norm(lookahead, state.n, beta3, 2)
        count = gt.safe_increment(state.count)
        m_hat, v_hat, n_hat = (gt.bias_correction(x, b, count) for x, b in ((m, beta1), (v, beta2), (n, beta3)))
        out = gt.tree_map(
            lambda mh, vh, nh, g: ((mh + (1 - beta2) * vh) / (jnp.sqrt(nh + epsilon_root) + epsilon)).astype(g.dtype),
            m_hat, v_hat, n_hat, updates)
        return out, ScaleByAdanState(count=count, m=gt.tree_cast_like(m, state.m), v=gt.tree_cast_like(v, state.v),
                                     n=gt.tree_cast_like(n, state.n),
                                     prev_grad=gt.tree_cast_like(updates, state.prev_grad))

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- trust ratio (LAMB, LARS, Fromage)


def _safe_norm(x: jax.Array, min_norm: Any) -> jax.Array:
    """``max(||x||, min_norm)``, with a finite gradient where ``||x|| <= min_norm`` (zero included)."""
    small = jnp.sqrt(jnp.sum(_abs_sq(x))) <= min_norm
    norm = jnp.sqrt(jnp.sum(_abs_sq(jnp.where(small, jnp.ones_like(x), x))))
    return jnp.where(small, jnp.asarray(min_norm, norm.dtype), norm)


def scale_by_trust_ratio(min_norm: Any = 0.0, trust_coefficient: Any = 1.0, eps: Any = 0.0) -> GradientTransformation:
    r"""Scales each leaf's update by its trust ratio (``optax.scale_by_trust_ratio``).

    .. math::
        u^l \leftarrow u^l \cdot
            \frac{c\, \max(\lVert w^l \rVert, n_{min})}{\max(\lVert u^l \rVert, n_{min}) + \epsilon}

    and by 1 where either norm is zero. The layer-wise scaling of LARS (You et al.,
    2017, https://arxiv.org/abs/1708.03888), LAMB (You et al., 2020,
    https://arxiv.org/abs/1904.00962) and Fromage (Bernstein et al., 2020,
    https://arxiv.org/abs/2002.03432). Needs the params.

    Args:
      min_norm: :math:`n_{min}`, the smallest norm either side is taken to have.
      trust_coefficient: :math:`c`, a multiplier of the ratio.
      eps: added to the update's norm in the denominator.
    """
    check_range("min_norm", min_norm, 0.0, where="scale_by_trust_ratio")

    def scaled(u, p):
        param_norm, update_norm = _safe_norm(p, min_norm), _safe_norm(u, min_norm)
        ratio = trust_coefficient * param_norm / (update_norm + eps)
        ratio = jnp.where((param_norm == 0) | (update_norm == 0), jnp.ones_like(ratio), ratio)
        return (u * ratio.astype(gt.real_dtype(u))).astype(u.dtype)

    def scale_leaves(updates, params):
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        return gt.tree_map(scaled, updates, params)

    return stateless(scale_leaves)


def fromage_rates(learning_rate: ScalarOrSchedule) -> tuple[ScalarOrSchedule, ScalarOrSchedule]:
    r"""Fromage's step size :math:`\eta / \sqrt{1+\eta^2}` and decay rate :math:`1/\sqrt{1+\eta^2} - 1`.

    Each is a schedule when ``learning_rate`` is one. Used by :func:`gradtx.fromage`
    (Bernstein et al., 2020, https://arxiv.org/abs/2002.03432) with
    :func:`scale_by_trust_ratio`, a learning rate and :func:`gradtx.add_decayed_weights`.
    """
    shrink = lambda lr: 1 / (1 + lr**2) ** 0.5  # noqa: E731
    if callable(learning_rate):
        return (lambda count: shrink(learning_rate(count)) * learning_rate(count),
                lambda count: shrink(learning_rate(count)) - 1)
    return learning_rate * shrink(learning_rate), shrink(learning_rate) - 1
