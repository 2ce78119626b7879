r"""Step-size-free and step-size-adapting methods of ``optax.contrib``: COCOB, DoG, DoWG, D-Adaptation AdamW,
MoMo, MoMo-Adam, MADGRAD and AdaBelief's centred cousin ACProp.

Each follows the ``optax.contrib`` function of the same name (optax 0.2.8): the
same arguments and defaults, the same state fields, the same numbers. The
scalar state (distances, estimated step sizes) is kept in the lowest dtype of
the parameters, as optax keeps it.
"""


from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._hyper import value_at
from gradtx._base import NO_PARAMS_MSG, GradientTransformation, ScalarOrSchedule
from gradtx._transforms.adam_variants import ScaleByBeliefState

__all__ = [
    "COCOBState", "scale_by_cocob",
    "DoGState", "scale_by_dog", "DoWGState", "scale_by_dowg",
    "DAdaptAdamWState", "dadapt_adamw",
    "MomoState", "momo", "MomoAdamState", "momo_adam",
    "MadgradState", "scale_by_madgrad",
    "scale_by_acprop",
]


def _scalar(value: Any, params: Any) -> jax.Array:
    """``value`` as a 0-d array in the lowest dtype of ``params`` (where optax keeps its scalar state)."""
    return jnp.asarray(value, dtype=gt.dtype(params, "lowest"))


# --------------------------------------------------------------------------- COCOB


class COCOBState(NamedTuple):
    """State of :func:`scale_by_cocob`."""

    init_particles: Any  # like params: the parameters at init, x_0
    cumulative_gradients: Any  # like params: minus the sum of the gradients
    scale: Any  # like params: the largest |g| seen so far (at least eps)
    subgradients: Any  # like params: the sum of |g|
    reward: Any  # like params: the bettor's wealth, max(R - g (x - x_0), 0)


def scale_by_cocob(alpha: Any = 100.0, eps: Any = 1e-8) -> GradientTransformation:
    r"""COCOB-Backprop's coin-betting step (Orabona & Tommasi, 2017, https://arxiv.org/abs/1705.07795).

    Per coordinate, with :math:`L_t = \max(L_{t-1}, |g_t|)`, :math:`G_t = G_{t-1} + |g_t|`,
    :math:`R_t = \max(R_{t-1} - g_t (x_t - x_0), 0)` and :math:`C_t = C_{t-1} - g_t`:

    .. math::
        x_{t+1} = x_0 + \frac{C_t}{L_t \max(G_t + L_t, \alpha L_t)} (L_t + R_t)

    and the update is :math:`x_{t+1} - x_t`, as ``optax.contrib.scale_by_cocob``.

    Args:
      alpha: the bound on the growth of the bet.
      eps: the initial value of :math:`L`, which keeps the first division finite.
    """

    def init(params):
        zeros = lambda: gt.zeros_like(params)  # noqa: E731 - buffers of their own (a step donates each)
        return COCOBState(init_particles=gt.tree_copy(params), cumulative_gradients=zeros(),
                          scale=gt.full_like(params, eps), subgradients=zeros(), reward=zeros())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        scale = jax.tree.map(lambda big_l, g: jnp.maximum(big_l, jnp.abs(g)), state.scale, updates)
        subgradients = jax.tree.map(lambda big_g, g: big_g + jnp.abs(g), state.subgradients, updates)
        reward = jax.tree.map(lambda r, g, p, p0: jnp.maximum(r - g * (p - p0), 0),
                              state.reward, updates, params, state.init_particles)
        cumulative = jax.tree.map(lambda c, g: c - g, state.cumulative_gradients, updates)

        def step(p, p0, c, big_l, big_g, r):
            return -p + (p0 + c / (big_l * jnp.maximum(big_g + big_l, alpha * big_l)) * (big_l + r))

        new = jax.tree.map(step, params, state.init_particles, cumulative, scale, subgradients, reward)
        return new, COCOBState(state.init_particles, cumulative, scale, subgradients, reward)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- DoG and DoWG


class DoGState(NamedTuple):
    """State of :func:`scale_by_dog`."""

    is_init_step: jax.Array  # shape=(), dtype=bool: whether no step was taken yet
    init_params: Any  # like params: x_0
    max_dist: jax.Array  # shape=(), lowest params dtype: r_t = max(r_eps, max_s ||x_s - x_0||)
    sum_sq_norm_grads: jax.Array  # shape=(), lowest params dtype: sum_s ||g_s||^2


def scale_by_dog(init_step: tuple[Literal["distance", "learning_rate", "heuristic"], Any],
                 eps: Any = 1e-8) -> GradientTransformation:
    r"""Distance over Gradients (Ivgi et al., 2023, https://arxiv.org/abs/2302.12022), as ``optax.contrib``'s.

    .. math::
        r_t = \max(r_{t-1}, \|x_t - x_0\|), \qquad
        u_t = \frac{r_t}{\sqrt{\sum_{s \le t} \|g_s\|^2 + \epsilon}}\, g_t

    (norms over the whole tree). The learning rate is applied afterwards, with its sign.

    Args:
      init_step: how :math:`r_0` is set: ``("distance", r)`` (:math:`r_0 = r`), ``("heuristic", c)``
        (:math:`r_0 = c (1 + \|x_0\|)`), or ``("learning_rate", lr)`` (:math:`r_0 = 0` and the first step
        is scaled by ``lr``).
      eps: added under the root.

    Raises:
      ValueError: at ``init`` for another kind of ``init_step``.
    """
    init_step_type, init_step_value = init_step

    def init(params):
        if init_step_type == "distance":
            r_eps = init_step_value
        elif init_step_type == "heuristic":
            r_eps = init_step_value * (1 + gt.norm(params))
        elif init_step_type == "learning_rate":
            r_eps = 0.0
        else:
            raise ValueError(f"Invalid init_step specification for scale_by_dog: init_step_type={init_step_type!r}; "
                             "use 'distance', 'heuristic' or 'learning_rate'.")
        return DoGState(is_init_step=jnp.asarray(True), init_params=gt.tree_copy(params),
                        max_dist=_scalar(r_eps, params), sum_sq_norm_grads=_scalar(0.0, params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        max_dist = jnp.maximum(state.max_dist, gt.norm(gt.sub(state.init_params, params)))
        sum_sq = state.sum_sq_norm_grads + gt.norm(updates, squared=True)
        lr = max_dist / jnp.sqrt(sum_sq + eps)
        if init_step_type == "learning_rate":
            lr = jnp.where(state.is_init_step, init_step_value, lr)
        return gt.scale(lr, updates), DoGState(jnp.asarray(False), state.init_params, max_dist, sum_sq)

    return GradientTransformation(init, update)


class DoWGState(NamedTuple):
    """State of :func:`scale_by_dowg`."""

    init_params: Any  # like params: x_0
    weighted_sq_norm_grads: jax.Array  # shape=(), lowest params dtype: sum_s r_s^2 ||g_s||^2
    estim_sq_dist: jax.Array  # shape=(), lowest params dtype: r_t^2 = max(r_{t-1}^2, ||x_t - x_0||^2)


def scale_by_dowg(init_estim_sq_dist: Any = None, eps: Any = 1e-4) -> GradientTransformation:
    r"""Distance over Weighted Gradients (Khaled et al., 2023, https://arxiv.org/abs/2305.16284).

    .. math::
        \bar r_t^2 = \max(\bar r_{t-1}^2, \|x_t - x_0\|^2), \quad
        v_t = v_{t-1} + \bar r_t^2 \|g_t\|^2, \quad
        u_t = \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon}\, g_t

    As ``optax.contrib``'s DoWG; the learning rate is applied afterwards, with its sign.

    Args:
      init_estim_sq_dist: :math:`\bar r_0^2`; ``None`` uses ``eps``.
      eps: added to the root, and the default :math:`\bar r_0^2`.
    """

    def init(params):
        sq_dist = eps if init_estim_sq_dist is None else init_estim_sq_dist
        return DoWGState(init_params=gt.tree_copy(params), weighted_sq_norm_grads=_scalar(0.0, params),
                         estim_sq_dist=_scalar(sq_dist, params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        sq_dist = jnp.maximum(state.estim_sq_dist, gt.norm(gt.sub(state.init_params, params), squared=True))
        weighted = sq_dist * gt.norm(updates, squared=True) + state.weighted_sq_norm_grads
        lr = sq_dist / (jnp.sqrt(weighted) + eps)
        return gt.scale(lr, updates), state._replace(estim_sq_dist=sq_dist, weighted_sq_norm_grads=weighted)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- D-Adaptation AdamW


class DAdaptAdamWState(NamedTuple):
    """State of :func:`dadapt_adamw`."""

    exp_avg: Any  # like params: first moment of dlr * g
    exp_avg_sq: Any  # like params: second moment of g
    grad_sum: Any  # like params: the weighted sum s_t of dlr * g
    estim_lr: jax.Array  # shape=(), lowest params dtype: the distance estimate d_t
    numerator_weighted: jax.Array  # shape=(), lowest params dtype: the weighted numerator of d's estimate
    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def dadapt_adamw(learning_rate: ScalarOrSchedule = 1.0, betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-8,
                 estim_lr0: Any = 1e-6, weight_decay: Any = 0.0) -> GradientTransformation:
    r"""Learning-rate-free AdamW by D-Adaptation (Defazio & Mishchenko, 2023, https://arxiv.org/abs/2301.07733).

    Estimates the distance to the solution :math:`d_t` (in the infinity norm) and
    runs AdamW with step size :math:`d_t \gamma_t \sqrt{1-\beta_2^t} / (1-\beta_1^t)`,
    where :math:`\gamma_t` is ``learning_rate`` (best a schedule whose peak is 1).
    As ``optax.contrib.dadapt_adamw``: a complete optimizer (the update includes the
    step size and its sign).

    Args:
      learning_rate: :math:`\gamma_t`, a float, an array or a schedule.
      betas: :math:`(\beta_1, \beta_2)` of the underlying AdamW.
      eps: added to the root of the second moment.
      estim_lr0: :math:`d_0`, an under-estimate of the step size.
      weight_decay: AdamW's decoupled weight decay, scaled by the step size.
    """

    def init(params):
        return DAdaptAdamWState(exp_avg=gt.zeros_like(params), exp_avg_sq=gt.zeros_like(params),
                                grad_sum=gt.zeros_like(params), estim_lr=_scalar(estim_lr0, params),
                                numerator_weighted=_scalar(0.0, params), count=gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        beta1, beta2 = betas
        sb2 = beta2**0.5
        count = gt.safe_increment(state.count)
        bc = ((1 - beta2**count) ** 0.5) / (1 - beta1**count)
        dlr = (state.estim_lr * value_at(learning_rate, state.count) * bc).astype(state.numerator_weighted.dtype)
        s_weighted = jax.tree.map(lambda s, v: s / (jnp.sqrt(v) + eps), state.grad_sum, state.exp_avg_sq)
        numerator_acum = gt.vdot(updates, s_weighted)
        exp_avg = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * dlr * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        grad_sum = jax.tree.map(lambda s, g: sb2 * s + (1 - sb2) * dlr * g, state.grad_sum, updates)
        numerator = sb2 * state.numerator_weighted + (1 - sb2) * dlr * numerator_acum
        d_estimate = numerator / ((1 - sb2) * gt.sum(jax.tree.map(jnp.abs, grad_sum)))
        estim_lr = jnp.maximum(state.estim_lr, d_estimate)
        new = jax.tree.map(lambda m, v, p: -weight_decay * dlr * p - m / (jnp.sqrt(v) + eps),
                           exp_avg, exp_avg_sq, params)
        return new, DAdaptAdamWState(exp_avg, exp_avg_sq, grad_sum, estim_lr, numerator, count)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- MoMo and MoMo-Adam


class MomoState(NamedTuple):
    """State of :func:`momo`."""

    exp_avg: Any  # like params: the momentum of the gradients
    barf: jax.Array  # shape=(), lowest params dtype: the momentum of the loss values
    gamma: jax.Array  # shape=(), lowest params dtype: the momentum of <g, x>
    lb: jax.Array  # shape=(), lowest params dtype: the (possibly adapted) lower bound of the loss
    count: jax.Array  # shape=(), dtype=int32: steps taken so far


class MomoAdamState(NamedTuple):
    """State of :func:`momo_adam`."""

    exp_avg: Any  # like params: the first moment of the gradients
    exp_avg_sq: Any  # like params: the second moment of the gradients
    barf: jax.Array  # shape=(), lowest params dtype: the momentum of the loss values
    gamma: jax.Array  # shape=(), lowest params dtype: the momentum of <g, x>
    lb: jax.Array  # shape=(), lowest params dtype: the (possibly adapted) lower bound of the loss
    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def _momo_step_size(alpha, weight_decay, barf, gamma, iprod, lb, norm_sq, bc1, lower_bound, adapt_lower_bound):
    """MoMo's truncated Polyak step and its next lower bound (``bc1 = 1`` for plain MoMo)."""
    shrink = 1 + alpha * weight_decay
    if adapt_lower_bound:
        cap = shrink * (barf - gamma) + iprod
        lb = jnp.where(cap < shrink * bc1 * lb, jnp.maximum(cap / (2 * bc1 * shrink), lower_bound), lb)
    t1 = jnp.maximum(shrink * (barf - bc1 * lb - gamma) + iprod, 0.0) / norm_sq
    t1 = jnp.where(norm_sq <= jnp.finfo(float).eps, 0.0, t1)
    tau = jnp.minimum(alpha / bc1, t1)
    if adapt_lower_bound:
        lb = jnp.maximum(((barf + iprod - gamma) - 0.5 * tau * norm_sq) / bc1, lower_bound)
    return tau, lb


def _loss_value(value: Any, where: str) -> Any:
    if value is None:
        raise ValueError(f"{where}: pass the loss to update as value=loss (MoMo's step size needs it).")
    return value


def momo(learning_rate: ScalarOrSchedule = 1.0, beta: Any = 0.9, lower_bound: Any = 0.0, weight_decay: Any = 0.0,
         adapt_lower_bound: bool = False) -> GradientTransformation:
    r"""MoMo: momentum with a truncated Polyak step (Schaipp et al., 2023, https://arxiv.org/abs/2305.07583).

    With momenta :math:`d_t` of the gradients, :math:`\bar f_t` of the losses and
    :math:`\gamma_t` of :math:`\langle g_t, x_t\rangle` (all with :math:`\beta`,
    the first step taking the values as they are):

    .. math::
        \tau_t = \min\Big(\alpha_t, \frac{(1+\alpha_t\lambda)(\bar f_t - f_* - \gamma_t)
                 + \langle d_t, x_t\rangle}{\|d_t\|^2}\Big)_+, \qquad
        u_t = -\frac{\alpha_t\lambda}{1+\alpha_t\lambda} x_t - \tau_t d_t

    As ``optax.contrib.momo``: a complete optimizer whose ``update`` needs the loss
    as ``value=``.

    Example::

        tx = gradtx.momo(learning_rate=1.0)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss)

    Args:
      learning_rate: :math:`\alpha_t`, the largest step, a float, an array or a schedule.
      beta: the momentum :math:`\beta`.
      lower_bound: :math:`f_*`, a lower bound of the loss.
      weight_decay: :math:`\lambda`.
      adapt_lower_bound: estimate :math:`f_*` on the fly (``lower_bound`` then floors it).
    """

    def init(params):
        return MomoState(exp_avg=gt.zeros_like(params), barf=_scalar(0.0, params), gamma=_scalar(0.0, params),
                         lb=_scalar(lower_bound, params), count=gt.zero_count())

    def update(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        value = _loss_value(value, "momo")
        bt = jnp.where(state.count == 0, 0.0, beta)
        barf = bt * state.barf + (1 - bt) * jnp.asarray(value, dtype=state.barf.dtype)
        exp_avg = jax.tree.map(lambda m, g: bt * m + (1 - bt) * g, state.exp_avg, updates)
        gamma = bt * state.gamma + (1 - bt) * gt.vdot(updates, params)
        norm_sq = gt.norm(exp_avg, squared=True)
        iprod = gt.vdot(exp_avg, params)
        alpha = value_at(learning_rate, state.count)
        tau, lb = _momo_step_size(alpha, weight_decay, barf, gamma, iprod, state.lb, norm_sq, 1,
                                  lower_bound, adapt_lower_bound)
        new = jax.tree.map(lambda m, p: -(alpha * weight_decay) / (1 + alpha * weight_decay) * p - tau * m,
                           exp_avg, params)
        return new, MomoState(exp_avg, barf, gamma, lb, gt.safe_increment(state.count))

    return GradientTransformation(init, update)


def momo_adam(learning_rate: ScalarOrSchedule = 1e-2, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8,
              lower_bound: Any = 0.0, weight_decay: Any = 0.0,
              adapt_lower_bound: bool = False) -> GradientTransformation:
    r"""MoMo-Adam: MoMo's truncated Polyak step in Adam's geometry (Schaipp et al., 2023,
    https://arxiv.org/abs/2305.07583), as ``optax.contrib.momo_adam``.

    :math:`d_t`, :math:`\bar f_t` and :math:`\gamma_t` are momenta with :math:`\beta_1`;
    :math:`D_t = \epsilon + \sqrt{v_t / (1-\beta_2^t)}` preconditions, and with
    :math:`\rho_t = 1-\beta_1^t`:

    .. math::
        \tau_t = \min\Big(\frac{\alpha_t}{\rho_t}, \frac{(1+\alpha_t\lambda)(\bar f_t - \rho_t f_* - \gamma_t)
                 + \langle d_t, x_t\rangle}{\langle d_t, d_t / D_t\rangle}\Big)_+, \qquad
        u_t = -\frac{\alpha_t\lambda}{1+\alpha_t\lambda} x_t - \tau_t \frac{d_t}{D_t}

    A complete optimizer whose ``update`` needs the loss as ``value=``.

    Args:
      learning_rate: :math:`\alpha_t`, a float, an array or a schedule.
      b1: :math:`\beta_1`, the momentum of the gradients, losses and :math:`\langle g, x\rangle`.
      b2: :math:`\beta_2`, the second moment's decay.
      eps: added to the preconditioner.
      lower_bound: :math:`f_*`, a lower bound of the loss.
      weight_decay: :math:`\lambda`.
      adapt_lower_bound: estimate :math:`f_*` on the fly (``lower_bound`` then floors it).
    """

    def init(params):
        return MomoAdamState(exp_avg=gt.zeros_like(params), exp_avg_sq=gt.zeros_like(params),
                             barf=_scalar(0.0, params), gamma=_scalar(0.0, params),
                             lb=_scalar(lower_bound, params), count=gt.zero_count())

    def update(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        value = _loss_value(value, "momo_adam")
        count = gt.safe_increment(state.count)
        barf = b1 * state.barf + (1 - b1) * jnp.asarray(value, dtype=state.barf.dtype)
        exp_avg = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, updates)
        bc2 = jnp.asarray(1 - b2**count, dtype=barf.dtype)
        precond = jax.tree.map(lambda v: eps + jnp.sqrt(v / bc2), exp_avg_sq)
        norm_sq = gt.vdot(exp_avg, jax.tree.map(jnp.divide, exp_avg, precond))
        gamma = b1 * state.gamma + (1 - b1) * gt.vdot(updates, params)
        iprod = gt.vdot(exp_avg, params)
        alpha = value_at(learning_rate, state.count)
        bc1 = jnp.asarray(1 - b1**count, dtype=barf.dtype)
        tau, lb = _momo_step_size(alpha, weight_decay, barf, gamma, iprod, state.lb, norm_sq, bc1,
                                  lower_bound, adapt_lower_bound)
        new = jax.tree.map(lambda m, d, p: -(alpha * weight_decay) / (1 + alpha * weight_decay) * p - tau * m / d,
                           exp_avg, precond, params)
        return new, MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, lb, count)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- MADGRAD


class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    grad_sum_sq: Any  # like params: the weighted sum of squared gradients G_k
    s: Any  # like params: the weighted sum of gradients s_k
    x0: Any  # like params: the parameters at init


def scale_by_madgrad(learning_rate: ScalarOrSchedule, momentum: Any = 0.9, eps: Any = 1e-6) -> GradientTransformation:
    r"""MADGRAD's dual-averaged, cube-root-scaled step (Defazio & Jelassi, 2021, https://arxiv.org/abs/2101.11075).

    With :math:`\lambda_k = (\gamma_k + \epsilon)\sqrt{k+1}`:

    .. math::
        s_k = s_{k-1} + \lambda_k g_k, \quad G_k = G_{k-1} + \lambda_k g_k^2, \quad
        z_k = x_0 - \frac{s_k}{\sqrt[3]{G_k} + \epsilon}, \quad
        x_{k+1} = (1 - \beta) z_k + \beta x_k

    and the update is :math:`x_{k+1} - x_k`, as ``optax.contrib.scale_by_madgrad``
    (the learning rate is inside: this is a complete step).

    Args:
      learning_rate: :math:`\gamma_k`, a float, an array or a schedule.
      momentum: :math:`\beta`, the averaging of the iterates.
      eps: added to the learning rate and to the cube root.
    """

    def init(params):
        return MadgradState(count=gt.zero_count(), grad_sum_sq=gt.zeros_like(params), s=gt.zeros_like(params),
                            x0=gt.tree_copy(params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        lamb = (value_at(learning_rate, state.count) + eps) * jnp.sqrt(state.count + 1)
        grad_sum_sq = jax.tree.map(lambda q, g: q + (lamb * g**2).astype(g.dtype), state.grad_sum_sq, updates)
        s = jax.tree.map(lambda s, g: s + (lamb * g).astype(g.dtype), state.s, updates)

        def step(x0, s, q, x):
            z = x0 - s / (jnp.cbrt(q) + eps)
            return (1 - momentum) * z + momentum * x - x

        new = jax.tree.map(step, state.x0, s, grad_sum_sq, params)
        return new, MadgradState(gt.safe_increment(state.count), grad_sum_sq, s, state.x0)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------- ACProp


def scale_by_acprop(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-16, eps_root: Any = 1e-16) -> GradientTransformation:
    r"""ACProp's asynchronous centring (Zhuang et al., 2021, https://arxiv.org/abs/2110.05454).

    The gradient is divided by the root of the *previous* step's bias-corrected
    second central moment (1 on the first step), so the denominator does not see
    the current gradient:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        s_t = \beta_2 s_{t-1} + (1-\beta_2) |g_t - m_{t-1}|^2 + \epsilon_{root}, \quad
        u_t = \frac{g_t}{\sqrt{s_{t-1} / (1-\beta_2^{t-1})} + \epsilon}

    As ``optax.contrib.scale_by_acprop``, with AdaBelief's state type.

    Args:
      b1: :math:`\beta_1`, the first moment's decay.
      b2: :math:`\beta_2`, the central second moment's decay.
      eps: added to the root.
      eps_root: added to the central moment at every step.
    """

    def init(params):
        return ScaleByBeliefState(count=gt.zero_count(), mu=gt.zeros_like(params), nu=gt.zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        mu = gt.update_moment(updates, state.mu, b1, 1)
        error = jax.tree.map(jnp.subtract, updates, state.mu)
        nu = jax.tree.map(lambda v: v + eps_root, gt.update_moment_per_elem_norm(error, state.nu, b2, 2))
        count = gt.safe_increment(state.count)
        initial = state.count == 0
        nu_hat = gt.bias_correction(state.nu, b2, jnp.where(initial, count, state.count))
        nu_hat = jax.tree.map(lambda v: jnp.where(initial, 1, v), nu_hat)
        new = jax.tree.map(lambda g, v: g / (jnp.sqrt(v) + eps), updates, nu_hat)
        return new, ScaleByBeliefState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)
