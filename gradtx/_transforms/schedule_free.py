r"""Schedule-Free learning (Defazio et al., 2024, https://arxiv.org/abs/2405.15682): averaging instead of a schedule.

Three sequences: :math:`z` takes the base optimizer's steps, :math:`x` is a
weighted average of the :math:`z` iterates (where to evaluate), and gradients are
taken at the interpolation :math:`y = (1-\beta_1) z + \beta_1 x` (the parameters
during training). With :math:`c_{t+1} = w_t / \sum_{i\le t} w_i`,

.. math::
    z_{t+1} = z_t + u_t, \quad x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \quad
    y_{t+1} = (1-\beta_1) z_{t+1} + \beta_1 x_{t+1},

which, eliminating :math:`x`, is
:math:`y_{t+1} = y_t + c_{t+1}(z_t - y_t) + (1 - \beta_1(1 - c_{t+1}))\, u_t`.

Two forms, one idea: :func:`schedule_free` wraps any base optimizer and keeps
its counters in its state (``optax.contrib.schedule_free``, whose numbers it
gives); :func:`schedule_free_step` is the step of the ``schedulefree`` package
(``AdamWScheduleFree``, ``SGDScheduleFree``, ``RAdamScheduleFree``) for one
parameter, whose counters live in the param group, as that package keeps them.
Both weigh the average with :func:`averaging_coefficient`.
"""


from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformation, ScalarOrSchedule

__all__ = ["ScheduleFreeState", "ScheduleFreeStepState", "averaging_coefficient", "schedule_free",
           "schedule_free_eval_params", "schedule_free_step"]


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free` (optax.contrib's ``ScheduleFreeState``, field for field)."""

    b1: jax.Array  # shape=(), the params' lowest float dtype: the interpolation weight beta_1
    weight_sum: jax.Array  # shape=(), same dtype: the sum of the averaging weights so far
    step_count: jax.Array  # shape=(), dtype=int32: 1 + the steps taken so far
    max_lr: jax.Array  # shape=(), same dtype: the largest learning rate seen
    base_optimizer_state: Any  # the base optimizer's state
    z: Any  # like params (in state_dtype): the base optimizer's iterate


class ScheduleFreeStepState(NamedTuple):
    """State of :func:`schedule_free_step` (the ``schedulefree`` package's per-parameter state)."""

    z: Any  # like params: the base iterate, schedulefree's state["z"]
    nu: Any  # like params, or None for SGD: second moment, schedulefree's state["exp_avg_sq"]


def averaging_coefficient(weight: Any, weight_sum: Any) -> jax.Array:
    """:math:`c = w / \\sum w`, with 0 where the sum is 0 (a zero learning rate so far) and NaN kept as NaN.

    The two references agree on this: ``schedulefree`` catches the division by zero
    and uses 0, optax maps its NaN to 0 and keeps a NaN weight as NaN.
    """
    weight, weight_sum = jnp.asarray(weight), jnp.asarray(weight_sum)
    nan = jnp.logical_or(jnp.isnan(weight), jnp.isnan(weight_sum))
    return jnp.where(nan, jnp.full(weight.shape, jnp.nan, weight.dtype),
                     jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf))


def _lowest_float_dtype(params: Any) -> Any:
    """The narrowest float dtype among the leaves (optax.tree.dtype(params, "lowest")), for scalar state."""
    dtypes = [x.dtype for x in gt.array_leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return min(dtypes, key=lambda d: jnp.finfo(d).bits) if dtypes else jnp.float32


def schedule_free(base_optimizer: GradientTransformation, learning_rate: ScalarOrSchedule, b1: Any = 0.9,
                  weight_lr_power: Any = 2.0, state_dtype: Any = None) -> GradientTransformation:
    r"""Makes ``base_optimizer`` schedule-free (``optax.contrib.schedule_free``, with its numbers and state).

    The base optimizer's updates step :math:`z`; the returned updates move the
    parameters (:math:`y`) as in the module docstring, with averaging weights
    :math:`w_t = \gamma_{\max,t}^{p}` (:math:`\gamma_{\max}` the largest learning
    rate so far, :math:`p` = ``weight_lr_power``). Switch the base optimizer's
    momentum off (``b1=0``): the interpolation replaces it. Evaluate at
    :func:`schedule_free_eval_params`.

    Args:
      base_optimizer: the transformation whose updates step :math:`z` (it is given
        the current parameters :math:`y`, e.g. for weight decay).
      learning_rate: the base optimizer's learning rate, a number or a schedule of
        ``step_count`` (1 at the first step, as optax evaluates it), with warmup
        but without decay.
      b1: :math:`\beta_1`, the interpolation weight; must be positive.
      weight_lr_power: :math:`p` in the averaging weights.
      state_dtype: dtype of :math:`z` (default: the parameters').

    Returns:
      A GradientTransformation whose state is a :class:`ScheduleFreeState`.

    Reference: Defazio et al., The Road Less Scheduled, 2024, https://arxiv.org/abs/2405.15682.
    """

    def init(params):
        dtype = _lowest_float_dtype(params)
        z = params if state_dtype is None else gt.tree_cast(params, state_dtype)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype=dtype), weight_sum=jnp.zeros([], dtype), step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype), base_optimizer_state=base_optimizer.init(params),
            z=jax.tree.map(lambda t: jnp.array(t, copy=True), z))

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("schedule_free needs the parameters (y): call update(updates, state, params)")
        lr = learning_rate
        if callable(learning_rate):
            lr = jnp.asarray(learning_rate(state.step_count), dtype=state.max_lr.dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        ck = averaging_coefficient(weight, weight_sum)
        base_updates, base_state = base_optimizer.update(updates, state.base_optimizer_state, params, **extra_args)
        z = jax.tree.map(lambda zi, ui: jnp.asarray(zi + ui).astype(zi.dtype), state.z, base_updates)
        # x is recomputed from y and z (as optax does), so that a transform applied on top of this one moves x too.
        x = jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, params, state.z)
        x = jax.tree.map(lambda xi, zi: (1.0 - ck) * xi + ck * zi, x, z)
        new_y = jax.tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
        new_updates = jax.tree.map(lambda ny, y: ny - y, new_y, params)
        return new_updates, ScheduleFreeState(b1=state.b1, weight_sum=weight_sum,
                                              step_count=gt.safe_increment(state.step_count), max_lr=max_lr,
                                              base_optimizer_state=base_state, z=z)

    return GradientTransformation(init, update)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    r"""The parameters to evaluate at, :math:`x = (y - (1-\beta_1) z) / \beta_1` (optax's function of that name).

    Args:
      state: the :class:`ScheduleFreeState` of :func:`schedule_free` (or an object
        with its ``b1`` and ``z`` fields, such as a chain's entry).
      params: the current (training) parameters :math:`y`.

    Returns:
      :math:`x`, in the structure of ``params``.
    """
    b1, z = getattr(state, "b1", None), getattr(state, "z", None)
    if b1 is None or z is None:
        raise ValueError("schedule_free_eval_params requires a ScheduleFreeState as input (the state of "
                         f"gradtx.schedule_free), got {type(state).__name__}; pass the schedule_free entry of a chain")
    return jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, params, z)


def _torch_lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    # torch's lerp: start + w (end - start) below w = 0.5, end - (end - start)(1 - w) from there.
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * (end - start), end - (end - start) * (1 - weight))


def schedule_free_step(scheduled_lr: Any, b1: Any, weight_decay: Any, k: Any, lr_max: Any, weight_sum: Any,
                       r: Any = 0.0, weight_lr_power: Any = 2.0, *, b2: Any = None, eps: Any = 1e-8,
                       rectify: bool = False) -> GradientTransformation:
    r"""One step of the ``schedulefree`` package (1.4) for parameters :math:`y`, given the param group's counters.

    The package keeps the step ``k``, the largest learning rate and the sum of the
    averaging weights in the param group, the same for all its parameters; they are
    arguments here, and the state is the per-parameter :math:`z` and second moment.
    With :math:`t = k + 1` and the normalised gradient :math:`d` (Adam's
    :math:`g / (\sqrt{v_t / (1-\beta_2^t)} + \epsilon)` with ``b2``, the raw gradient
    without; RAdam's ``rectify`` normalises only once :math:`\rho_t > 4`):

    .. math::
        d \leftarrow d + \lambda y, \quad c = \frac{t^r \gamma_{\max}^p}{W}, \quad
        y \leftarrow \mathrm{lerp}(y, z, c) + \gamma(\beta_1(1-c) - 1)\, d, \quad z \leftarrow z - \gamma d

    Args:
      scheduled_lr: :math:`\gamma`, the learning rate after warmup or rectification.
      b1: :math:`\beta_1` (``betas[0]``, or SGD's ``momentum``).
      weight_decay: :math:`\lambda`, added to :math:`d` at :math:`y`.
      k: the steps the group has taken before this one.
      lr_max: :math:`\gamma_{\max}`, the largest scheduled learning rate so far, this step's included.
      weight_sum: :math:`W`, the sum of the averaging weights, this step's included.
      r: polynomial weighting power.
      weight_lr_power: :math:`p`.
      b2: :math:`\beta_2` of the second moment; ``None`` for SGD (no second moment).
      eps: added to the denominator.
      rectify: RAdam's switch from SGD to the normalised step at :math:`\rho_t > 4`.

    Returns:
      A GradientTransformation whose state is a :class:`ScheduleFreeStepState`
      and whose updates are :math:`y_{new} - y`.
    """
    adaptive = b2 is not None

    def init(params):
        return ScheduleFreeStepState(z=jax.tree.map(lambda t: jnp.array(t, copy=True), params),
                                     nu=gt.tree_zeros_like(params) if adaptive else None)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        step = k + 1
        ck = averaging_coefficient(step**r * lr_max**weight_lr_power, weight_sum)
        alpha = scheduled_lr * (b1 * (1 - ck) - 1)
        nu = state.nu
        if adaptive:
            nu = gt.tree_map(lambda v, g: v * b2 + g * g * (1 - b2), state.nu, updates)
            correction = 1 - b2**step
            direction = gt.tree_map(lambda g, v: g / (jnp.sqrt(v / correction) + eps), updates, nu)
            if rectify:
                rho_inf = 2 / (1 - b2) - 1
                rho = rho_inf - 2 * step * b2**step / correction
                direction = gt.tree_map(lambda d, g: jnp.where(rho > 4.0, d, g), direction, updates)
        else:
            direction = updates
        direction = gt.tree_map(lambda d, y: d + weight_decay * y, direction, params)
        new_y = gt.tree_map(lambda y, z, d: _torch_lerp(y, z, ck) + alpha * d, params, state.z, direction)
        z = gt.tree_map(lambda z, d: z - scheduled_lr * d, state.z, direction)
        return gt.tree_map(lambda ny, y: ny - y, new_y, params), ScheduleFreeStepState(z=z, nu=nu)

    return GradientTransformation(init, update)
