"""Step rules beyond moment estimates: signs, noise, Polyak steps, optimism, Rprop and averaged SGD."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import NO_PARAMS_MSG, EmptyState, GradientTransformation, stateless


__all__ = [
    "scale_by_sign",
    "AddNoiseState", "add_noise",
    "scale_by_polyak",
    "ScaleByOptimisticGradientState", "scale_by_optimistic_gradient",
    "ScaleByRpropState", "scale_by_rprop",
    "ScaleByAsgdState", "scale_by_asgd",
]

# optax's Polyak step is zero when |g|^2 + eps is below float64's machine epsilon, whatever the dtype.
_POLYAK_TINY = float(np.finfo(np.float64).eps)


def _wide_float() -> Any:
    """float64 when JAX has it enabled, else float32: the precision torch's Python-float scalars get."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def scale_by_sign() -> GradientTransformation:
    r"""Replaces every update by its sign (``optax.scale_by_sign``).

    .. math::
        u_t = \operatorname{sign}(g_t)

    The direction of signSGD (Bernstein et al., 2018, https://arxiv.org/abs/1802.04434).
    """
    return stateless(lambda updates, params: gt.tree_map(jnp.sign, updates))


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    rng_key: jax.Array  # a typed PRNG key (shape=()), split once per step


def _as_key(key: Any) -> jax.Array:
    """A typed PRNG key from a typed key, a raw ``uint32`` key or an integer seed."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == jnp.uint32 and key.ndim >= 1:
        return jax.random.wrap_key_data(key)
    return jax.random.key(key)


def resolve_key(key: Any, seed: int | None, where: str) -> jax.Array:
    """A typed PRNG key from optax's ``key`` / older ``seed`` pair; without either, seed 0 and a warning (as optax).

    Raises:
      ValueError: if both are given.
    """
    if seed is not None:
        if key is not None:
            raise ValueError(f"{where}: give `key` or `seed`, not both (`seed` is the older name for an integer key).")
        key = seed
    if key is None:
        warnings.warn(f"{where}: no `key` given, so the noise is drawn from seed 0; pass key=... "
                      "(an int or a jax.random.key) to choose it.", stacklevel=3)
        key = 0
    return _as_key(key)


def add_noise(eta: Any, gamma: Any, key: Any = None, *, seed: int | None = None) -> GradientTransformation:
    r"""Adds annealed Gaussian noise to the updates (Neelakantan et al., 2015, https://arxiv.org/abs/1511.06807).

    .. math::
        u_t = g_t + \sigma_t\, \xi_t, \qquad \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \qquad
        \xi_t \sim \mathcal N(0, I), \quad t = 1, 2, \dots

    Follows ``optax.add_noise`` and, given the same key, draws the same noise: the
    state's key is split into (next key, sample key) each step, the sample key into
    one key per leaf, and each leaf's noise is ``jax.random.normal`` in its dtype.

    Args:
      eta: the base variance :math:`\eta` (a float, an array or a schedule of the step).
      gamma: the annealing exponent :math:`\gamma` (a float, an array or a schedule).
      key: a ``jax.random.key``, a raw ``uint32`` key or an integer seed. Without one,
        seed 0 is used and a warning says so (optax does the same).
      seed: optax's older name for an integer ``key``; give one or the other.
    """
    check_range("eta", eta, 0.0, where="add_noise")
    key = resolve_key(key, seed, "add_noise")

    def init(params):
        del params
        return AddNoiseState(count=gt.zero_count(), rng_key=key)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = gt.safe_increment(state.count)
        std = jnp.sqrt(value_at(eta, state.count) / count ** value_at(gamma, state.count))
        rng_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        noisy = [(g + std * jax.random.normal(k, jnp.shape(g), jnp.result_type(g))).astype(jnp.result_type(g))
                 for g, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy), AddNoiseState(count=count, rng_key=rng_key)

    return GradientTransformation(init, update)


def scale_by_polyak(f_min: Any = 0.0, max_learning_rate: Any = 1.0, eps: Any = 0.0,
                    variant: str = "sps") -> GradientTransformation:
    r"""Scales the updates by the stochastic Polyak step size (``optax.scale_by_polyak``).

    .. math::
        u_t = \min\left\{\frac{f(x_t) - f^\star}{\|g_t\|^2 + \epsilon},\ \gamma_{\max}\right\} g_t

    Loizou et al., 2021 (https://arxiv.org/abs/2002.10542). With ``variant="sps+"``
    the gap :math:`f(x_t) - f^\star` is replaced by its positive part (Garrigos et al.,
    2023, https://arxiv.org/abs/2307.14528). Where :math:`\|g_t\|^2 + \epsilon` is below
    float64's machine epsilon the step is zero, as in optax. The squared norm is taken
    over the whole tree.

    ``update`` needs the loss at the current parameters: ``update(grads, state, params, value=loss)``.

    Args:
      f_min: :math:`f^\star`, a lower bound on the loss (0 for interpolating models).
      max_learning_rate: :math:`\gamma_{\max}`, the largest step allowed.
      eps: :math:`\epsilon`, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"``.
    """
    if variant not in ("sps", "sps+"):
        raise ValueError(f"scale_by_polyak: variant must be 'sps' or 'sps+', got {variant!r}")
    check_range("eps", eps, 0.0, where="scale_by_polyak")
    check_range("max_learning_rate", max_learning_rate, 0.0, where="scale_by_polyak")

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, *, value: Any = None, **extra_args):
        del params, extra_args
        if value is None:
            # TypeError, as optax's update, whose ``value`` is a required keyword-only argument.
            raise TypeError("scale_by_polyak needs the loss at the current parameters: call "
                            "`update(grads, state, params, value=loss)`.")
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates, state
        dtype = jnp.result_type(*leaves)
        sq_norm = gt.tree_sum_of_squares(updates).astype(dtype)
        gap = jnp.asarray(value - f_min).astype(dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = sq_norm + eps
        step = jnp.where(denominator <= _POLYAK_TINY, 0, jnp.minimum(gap / denominator, max_learning_rate))
        return gt.tree_map(lambda g: (step * g).astype(g.dtype), updates), state

    return GradientTransformation(init, update)


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far (0 means no previous gradient yet)
    previous_gradient: Any  # like params: the last step's input updates


def scale_by_optimistic_gradient(alpha: Any = 1.0, beta: Any = 1.0) -> GradientTransformation:
    r"""Generalised optimistic gradient (``optax.scale_by_optimistic_gradient``).

    .. math::
        u_t = (\alpha + \beta)\, g_t - \beta\, g_{t-1}, \qquad g_0 := g_1

    Mokhtari et al., 2019 (https://arxiv.org/abs/1901.08511). On the first step the
    missing previous gradient is the current one, so :math:`u_1 = \alpha g_1` (optax's choice).
    optax keeps a boolean ``is_initial_step``; the step count here also lets
    ``alpha`` and ``beta`` be schedules.

    Args:
      alpha: the coefficient of the current gradient (a float, an array or a schedule).
      beta: the coefficient of the optimistic (negative momentum) correction.
    """

    def init(params):
        return ScaleByOptimisticGradientState(count=gt.zero_count(), previous_gradient=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        a, b = value_at(alpha, state.count), value_at(beta, state.count)
        first = state.count == 0

        def optimistic(g, prev):
            prev = jnp.where(first, g, prev)
            return ((a + b) * g - b * prev).astype(g.dtype)

        new_updates = gt.tree_map(optimistic, updates, state.previous_gradient)
        previous = gt.tree_cast_like(updates, state.previous_gradient)
        return new_updates, ScaleByOptimisticGradientState(count=gt.safe_increment(state.count),
                                                           previous_gradient=previous)

    return GradientTransformation(init, update)


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's `step`
    step_sizes: Any  # like params: the per-element step sizes, torch's `step_size`
    prev_grads: Any  # like params: last gradient, zeroed where its sign flipped, torch's `prev`


def scale_by_rprop(learning_rate: Any, eta_minus: Any = 0.5, eta_plus: Any = 1.2, min_step_size: Any = 1e-6,
                   max_step_size: Any = 50.0, *, clamp_always: bool = False,
                   lagged: bool = True) -> GradientTransformation:
    r"""Rprop without weight backtracking (Riedmiller & Braun, 1993, https://doi.org/10.1109/ICNN.1993.298623).

    With :math:`s = g_t\, g_{t-1}` elementwise:

    .. math::
        \Delta_t = \begin{cases}
            \mathrm{clip}(\eta^+ \Delta_{t-1}) & s > 0 \\
            \mathrm{clip}(\eta^- \Delta_{t-1}) & s < 0 \\
            \Delta_{t-1} & s = 0 \end{cases}, \qquad
        u_t = \begin{cases} 0 & s < 0 \\ \Delta_t \operatorname{sign}(g_t) & \text{otherwise} \end{cases}

    with :math:`\Delta_0` = ``learning_rate`` and clip to ``[min_step_size,
    max_step_size]``. Where the sign flipped the gradient is stored as zero, so the
    next step neither grows nor shrinks that step size. The updates are the
    (positive) step; follow with ``scale(-1.0)`` to descend, as ``optax.rprop`` does.

    This is the algorithm of torch.optim.Rprop and of ``optax.scale_by_rprop``'s
    docstring. Their differences are options:

    - ``clamp_always``: clip the step sizes on every step, also where :math:`s = 0`
      (torch); optax leaves them as they are there. This only matters while a step
      size still holds an initial ``learning_rate`` outside the clip range.
    - ``lagged`` (default ``True``): return the *previous* step's update :math:`u_{t-1}`
      (zero where the sign just flipped, and all zeros on the first step), which is
      what optax 0.2.8 computes (google-deepmind/optax pull request 1725 fixes it).
      gradtx's optax-named functions give optax's numbers, so this is the default;
      ``lagged=False`` applies each step at once, as published and as torch does
      (``gradtx.optim.Rprop`` uses that). It costs no extra state.

    The state keeps the masked gradient (torch's ``prev``) where optax keeps the masked
    step :math:`u_t`; both have the same signs, so the steps agree.

    Args:
      learning_rate: the initial step size :math:`\Delta_0` (a float, an array or a
        schedule, read at step 0 by ``init``).
      eta_minus: :math:`\eta^-`, the factor shrinking a step after a sign change.
      eta_plus: :math:`\eta^+`, the factor growing it while the sign holds.
      min_step_size: the smallest step size.
      max_step_size: the largest step size.
      clamp_always: clip where :math:`s = 0` too, as torch does.
      lagged: return the previous step's update, as optax 0.2.8 does (default);
        ``False`` for the published algorithm.
    """
    check_range("learning_rate", learning_rate, 0.0, where="scale_by_rprop")
    check_range("eta_minus", eta_minus, 0.0, low_open=True, where="scale_by_rprop")
    check_range("eta_plus", eta_plus, 0.0, low_open=True, where="scale_by_rprop")
    check_range("min_step_size", min_step_size, 0.0, where="scale_by_rprop")
    check_range("max_step_size", max_step_size, 0.0, where="scale_by_rprop")

    def init(params):
        return ScaleByRpropState(count=gt.zero_count(),
                                 step_sizes=gt.tree_full_like(params, value_at(learning_rate, 0)),
                                 prev_grads=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        shrink, grow = value_at(eta_minus, state.count), value_at(eta_plus, state.count)
        lo, hi = value_at(min_step_size, state.count), value_at(max_step_size, state.count)
        signs = gt.tree_map(lambda g, prev: jnp.sign(g * prev), updates, state.prev_grads)

        def new_step_size(s, size):
            factor = jnp.where(s > 0, grow, jnp.where(s < 0, shrink, 1))
            clipped = jnp.clip(size * factor, lo, hi)
            return (clipped if clamp_always else jnp.where(s == 0, size, clipped)).astype(size.dtype)

        step_sizes = gt.tree_map(new_step_size, signs, state.step_sizes)
        grads = gt.tree_map(lambda s, g: jnp.where(s < 0, jnp.zeros_like(g), g), signs, updates)
        if lagged:  # u_{t-1} = sign(prev) * step size of step t-1, zeroed where the sign flips now
            steps = gt.tree_map(lambda s, prev, size, g: jnp.where(s < 0, 0, jnp.sign(prev) * size).astype(g.dtype),
                                signs, state.prev_grads, state.step_sizes, updates)
        else:
            steps = gt.tree_map(lambda g, size: (jnp.sign(g) * size).astype(g.dtype), grads, step_sizes)
        new_state = ScaleByRpropState(count=gt.safe_increment(state.count), step_sizes=step_sizes,
                                      prev_grads=gt.tree_cast_like(grads, state.prev_grads))
        return steps, new_state

    return GradientTransformation(init, update)


class ScaleByAsgdState(NamedTuple):
    """State of :func:`scale_by_asgd`; the names are torch.optim.ASGD's."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far, torch's `step`
    eta: jax.Array  # shape=(), scalar_dtype: the step size of the next step
    mu: jax.Array  # shape=(), scalar_dtype: the averaging weight of the next step
    ax: Any  # like params: the averaged parameters (read these for evaluation)


def scale_by_asgd(learning_rate: Any = 1e-2, lambd: Any = 1e-4, alpha: Any = 0.75, t0: Any = 1e6,
                  scalar_dtype: Any = jnp.float32) -> GradientTransformation:
    r"""Averaged SGD (Polyak & Juditsky, 1992, https://doi.org/10.1137/0330046) as torch.optim.ASGD computes it.

    At step :math:`t = 1, 2, \dots`, with :math:`\eta_1` = ``learning_rate`` and :math:`\mu_1 = 1`:

    .. math::
        x_t = (1 - \lambda \eta_t)\, x_{t-1} - \eta_t g_t, \qquad
        \bar x_t = \bar x_{t-1} + \mu_t (x_t - \bar x_{t-1}), \\
        \eta_{t+1} = \frac{\mathrm{lr}}{(1 + \lambda\, \mathrm{lr}\, t)^{\alpha}}, \qquad
        \mu_{t+1} = \frac{1}{\max(1, t - t_0)}

    so averaging starts after ``t0`` steps (before that :math:`\bar x_t = x_t`, copied
    exactly where :math:`\mu_t = 1`). The updates are the whole descent step
    :math:`x_t - x_{t-1}`, and the average is taken over :math:`x_{t-1}` + update, so
    this transform comes last in a chain (after ``maximize`` and coupled weight decay)
    and needs ``params``. The averaged parameters are ``state.ax``.

    As in torch, :math:`\eta` and :math:`\mu` are kept between steps (a change of
    ``learning_rate`` shows from the step after next), are computed in double
    precision where JAX has it, and are stored in ``scalar_dtype`` (torch's default
    dtype, float32).

    Args:
      learning_rate: torch's ``lr`` (a float, an array or a schedule of the step).
      lambd: :math:`\lambda`, the decay term and the step-size decay rate.
      alpha: :math:`\alpha`, the power of the step-size decay.
      t0: :math:`t_0`, the step at which averaging starts.
      scalar_dtype: the dtype of the stored ``eta`` and ``mu``.
    """
    check_range("learning_rate", learning_rate, 0.0, where="scale_by_asgd")
    check_range("lambd", lambd, 0.0, where="scale_by_asgd")

    def init(params):
        return ScaleByAsgdState(count=gt.zero_count(),
                                eta=jnp.asarray(value_at(learning_rate, 0), scalar_dtype),
                                mu=jnp.ones([], scalar_dtype),
                                ax=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        wide = _wide_float()
        lam = jnp.asarray(value_at(lambd, state.count), wide)
        eta = state.eta.astype(wide)
        shrink = 1 - lam * eta

        def step(g, p):
            p_new = p * shrink.astype(p.dtype) - eta.astype(p.dtype) * g
            return (p_new - p).astype(p.dtype)  # exact while p_new is within 2x of p, so p + u == p_new

        steps = gt.tree_map(step, updates, params)

        def average(ax, p, u):
            p_new = (p + u).astype(p.dtype)
            mu = state.mu.astype(p.dtype)
            return jnp.where(state.mu == 1, p_new, ax + (p_new - ax) * mu).astype(ax.dtype)

        ax = gt.tree_map(average, state.ax, params, steps)
        count = gt.safe_increment(state.count)
        t = count.astype(wide)
        lr = jnp.asarray(value_at(learning_rate, state.count), wide)
        next_eta = lr / (1 + lam * lr * t) ** jnp.asarray(value_at(alpha, state.count), wide)
        next_mu = 1 / jnp.maximum(1, t - jnp.asarray(value_at(t0, state.count), wide))
        new_state = ScaleByAsgdState(count=count, eta=next_eta.astype(scalar_dtype), mu=next_mu.astype(scalar_dtype),
                                     ax=ax)
        return steps, new_state

    return GradientTransformation(init, update)
