"""Memory-light second moments: Adafactor's factored RMS (optax's and torch's) and SM3.

Adafactor (Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235) keeps, for a
matrix-shaped leaf, only the row and column means of the squared gradient and
rebuilds the second moment as their normalised outer product. Its other pieces are
separate transforms here: clipping by the RMS of each leaf's update
(:func:`clip_by_block_rms`), scaling by the RMS of each parameter
(:func:`scale_by_param_block_rms`) and the paper's relative step size
(:func:`scale_by_relative_step_size`), so that ``optax.adafactor`` and
``torch.optim.Adafactor`` are two chains over the same pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import NO_PARAMS_MSG, GradientTransformation, ScalarOrSchedule, stateless

__all__ = [
    "FactoredState",
    "ScaleByRelativeStepSizeState",
    "ScaleBySM3State",
    "clip_by_block_rms",
    "decay_rate_pow",
    "scale_by_factored_rms",
    "scale_by_param_block_rms",
    "scale_by_relative_step_size",
    "scale_by_sm3",
]


def _abs_sq(x: jax.Array) -> jax.Array:
    return jnp.real(x * jnp.conj(x)) if jnp.iscomplexobj(x) else x * x


def _rms(x: jax.Array) -> jax.Array:
    """The root mean square of one leaf, as a 0-d array of its real dtype."""
    return jnp.sqrt(jnp.mean(_abs_sq(x)))


# --------------------------------------------------------------------------------------------
# Factored second moment (Adafactor)
# --------------------------------------------------------------------------------------------


def decay_rate_pow(step: jax.typing.ArrayLike, exponent: jax.typing.ArrayLike = 0.8, *,
                   in_float32: bool = True) -> jax.Array:
    r"""Adafactor's second-moment decay :math:`\hat\beta_{2,t} = 1 - t^{-c}`, with :math:`t = step + 1`.

    With ``in_float32`` (the default) the step is rounded to float32 first, as optax's
    default does, so that both give the same numbers; otherwise it is computed in the
    step's own dtype (:func:`scale_by_factored_rms` passes each leaf's), as torch computes
    ``step ** beta2_decay`` in double precision. torch's ``beta2_decay`` is :math:`-c`.
    """
    t = jnp.asarray(step, jnp.float32) + 1 if in_float32 else step + 1
    return 1.0 - t ** (-exponent)


class _Moments:
    """One leaf's results; a plain object, so tree maps treat it as a leaf."""

    def __init__(self, u, v_row, v_col, v):
        self.u, self.v_row, self.v_col, self.v = u, v_row, v_col, v


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms` (the layout of optax's ``FactoredState``).

    A leaf that is factored keeps ``v_row``/``v_col`` and a ``(1,)`` placeholder in
    ``v``; a leaf that is not keeps ``v`` and placeholders in ``v_row``/``v_col``
    (``None`` instead of placeholders, and size-1 averaged axes, with ``torch_layout``).
    """

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    v_row: Any  # per leaf: the squared-gradient mean over the larger factored axis (that axis removed)
    v_col: Any  # per leaf: the squared-gradient mean over the other factored axis (that axis removed)
    v: Any  # per leaf: the full second moment for leaves that are not factored


def _factored_axes(shape: tuple, factored: bool, min_dim_size_to_factor: int,
                   axes: tuple[int, int] | None) -> tuple[int, int] | None:
    """``(d1, d0)``: statistics are averaged over ``d0`` for ``v_row`` and over ``d1`` for ``v_col``."""
    if not factored or len(shape) < 2:
        return None
    if axes is None:  # optax: the two largest axes (np.argsort's order for ties)
        order = np.argsort(shape)
        d1, d0 = int(order[-2]), int(order[-1])
    else:
        d1, d0 = axes[0] % len(shape), axes[1] % len(shape)
    if min(shape[d1], shape[d0]) < min_dim_size_to_factor:
        return None
    return d1, d0


def scale_by_factored_rms(factored: bool = True, decay_rate: Any = 0.8, step_offset: Any = 0,
                          min_dim_size_to_factor: int = 128, epsilon: Any = 1e-30,
                          decay_rate_fn: Callable[[Any, Any], Any] = decay_rate_pow, *,
                          factored_axes: tuple[int, int] | None = None,
                          clamp_eps: Any = None, torch_layout: bool = False) -> GradientTransformation:
    r"""Divides updates by Adafactor's factored estimate of the RMS gradient (Shazeer & Stern, 2018).

    For a leaf factored over axes :math:`(a, b)` (rows :math:`i`, columns :math:`j`):

    .. math::
        \hat\beta_t = \text{decay\_rate\_fn}(t - 1 - \text{step\_offset}, \text{decay\_rate}), \quad
        R_t = \hat\beta_t R_{t-1} + (1-\hat\beta_t)\,\text{mean}_j(g_t^2 + \epsilon), \quad
        C_t = \hat\beta_t C_{t-1} + (1-\hat\beta_t)\,\text{mean}_i(g_t^2 + \epsilon),

    .. math::
        u_t = g_t \Big/ \sqrt{R_t C_t / \text{mean}_i R_t}

    and for any other leaf :math:`v_t = \hat\beta_t v_{t-1} + (1-\hat\beta_t)(g_t^2+\epsilon)`,
    :math:`u_t = g_t / \sqrt{v_t}`. Other axes of a higher-rank leaf are batch axes.

    Defaults give ``optax.scale_by_factored_rms``, which factors the two largest axes
    when both have at least ``min_dim_size_to_factor`` entries. torch.optim.Adafactor
    is the same estimator with these options (and ``epsilon=0``, ``decay_rate=-beta2_decay``,
    ``decay_rate_fn=partial(decay_rate_pow, in_float32=False)``):

    - ``factored_axes=(-2, -1)``: always factor the last two axes (with
      ``min_dim_size_to_factor=1``, every leaf of rank 2 or more).
    - ``clamp_eps=eps1``: instead of adding ``epsilon``, clamp the row mean in the
      denominator below at :math:`\epsilon_1` and the variance estimate at
      :math:`\epsilon_1^2`: :math:`u_t = g_t / \sqrt{\max(R_t C_t / \max(\text{mean}_i R_t,
      \epsilon_1), \epsilon_1^2)}`. ``clamp_eps="finfo"`` uses the machine epsilon of
      each leaf's dtype (torch's ``eps=(None, ...)``).
    - ``torch_layout=True``: keep the state as torch's ``row_var``/``col_var``/``variance``:
      the averaged axis stays in ``v_row``/``v_col`` with size 1, and each leaf holds only
      the statistics it uses (``None`` in the others, where optax keeps ``(1,)`` placeholders).

    Args:
      factored: whether to factor leaves of rank 2 or more at all.
      decay_rate: the exponent :math:`c` of the default decay :math:`1 - t^{-c}`.
      step_offset: subtracted from the step count (to restart the decay when fine-tuning).
      min_dim_size_to_factor: factor only when both factored axes are at least this long.
      epsilon: added to the squared gradient (optax's regularisation).
      decay_rate_fn: ``(step, decay_rate) -> beta``, evaluated for each leaf with the zero-based
        step (after ``step_offset``) in that leaf's real dtype; the default is :func:`decay_rate_pow`.
      factored_axes: ``(a, b)`` to factor over instead of the two largest axes.
      clamp_eps: ``None`` (optax), a number or ``"finfo"``: torch's clamping, see above.
      torch_layout: torch's state layout, see above.
    """
    check_range("decay_rate", decay_rate, 0.0, where="scale_by_factored_rms")
    check_range("epsilon", epsilon, 0.0, where="scale_by_factored_rms")
    if isinstance(clamp_eps, str) and clamp_eps != "finfo":
        raise ValueError(f"scale_by_factored_rms: clamp_eps must be None, a number or 'finfo', got {clamp_eps!r}")
    if clamp_eps is not None and not isinstance(clamp_eps, str):
        check_range("clamp_eps", clamp_eps, 0.0, where="scale_by_factored_rms")

    def axes_of(x):
        return _factored_axes(np.shape(x), factored, min_dim_size_to_factor, factored_axes)

    def placeholder(x):
        return None if torch_layout else jnp.zeros((1,), gt.real_dtype(x))

    def mean(x, axis):
        return jnp.mean(x, axis=axis, keepdims=torch_layout)

    def expand(x, axis):  # undoes `mean`'s removal of an axis
        return x if torch_layout else jnp.expand_dims(x, axis)

    def init(params):
        def zeros_without(p, axis):
            shape = list(np.shape(p))
            shape[axis] = 1
            return jnp.zeros(shape if torch_layout else np.delete(shape, axis), gt.real_dtype(p))

        def v_row(p):
            axes = axes_of(p)
            return placeholder(p) if axes is None else zeros_without(p, axes[1])

        def v_col(p):
            axes = axes_of(p)
            return placeholder(p) if axes is None else zeros_without(p, axes[0])

        def v(p):
            return jnp.zeros(np.shape(p), gt.real_dtype(p)) if axes_of(p) is None else placeholder(p)

        return FactoredState(count=gt.zero_count(), v_row=gt.tree_map(v_row, params),
                             v_col=gt.tree_map(v_col, params), v=gt.tree_map(v, params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        rate = value_at(decay_rate, state.count)
        eps = value_at(epsilon, state.count)
        clamp = None if clamp_eps is None or clamp_eps == "finfo" else value_at(clamp_eps, state.count)

        def one(g, v_row, v_col, v):
            dtype = gt.real_dtype(g)
            step = jnp.asarray(state.count - step_offset).astype(dtype)
            beta = jnp.asarray(decay_rate_fn(step, rate)).astype(dtype)
            floor = jnp.finfo(dtype).eps if clamp_eps == "finfo" else clamp
            floor = None if floor is None else jnp.asarray(floor).astype(dtype)
            g_sq = _abs_sq(g) + jnp.asarray(eps).astype(dtype)
            axes = axes_of(g)
            if axes is None:
                v = (beta * v + (1 - beta) * g_sq).astype(dtype)
                scale = v**-0.5 if floor is None else jax.lax.rsqrt(jnp.maximum(v, floor * floor))
                return _Moments((g * scale).astype(g.dtype), v_row, v_col, v)
            d1, d0 = axes
            v_row = (beta * v_row + (1 - beta) * mean(g_sq, d0)).astype(dtype)
            v_col = (beta * v_col + (1 - beta) * mean(g_sq, d1)).astype(dtype)
            row_axis = d1 if torch_layout or d1 < d0 else d1 - 1  # where d1 is in v_row
            row_mean = jnp.mean(v_row, axis=row_axis, keepdims=True)
            if floor is None:
                u = g * expand((v_row / row_mean) ** -0.5, d0) * expand(v_col**-0.5, d1)
            else:
                estimate = expand(v_row, d0) * expand(v_col, d1) / expand(jnp.maximum(row_mean, floor), d0)
                u = jax.lax.rsqrt(jnp.maximum(estimate, floor * floor)) * g
            return _Moments(u.astype(g.dtype), v_row, v_col, v)

        out = gt.tree_map(one, updates, state.v_row, state.v_col, state.v)
        pick = lambda field: jax.tree.map(
            lambda o: getattr(o, field) if isinstance(o, _Moments) else o, out, is_leaf=lambda o: o is None)
        return pick("u"), FactoredState(count=gt.safe_increment(state.count), v_row=pick("v_row"),
                                         v_col=pick("v_col"), v=pick("v"))

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# Per-leaf ("block") RMS pieces
# --------------------------------------------------------------------------------------------


def clip_by_block_rms(threshold: Any) -> GradientTransformation:
    r"""Clips each leaf's update so that its RMS is at most ``threshold`` (``optax.clip_by_block_rms``).

    .. math:: u \leftarrow u / \max\left(1, \text{RMS}(u) / d\right)

    This is Adafactor's update clipping with threshold :math:`d` (torch's ``d``).
    """
    check_range("threshold", threshold, 0.0, where="clip_by_block_rms")
    return stateless(lambda updates, params: gt.tree_map(
        lambda u: (u / jnp.maximum(1.0, _rms(u) / threshold)).astype(u.dtype), updates))


def _param_scale(p: jax.Array, min_scale: Any) -> jax.Array:
    """``max(RMS(p), min_scale)``; the RMS of an all-zero leaf has a defined gradient (as in optax)."""
    rms = _rms(p)
    small = rms <= min_scale
    safe = _rms(jnp.where(small, jnp.ones_like(p), p))
    return jnp.where(small, jnp.asarray(min_scale, rms.dtype), safe)


def scale_by_param_block_rms(min_scale: Any = 1e-3) -> GradientTransformation:
    r"""Multiplies each leaf's update by the RMS of its parameter (``optax.scale_by_param_block_rms``).

    .. math:: u \leftarrow u \cdot \max\left(\text{RMS}(p), \epsilon_2\right)

    Adafactor's parameter-scaled step (Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235),
    with :math:`\epsilon_2` = ``min_scale``.
    """
    check_range("min_scale", min_scale, 0.0, where="scale_by_param_block_rms")

    def scaled(updates, params):
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        return gt.tree_map(lambda u, p: (u * _param_scale(p, min_scale)).astype(u.dtype), updates, params)

    return stateless(scaled)


class ScaleByRelativeStepSizeState(NamedTuple):
    """State of :func:`scale_by_relative_step_size`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def scale_by_relative_step_size(learning_rate: ScalarOrSchedule = 1e-2, min_scale: Any = 1e-3, *,
                                flip_sign: bool = True) -> GradientTransformation:
    r"""Adafactor's relative step size, as torch.optim.Adafactor takes it.

    .. math::
        \rho_t = \min\left(\eta_t, 1/\sqrt{t}\right), \qquad
        u \leftarrow -\,\max\left(\epsilon_2, \text{RMS}(p)\right) \rho_t\, u

    with :math:`t` the step (from 1), :math:`\eta` = ``learning_rate`` and
    :math:`\epsilon_2` = ``min_scale`` (Shazeer & Stern, 2018, section 8,
    https://arxiv.org/abs/1804.04235). The step size is computed in each leaf's dtype.

    Args:
      learning_rate: the cap :math:`\eta` on the relative step size (a float, an array or a schedule).
      min_scale: :math:`\epsilon_2`, the smallest parameter scale.
      flip_sign: negate, so that the step descends (as :func:`gradtx.scale_by_learning_rate`).
    """
    check_range("learning_rate", learning_rate, 0.0, where="scale_by_relative_step_size")
    check_range("min_scale", min_scale, 0.0, where="scale_by_relative_step_size")
    sign = -1 if flip_sign else 1

    def init(params):
        del params
        return ScaleByRelativeStepSizeState(count=gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        lr = value_at(learning_rate, state.count)
        count = gt.safe_increment(state.count)

        def one(u, p):
            dtype = gt.real_dtype(u)
            rho = jnp.minimum(jnp.asarray(lr).astype(dtype), jax.lax.rsqrt(count.astype(dtype)))
            return (u * (sign * _param_scale(p, min_scale).astype(dtype) * rho)).astype(u.dtype)

        return gt.tree_map(one, updates, params), ScaleByRelativeStepSizeState(count=count)

    return GradientTransformation(init, update)


# --------------------------------------------------------------------------------------------
# SM3
# --------------------------------------------------------------------------------------------


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3` (the layout of optax's ``ScaleBySM3State``)."""

    mu: Any  # per leaf: a list of one vector per axis (the cover's accumulators); for a 0-d leaf, [shape ()]
    nu: Any  # like params: the momentum of the preconditioned updates


def scale_by_sm3(b1: Any = 0.9, b2: Any = 1.0, eps: Any = 1e-8) -> GradientTransformation:
    r"""SM3-II's preconditioner with momentum (Anil et al., 2019, https://arxiv.org/abs/1901.11150).

    The cover is the set of slices along each axis: an accumulator :math:`\mu^{(k)}`
    per axis :math:`k` holds, for every index along that axis, the largest accumulated
    value over the slice. For a leaf of rank 2 or more:

    .. math::
        \nu_t = c_2\, g_t^2 + \beta_2 \min_k \mu^{(k)}_{t-1}, \quad
        \mu^{(k)}_t = \max_{\text{axes} \neq k} \nu_t, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\, g_t / \sqrt{\nu_t + \epsilon}

    (with :math:`g / \sqrt{\cdot} = 0` where :math:`\nu_t = 0`), :math:`c_2 = 1-\beta_2`
    or 1 when :math:`\beta_2 = 1`; a vector keeps one accumulator, itself. The update
    is :math:`m_t`. Follows ``optax.scale_by_sm3``; a 0-d leaf (which optax rejects)
    is treated as a vector of one element.

    Args:
      b1: momentum decay.
      b2: decay of the accumulators (1: sums, as in the paper).
      eps: added under the square root.
    """
    check_range("b1", b1, 0.0, 1.0, where="scale_by_sm3")
    check_range("b2", b2, 0.0, 1.0, where="scale_by_sm3")

    def init(params):
        for x in gt.array_leaves(params):
            if jnp.iscomplexobj(x):
                raise ValueError("scale_by_sm3 does not support complex parameters; wrap it in gradtx.complex_as_real")

        def accumulators(p):
            shape, dtype = np.shape(p), jnp.asarray(p).dtype
            if not shape:
                return [jnp.zeros((), dtype)]
            return [jnp.zeros((n,), dtype) for n in shape]

        return ScaleBySM3State(mu=gt.tree_map(accumulators, params), nu=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args

        def accumulate(g, mu):
            beta2 = jnp.asarray(b2).astype(g.dtype)
            c2 = jnp.where(beta2 == 1, jnp.ones_like(beta2), 1 - beta2)  # sums when b2 == 1
            if g.ndim < 2:
                return c2 * g**2 + beta2 * mu[0]
            expanded = [jnp.reshape(m, [1] * k + [n] + [1] * (g.ndim - k - 1)) for k, (m, n) in
                        enumerate(zip(mu, g.shape))]
            smallest = expanded[0]
            for m in expanded[1:]:
                smallest = jnp.minimum(smallest, m)
            return c2 * g**2 + beta2 * smallest

        def new_mu(nu):
            if nu.ndim < 2:
                return [nu]
            return [jnp.max(nu, axis=tuple(a for a in range(nu.ndim) if a != k)) for k in range(nu.ndim)]

        accum = gt.tree_map(accumulate, updates, state.mu)
        scaled = gt.tree_map(
            lambda g, a: (g * jnp.where(a > 0, jax.lax.rsqrt(a + jnp.asarray(eps).astype(a.dtype)), 0)).astype(g.dtype),
            updates, accum)
        nu = gt.tree_cast_like(gt.update_moment(scaled, state.nu, b1, 1), state.nu)
        mu = gt.tree_map(lambda a, old: [m.astype(o.dtype) for m, o in zip(new_mu(a), old)], accum, state.mu)
        return nu, ScaleBySM3State(mu=mu, nu=nu)

    return GradientTransformation(init, update)
