"""torch.optim.lr_scheduler's rules in closed form, as pure schedules ``count -> value``.

``count`` plays the role of torch's ``last_epoch`` (the number of
``scheduler.step()`` calls so far) and ``init_value`` that of a group's base
learning rate, so ``schedule(t)`` is the learning rate torch sets after ``t``
steps. Each factory names the torch class it mirrors; classes that optax's
schedules already compute are listed here too:

============================  =====================================================================
torch class                   schedule
============================  =====================================================================
``StepLR``                    :func:`step_decay_schedule`
``MultiStepLR``               :func:`multistep_decay_schedule`
``ConstantLR``                :func:`constant_factor_schedule`
``LinearLR``                  :func:`linear_factor_schedule`
``ExponentialLR``             :func:`geometric_schedule`
``PolynomialLR``              :func:`polynomial_decay_schedule`
``CosineAnnealingLR``         :func:`cosine_annealing_schedule`
``CosineAnnealingWarmRestarts`` :func:`cosine_restarts_schedule`
``CyclicLR``                  :func:`cyclic_schedule`, :func:`cyclic_momentum_schedule`
``OneCycleLR``                :func:`onecycle_schedule`, :func:`onecycle_momentum_schedule`
``LambdaLR``                  :func:`lambda_schedule`
``MultiplicativeLR``          :func:`multiplicative_schedule`
``SequentialLR``              :func:`gradtx.join_schedules`
``ChainedScheduler``          :func:`gradtx.chain_schedules`
============================  =====================================================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx._checks import check_range
from gradtx._base import Schedule
from gradtx._schedules._object import schedule_factory
from gradtx._schedules._common import as_float, interpolation, result_dtype
from gradtx._schedules.optax_style import polynomial_schedule

__all__ = [
    "step_decay_schedule",
    "multistep_decay_schedule",
    "constant_factor_schedule",
    "linear_factor_schedule",
    "geometric_schedule",
    "polynomial_decay_schedule",
    "cosine_annealing_schedule",
    "cosine_restarts_schedule",
    "cyclic_schedule",
    "cyclic_momentum_schedule",
    "onecycle_schedule",
    "onecycle_momentum_schedule",
    "lambda_schedule",
    "multiplicative_schedule",
]


def _check_positive_int(name: str, value: Any, where: str, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{where}: expected an integer {name} >= {low}, got {value!r}")


@schedule_factory
def step_decay_schedule(init_value: Any, step_size: int, gamma: Any = 0.1) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    .. math:: v_t = v_0 \, \gamma^{\lfloor t / s \rfloor}

    Args:
      init_value: :math:`v_0`, the base value.
      step_size: :math:`s`, the period of the decay.
      gamma: :math:`\gamma`, the factor applied at each period.
    """
    _check_positive_int("step_size", step_size, "step_decay_schedule")

    def schedule(count):
        dtype = result_dtype(init_value, gamma, count)
        return (init_value * jnp.power(gamma, as_float(jnp.asarray(count) // step_size, dtype))).astype(dtype)

    return schedule


@schedule_factory
def multistep_decay_schedule(init_value: Any, milestones: Iterable[int], gamma: Any = 0.1) -> Schedule:
    r"""Decay by ``gamma`` at each milestone (torch's ``MultiStepLR``).

    .. math:: v_t = v_0 \, \gamma^{\#\{i:\, m_i \le t\}}

    A milestone listed twice decays twice, as in torch.

    Args:
      init_value: :math:`v_0`, the base value.
      milestones: the steps :math:`m_i` at which to decay.
      gamma: :math:`\gamma`.
    """
    milestones = sorted(Counter(milestones).elements())

    def schedule(count):
        dtype = result_dtype(init_value, gamma, count)
        count = jnp.asarray(count)
        passed = sum((count >= m).astype(jnp.int32) for m in milestones) if milestones else jnp.zeros((), jnp.int32)
        return (init_value * jnp.power(gamma, as_float(passed, dtype))).astype(dtype)

    return schedule


@schedule_factory
def constant_factor_schedule(init_value: Any, factor: Any = 1.0 / 3, total_iters: int = 5) -> Schedule:
    r"""``factor * init_value`` for the first ``total_iters`` steps, then ``init_value`` (torch's ``ConstantLR``).

    .. math:: v_t = v_0 \left(f + [t \ge T] (1 - f)\right)

    Args:
      init_value: :math:`v_0`, the base value.
      factor: :math:`f \in [0, 1]`.
      total_iters: :math:`T`.
    """
    check_range("factor", factor, 0.0, 1.0, where="constant_factor_schedule")

    def schedule(count):
        dtype = result_dtype(init_value, factor, count)
        done = as_float(jnp.asarray(count) >= total_iters, dtype)
        return (init_value * (factor + done * (1 - factor))).astype(dtype)

    return schedule


@schedule_factory
def linear_factor_schedule(init_value: Any, start_factor: Any = 1.0 / 3, end_factor: Any = 1.0,
                           total_iters: int = 5) -> Schedule:
    r"""A linear ramp of the factor from ``start_factor`` to ``end_factor`` (torch's ``LinearLR``).

    .. math:: v_t = v_0 \left(f_s + (f_e - f_s) \frac{\min(T, t)}{T}\right)

    Args:
      init_value: :math:`v_0`, the base value.
      start_factor: :math:`f_s \in (0, 1]`.
      end_factor: :math:`f_e \in [0, 1]`.
      total_iters: :math:`T`, the steps of the ramp.
    """
    check_range("start_factor", start_factor, 0.0, 1.0, low_open=True, where="linear_factor_schedule")
    check_range("end_factor", end_factor, 0.0, 1.0, where="linear_factor_schedule")

    def schedule(count):
        dtype = result_dtype(init_value, start_factor, end_factor, count)
        elapsed = as_float(jnp.minimum(jnp.asarray(count), total_iters), dtype)
        return (init_value * (start_factor + (end_factor - start_factor) * elapsed / total_iters)).astype(dtype)

    return schedule


@schedule_factory
def geometric_schedule(init_value: Any, gamma: Any) -> Schedule:
    r"""Multiply by ``gamma`` every step (torch's ``ExponentialLR``).

    .. math:: v_t = v_0 \, \gamma^{t}

    Args:
      init_value: :math:`v_0`, the base value.
      gamma: :math:`\gamma`.
    """

    def schedule(count):
        dtype = result_dtype(init_value, gamma, count)
        return (init_value * jnp.power(gamma, as_float(count, dtype))).astype(dtype)

    return schedule


@schedule_factory
def polynomial_decay_schedule(init_value: Any, total_iters: int = 5, power: Any = 1.0) -> Schedule:
    r"""Polynomial decay to zero over ``total_iters`` steps (torch's ``PolynomialLR``).

    .. math:: v_t = v_0 \left(1 - \frac{\min(T, t)}{T}\right)^{p}

    The same numbers as ``polynomial_schedule(init_value, 0.0, power, total_iters)``.

    Args:
      init_value: :math:`v_0`, the base value.
      total_iters: :math:`T`.
      power: :math:`p`.
    """
    return polynomial_schedule(init_value, 0.0, power, total_iters)


@schedule_factory
def cosine_annealing_schedule(init_value: Any, T_max: int, eta_min: Any = 0.0) -> Schedule:  # noqa: N803
    r"""Cosine annealing from ``init_value`` to ``eta_min`` (torch's ``CosineAnnealingLR``, closed form).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983).

    .. math:: v_t = \eta_{min} + (v_0 - \eta_{min}) \frac{1 + \cos(\pi t / T_{max})}{2}

    As in torch the cosine goes on past ``T_max`` (the value rises again, with
    period ``2 T_max``); :func:`cosine_decay_schedule` stays at its minimum instead.

    Args:
      init_value: :math:`v_0`, the base value.
      T_max: :math:`T_{max}`, the steps of half a period.
      eta_min: :math:`\eta_{min}`, the lowest value.
    """

    def schedule(count):
        dtype = result_dtype(init_value, eta_min, count)
        cosine = 1 + jnp.cos(jnp.pi * as_float(count, dtype) / T_max)
        return (eta_min + (init_value - eta_min) * cosine / 2).astype(dtype)

    return schedule


@schedule_factory
def cosine_restarts_schedule(init_value: Any, T_0: int, T_mult: int = 1, eta_min: Any = 0.0) -> Schedule:  # noqa: N803
    r"""Cosine annealing restarted every period, periods growing by ``T_mult`` (torch's ``CosineAnnealingWarmRestarts``).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983). With
    :math:`T_i = T_0 T_{mult}^i` the length of the :math:`i`-th period and
    :math:`T_{cur}` the (possibly fractional) steps since its start,

    .. math:: v_t = \eta_{min} + (v_0 - \eta_{min}) \frac{1 + \cos(\pi T_{cur} / T_i)}{2}

    ``count`` may be fractional (torch's ``step(epoch + i / iters)``). The period
    is found in integer arithmetic, so restarts fall exactly on their steps.

    Args:
      init_value: :math:`v_0`, the base value.
      T_0: the length of the first period (a positive int).
      T_mult: the growth of the period (an int >= 1).
      eta_min: :math:`\eta_{min}`, the lowest value.
    """
    _check_positive_int("T_0", T_0, "cosine_restarts_schedule")
    _check_positive_int("T_mult", T_mult, "cosine_restarts_schedule")

    def period_start(n):  # steps before period n: T_0 (T_mult^n - 1) / (T_mult - 1), exactly
        return T_0 * (jnp.power(jnp.int32(T_mult), n) - 1) // (T_mult - 1)

    def schedule(count):
        dtype = result_dtype(init_value, eta_min, count)
        t = as_float(count, dtype)
        if T_mult == 1:
            t_cur, t_i = jnp.mod(t, T_0), jnp.asarray(T_0, dtype)
        else:
            guess = jnp.floor(jnp.log(t / T_0 * (T_mult - 1) + 1) / jnp.log(float(T_mult)))
            n = jnp.maximum(guess, 0).astype(jnp.int32)
            n = jnp.where(t < period_start(n), n - 1, n)  # the logarithm may round across a restart
            n = jnp.where(t >= period_start(n + 1), n + 1, n)
            t_cur = t - as_float(period_start(n), dtype)
            t_i = as_float(T_0 * jnp.power(jnp.int32(T_mult), n), dtype)
        return (eta_min + (init_value - eta_min) * (1 + jnp.cos(jnp.pi * t_cur / t_i)) / 2).astype(dtype)

    return schedule


_CYCLIC_MODES = {
    # mode: (scale function of x, what x is)
    "triangular": (lambda x, gamma: 1.0, "cycle"),
    "triangular2": (lambda x, gamma: 1 / (2.0 ** (x - 1)), "cycle"),
    "exp_range": (lambda x, gamma: gamma**x, "iterations"),
}


@schedule_factory
def cyclic_schedule(base_value: Any, max_value: Any, step_size_up: int = 2000, step_size_down: int | None = None,
                    mode: str = "triangular", gamma: Any = 1.0, scale_fn: Callable[[Any], Any] | None = None,
                    scale_mode: str = "cycle") -> Schedule:
    r"""A triangular wave between ``base_value`` and ``max_value`` (torch's ``CyclicLR``).

    Smith, Cyclical Learning Rates (https://arxiv.org/abs/1506.01186). With
    :math:`L` the cycle length, :math:`r` the rising fraction of it,
    :math:`c = \lfloor 1 + t/L \rfloor` and :math:`x = 1 + t/L - c`,

    .. math::
        v_t = b + (m - b)\, h(x)\, s(c \text{ or } t), \qquad
        h(x) = x / r \text{ if } x \le r \text{ else } (x - 1)/(r - 1)

    ``mode``: ``'triangular'`` (:math:`s = 1`), ``'triangular2'`` (:math:`s(c) = 2^{1-c}`),
    ``'exp_range'`` (:math:`s(t) = \gamma^t`), or a custom ``scale_fn`` (jnp-traceable)
    evaluated on the cycle or the step as ``scale_mode`` says. Momentum cycling is
    :func:`cyclic_momentum_schedule`.

    Args:
      base_value: :math:`b`, the bottom of the wave.
      max_value: :math:`m`, the top of the first cycle.
      step_size_up: steps of the rise.
      step_size_down: steps of the fall (default ``step_size_up``).
      mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``; ignored with ``scale_fn``.
      gamma: the base of ``'exp_range'``.
      scale_fn: a custom amplitude scale, or ``None``.
      scale_mode: ``'cycle'`` or ``'iterations'``, what ``scale_fn`` receives.
    """
    if scale_fn is None:
        if mode not in _CYCLIC_MODES:
            raise ValueError(f"cyclic_schedule: mode {mode!r} is invalid and scale_fn is None")
        mode_fn, scale_mode = _CYCLIC_MODES[mode]
        scale_fn = lambda x: mode_fn(x, gamma)  # noqa: E731
    elif scale_mode not in ("cycle", "iterations"):
        raise ValueError(f"cyclic_schedule: scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total = up + down
    ratio = up / total

    def schedule(count):
        dtype = result_dtype(base_value, max_value, gamma, count)
        t = as_float(count, dtype)
        cycle = jnp.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        height = jnp.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        scale = scale_fn(cycle if scale_mode == "cycle" else t)
        return (base_value + (max_value - base_value) * height * scale).astype(dtype)

    return schedule


@schedule_factory
def cyclic_momentum_schedule(base_momentum: Any = 0.8, max_momentum: Any = 0.9, step_size_up: int = 2000,
                             step_size_down: int | None = None, mode: str = "triangular", gamma: Any = 1.0,
                             scale_fn: Callable[[Any], Any] | None = None, scale_mode: str = "cycle") -> Schedule:
    r"""The momentum that torch's ``CyclicLR(cycle_momentum=True)`` sets: the mirror image of the lr's wave.

    .. math:: \mu_t = m - (m - b)\, h(x)\, s(c \text{ or } t)

    It is :func:`cyclic_schedule` from ``max_momentum`` towards ``base_momentum``
    (torch writes it into ``momentum``, or ``betas[0]`` for Adam-like optimizers).

    Args:
      base_momentum: :math:`b`, the momentum at the lr's peak.
      max_momentum: :math:`m`, the momentum at the lr's bottom.
      step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode: as in :func:`cyclic_schedule`.
    """
    return cyclic_schedule(max_momentum, base_momentum, step_size_up, step_size_down, mode, gamma, scale_fn,
                           scale_mode)


def _phased_schedule(total_steps: int, pct_start: float, three_phase: bool, anneal_strategy: str,
                     points: tuple[Any, ...], where: str) -> Schedule:
    """torch's OneCycleLR phases: anneal between ``points`` (the values at each phase end) piece by piece."""
    _check_positive_int("total_steps", total_steps, where)
    check_range("pct_start", pct_start, 0.0, 1.0, where=where)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"{where}: anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy!r}")
    anneal = interpolation(anneal_strategy, where)
    if three_phase:
        ends = (float(pct_start * total_steps) - 1, float(2 * pct_start * total_steps) - 2, total_steps - 1)
    else:
        ends = (float(pct_start * total_steps) - 1, total_steps - 1)
    starts = (0.0, *ends[:-1])

    def schedule(count):
        dtype = result_dtype(*points, count)
        t = as_float(jnp.minimum(jnp.asarray(count), total_steps), dtype)
        value = None
        for i in reversed(range(len(ends))):
            phase = anneal(points[i], points[i + 1], (t - starts[i]) / (ends[i] - starts[i]))
            value = phase if value is None else jnp.where(t <= ends[i], phase, value)
        return value.astype(dtype)

    return schedule


@schedule_factory
def onecycle_schedule(max_value: Any, total_steps: int, pct_start: float = 0.3, anneal_strategy: str = "cos",
                      div_factor: Any = 25.0, final_div_factor: Any = 1e4, three_phase: bool = False) -> Schedule:
    r"""The 1cycle policy as torch's ``OneCycleLR`` computes it.

    Smith & Topin, Super-Convergence (https://arxiv.org/abs/1708.07120). From
    :math:`v_{init} = m / d` up to :math:`m` by step ``pct_start * total_steps - 1``,
    then down to :math:`v_{min} = v_{init} / d_{final}` at step ``total_steps - 1``
    (with ``three_phase``: down to :math:`v_{init}` by ``2 pct_start total_steps - 2``
    first). Each phase anneals with half a cosine or a line:

    .. math:: \mathrm{cos}(a, b, p) = b + \frac{a - b}{2}(\cos(\pi p) + 1), \qquad
              \mathrm{linear}(a, b, p) = (b - a) p + a

    Counts past ``total_steps`` (where torch raises) give the value at ``total_steps``.

    Args:
      max_value: :math:`m`, the peak.
      total_steps: steps in the cycle (torch's ``total_steps`` or ``epochs * steps_per_epoch``).
      pct_start: the fraction of the cycle spent rising.
      anneal_strategy: ``'cos'`` or ``'linear'``.
      div_factor: :math:`d`.
      final_div_factor: :math:`d_{final}`.
      three_phase: add the symmetric fall back to :math:`v_{init}` before the final decay.
    """
    initial = max_value / div_factor
    final = initial / final_div_factor
    points = (initial, max_value, initial, final) if three_phase else (initial, max_value, final)
    return _phased_schedule(total_steps, pct_start, three_phase, anneal_strategy, points, "onecycle_schedule")


@schedule_factory
def onecycle_momentum_schedule(total_steps: int, base_momentum: Any = 0.85, max_momentum: Any = 0.95,
                               pct_start: float = 0.3, anneal_strategy: str = "cos",
                               three_phase: bool = False) -> Schedule:
    r"""The momentum that torch's ``OneCycleLR(cycle_momentum=True)`` sets, opposite to the lr.

    From ``max_momentum`` down to ``base_momentum`` while the lr rises, back up
    while it falls (and held at ``max_momentum`` in the third phase), on the phases
    of :func:`onecycle_schedule`.

    Args:
      total_steps: steps in the cycle.
      base_momentum: the momentum at the lr's peak.
      max_momentum: the momentum at the start and end.
      pct_start: the fraction of the cycle spent rising.
      anneal_strategy: ``'cos'`` or ``'linear'``.
      three_phase: as in :func:`onecycle_schedule`.
    """
    points = ((max_momentum, base_momentum, max_momentum, max_momentum) if three_phase
              else (max_momentum, base_momentum, max_momentum))
    return _phased_schedule(total_steps, pct_start, three_phase, anneal_strategy, points,
                            "onecycle_momentum_schedule")


@schedule_factory
def lambda_schedule(init_value: Any, lr_lambda: Callable[[Any], Any]) -> Schedule:
    r"""The base value times a function of the step (torch's ``LambdaLR``).

    .. math:: v_t = v_0 \, \lambda(t)

    Args:
      init_value: :math:`v_0`, the base value.
      lr_lambda: :math:`\lambda`, a jnp-traceable function of the (int) step.
    """

    def schedule(count):
        dtype = result_dtype(init_value, count)
        return as_float(init_value * lr_lambda(jnp.asarray(count)), dtype)

    return schedule


@schedule_factory
def multiplicative_schedule(init_value: Any, lr_lambda: Callable[[Any], Any]) -> Schedule:
    r"""The base value times the running product of a function of the step (torch's ``MultiplicativeLR``).

    .. math:: v_t = v_0 \prod_{k=1}^{t} \lambda(k)

    The product is a loop of ``t`` iterations (``lax.fori_loop``), so it costs
    :math:`O(t)`; it works under ``jit``, ``vmap`` and ``grad`` with respect to ``init_value``.

    Args:
      init_value: :math:`v_0`, the base value.
      lr_lambda: :math:`\lambda`, a jnp-traceable function of the (int32) step.
    """

    def schedule(count):
        dtype = result_dtype(init_value, count)
        count = jnp.asarray(count).astype(jnp.int32)
        product = jax.lax.fori_loop(1, count + 1, lambda k, p: p * as_float(lr_lambda(k), dtype),
                                    jnp.ones((), dtype))
        return as_float(init_value * product, dtype)

    return schedule
