"""optax's schedules, under optax's names, arguments and numbers.

Each factory returns a pure function ``count -> value`` that works on Python
ints and on int32 counters, under ``jit``, ``vmap`` and ``grad`` (with respect
to the hyperparameters, which may themselves be traced arrays). Values are
float32 unless an input is a float64 array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp

from gradtx._checks import concrete_float
from gradtx._base import Schedule
from gradtx._schedules._object import schedule_factory
from gradtx._schedules._common import as_float, interpolation, result_dtype
from gradtx._schedules.combinators import join_schedules

__all__ = [
    "constant_schedule",
    "polynomial_schedule",
    "linear_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "sgdr_schedule",
    "linear_onecycle_schedule",
    "cosine_onecycle_schedule",
]


def _known(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether ``value`` is a number known now (not a tracer) that passes ``test``."""
    x = concrete_float(value)
    return x is not None and test(x)


def _sorted_scales(boundaries_and_scales: dict[int, Any] | None, where: str) -> tuple[tuple, tuple]:
    """``(boundaries, scales)`` sorted by boundary; a ``ValueError`` for a known negative scale."""
    items = sorted((boundaries_and_scales or {}).items())
    for boundary, scale in items:
        known = concrete_float(scale)
        if known is not None and known < 0:
            raise ValueError(f"{where} expects non-negative scale factors, got {scale!r} at step {boundary}")
    return tuple(b for b, _ in items), tuple(s for _, s in items)


@schedule_factory
def constant_schedule(value: Any) -> Schedule:
    """The schedule that always returns ``value`` (``optax.constant_schedule``).

    .. math:: v_t = v

    Args:
      value: the value held at every step.
    """

    def schedule(count):
        return as_float(value, result_dtype(value, count))

    return schedule


@schedule_factory
def polynomial_schedule(init_value: Any, end_value: Any, power: Any, transition_steps: int,
                        transition_begin: int = 0) -> Schedule:
    r"""A polynomial transition from ``init_value`` to ``end_value`` (``optax.polynomial_schedule``).

    .. math::
        v_t = (I - E) \left(1 - \frac{\min(\max(t - B, 0), T)}{T}\right)^{P} + E

    With ``end_value=0`` this is torch's ``PolynomialLR`` (``total_iters=T``) exactly.

    Args:
      init_value: :math:`I`, the value before and at the start of the transition.
      end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
      power: :math:`P`, the power of the polynomial.
      transition_steps: :math:`T`; when it is not positive the schedule is constant at ``init_value``.
      transition_begin: :math:`B`, the steps held at ``init_value`` first; a negative value counts as 0.
    """
    if _known(transition_steps, lambda x: x <= 0):
        return constant_schedule(init_value)
    if _known(transition_begin, lambda x: x < 0):
        transition_begin = 0

    def schedule(count):
        dtype = result_dtype(init_value, end_value, power, count)
        elapsed = jnp.clip(jnp.asarray(count) - transition_begin, 0, transition_steps)
        frac = as_float(transition_steps - elapsed, dtype) / transition_steps  # exactly 0 at the end, even under jit
        return ((init_value - end_value) * frac**power + end_value).astype(dtype)

    return schedule


@schedule_factory
def linear_schedule(init_value: Any, end_value: Any, transition_steps: int, transition_begin: int = 0) -> Schedule:
    r"""A linear transition from ``init_value`` to ``end_value`` (``optax.linear_schedule``).

    .. math:: v_t = I + \frac{\min(\max(t - B, 0), T)}{T} (E - I)

    :func:`polynomial_schedule` with ``power=1``.

    Args:
      init_value: :math:`I`, the value before and at the start of the transition.
      end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
      transition_steps: :math:`T`; when it is not positive the schedule is constant at ``init_value``.
      transition_begin: :math:`B`, the steps held at ``init_value`` first.
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


@schedule_factory
def exponential_decay(init_value: Any, transition_steps: int, decay_rate: Any, transition_begin: int = 0,
                      staircase: bool = False, end_value: Any = None) -> Schedule:
    r"""Continuous or staircase exponential decay (``optax.exponential_decay``).

    .. math:: v_t = I \, r^{p}, \quad p = \frac{t - B}{T} \ (\lfloor\cdot\rfloor \text{ if staircase}),
              \quad v_t = I \text{ for } t \le B

    then clipped below (``r < 1``) or above (``r >= 1``) at ``end_value``. With
    ``staircase=True``, ``T=step_size`` and ``r=gamma`` this is torch's ``StepLR``;
    with ``T=1`` it is ``ExponentialLR``.

    Args:
      init_value: :math:`I`.
      transition_steps: :math:`T`; when it is not positive the schedule is constant at ``init_value``.
      decay_rate: :math:`r`; a known ``0`` gives the constant schedule ``init_value`` (as optax does).
      transition_begin: :math:`B`, the steps held at ``init_value`` first.
      staircase: decay in discrete jumps every ``transition_steps``.
      end_value: the bound at which the decay stops, or ``None``.
    """
    if _known(transition_steps, lambda x: x <= 0) or concrete_float(decay_rate) == 0:
        return constant_schedule(init_value)
    if _known(transition_begin, lambda x: x < 0):
        transition_begin = 0

    def schedule(count):
        dtype = result_dtype(init_value, decay_rate, end_value, count)
        elapsed = jnp.asarray(count) - transition_begin
        p = as_float(elapsed, dtype) / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(elapsed <= 0, init_value, init_value * jnp.power(decay_rate, p))
        if end_value is not None:
            value = jnp.where(decay_rate < 1.0, jnp.maximum(value, end_value), jnp.minimum(value, end_value))
        return value.astype(dtype)

    return schedule


@schedule_factory
def cosine_decay_schedule(init_value: Any, decay_steps: int, alpha: Any = 0.0, exponent: Any = 1.0) -> Schedule:
    r"""Cosine decay to ``alpha * init_value``, then constant (``optax.cosine_decay_schedule``).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983).

    .. math::
        v_t = I \left((1 - \alpha) \left[\tfrac12 \left(1 + \cos\tfrac{\pi \min(t, T)}{T}\right)\right]^{p}
              + \alpha\right)

    Unlike torch's ``CosineAnnealingLR`` (see :func:`cosine_annealing_schedule`) the
    value stays at its minimum after ``T`` steps.

    Args:
      init_value: :math:`I`.
      decay_steps: :math:`T > 0`.
      alpha: the final value as a fraction of ``init_value``.
      exponent: :math:`p`, the power of the cosine factor.
    """
    if _known(decay_steps, lambda x: x <= 0):
        raise ValueError(f"cosine_decay_schedule requires positive decay_steps, got decay_steps={decay_steps}")

    def schedule(count):
        dtype = result_dtype(init_value, alpha, exponent, count)
        steps = as_float(float(decay_steps) if type(decay_steps) is int else decay_steps, dtype)  # 10**10 > int32
        t = jnp.minimum(as_float(count, dtype), steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / steps))
        return (init_value * ((1 - alpha) * cosine**exponent + alpha)).astype(dtype)

    return schedule


@schedule_factory
def piecewise_constant_schedule(init_value: Any, boundaries_and_scales: dict[int, Any] | None = None) -> Schedule:
    r"""A value multiplied by ``scale`` at each boundary step (``optax.piecewise_constant_schedule``).

    .. math:: v_t = I \prod_{i:\, t \ge b_i} s_i

    With ``{m: gamma}`` for each milestone this is torch's ``MultiStepLR``.

    Args:
      init_value: :math:`I`.
      boundaries_and_scales: ``{step: scale}``; scales must be non-negative.
    """
    boundaries, scales = _sorted_scales(boundaries_and_scales, "piecewise_constant_schedule")

    def schedule(count):
        dtype = result_dtype(init_value, count, *scales)
        count = jnp.asarray(count)
        value = as_float(init_value, dtype)
        for boundary, scale in zip(boundaries, scales):
            value = jnp.where(count >= boundary, value * scale, value)
        return value.astype(dtype)

    return schedule


@schedule_factory
def piecewise_interpolate_schedule(interpolate_type: str, init_value: Any,
                                   boundaries_and_scales: dict[int, Any] | None = None) -> Schedule:
    r"""Linear or cosine interpolation between accumulated scaled values (``optax.piecewise_interpolate_schedule``).

    With :math:`v_0 = I`, :math:`v_i = v_{i-1} s_i` at boundary :math:`b_i` (:math:`b_0 = 0`):

    .. math:: v_t = \mathrm{interp}\!\left(v_{i}, v_{i+1}, \frac{t - b_i}{\max(b_{i+1} - b_i, 1)}\right)
              \text{ for } b_i \le t < b_{i+1}, \qquad v_t = v_n \text{ for } t \ge b_n

    As in optax, a negative ``t`` gives ``0``.

    Args:
      interpolate_type: ``'linear'`` or ``'cosine'``.
      init_value: :math:`I`.
      boundaries_and_scales: ``{step: scale}``; scales must be non-negative.
    """
    if interpolate_type not in ("linear", "cosine"):
        raise ValueError(f"`interpolate_type` must be either 'cosine' or 'linear', got {interpolate_type!r}")
    interp = interpolation(interpolate_type, "piecewise_interpolate_schedule")
    boundaries, scales = _sorted_scales(boundaries_and_scales, "piecewise_interpolate_schedule")
    edges = (0, *boundaries)

    def schedule(count):
        dtype = result_dtype(init_value, count, *scales)
        count = jnp.asarray(count)
        values = [as_float(init_value, dtype)]
        for scale in scales:
            values.append(values[-1] * scale)
        out = jnp.where(count >= edges[-1], values[-1], jnp.zeros((), dtype))
        for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
            pct = as_float(count - low, dtype) / max(high - low, 1)
            out = jnp.where((low <= count) & (count < high), interp(values[i], values[i + 1], pct), out)
        return out.astype(dtype)

    return schedule


@schedule_factory
def warmup_constant_schedule(init_value: Any, peak_value: Any, warmup_steps: int) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then constant (``optax.warmup_constant_schedule``).

    Args:
      init_value: the value at step 0.
      peak_value: the value from ``warmup_steps`` on.
      warmup_steps: the length of the warmup.
    """
    return linear_schedule(init_value, peak_value, warmup_steps)


def _ratio_or_zero(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, or 0 where the denominator is 0; traced values allowed."""
    known = concrete_float(denominator)
    if known is not None:
        return 0.0 if known == 0.0 else numerator / denominator
    safe = jnp.where(denominator == 0, 1, denominator)
    return jnp.where(denominator == 0, 0, numerator / safe)


@schedule_factory
def warmup_cosine_decay_schedule(init_value: Any, peak_value: Any, warmup_steps: int, decay_steps: int,
                                 end_value: Any = 0.0, exponent: Any = 1.0) -> Schedule:
    r"""A linear warmup, then cosine decay to ``end_value`` (``optax.warmup_cosine_decay_schedule``).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983). :func:`linear_schedule`
    for ``warmup_steps`` steps joined to :func:`cosine_decay_schedule` over the
    remaining ``decay_steps - warmup_steps`` with ``alpha = end_value / peak_value``.

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warmup.
      warmup_steps: the length of the warmup.
      decay_steps: the total length, warmup included.
      end_value: the value from ``decay_steps`` on.
      exponent: the power of the cosine factor.
    """
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         cosine_decay_schedule(peak_value, decay_steps - warmup_steps, _ratio_or_zero(end_value, peak_value),
                               exponent)],
        [warmup_steps],
    )


@schedule_factory
def warmup_exponential_decay_schedule(init_value: Any, peak_value: Any, warmup_steps: int, transition_steps: int,
                                      decay_rate: Any, transition_begin: int = 0, staircase: bool = False,
                                      end_value: Any = None) -> Schedule:
    """A linear warmup, then :func:`exponential_decay` from ``peak_value`` (``optax.warmup_exponential_decay_schedule``).

    Args:
      init_value: the value at step 0.
      peak_value: the value at the end of the warmup.
      warmup_steps: the length of the warmup.
      transition_steps: see :func:`exponential_decay`.
      decay_rate: see :func:`exponential_decay`.
      transition_begin: steps after the warmup held at ``peak_value``.
      staircase: decay in discrete jumps.
      end_value: the bound at which the decay stops, or ``None``.
    """
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value)],
        [warmup_steps],
    )


@schedule_factory
def sgdr_schedule(cosine_kwargs: Iterable[dict[str, Any]]) -> Schedule:
    """Cycles of :func:`warmup_cosine_decay_schedule`, one after another (``optax.sgdr_schedule``).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983).

    Args:
      cosine_kwargs: the keyword arguments of each cycle's :func:`warmup_cosine_decay_schedule`;
        each cycle lasts its ``decay_steps``.
    """
    schedules, boundaries, step = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        step += kwargs["decay_steps"]
        boundaries.append(step)
    return join_schedules(schedules, boundaries[:-1])


def _onecycle(kind: str, transition_steps: int, init_value: Any, boundaries_and_scales: dict[int, Any]) -> Schedule:
    if _known(transition_steps, lambda x: x <= 0):
        raise ValueError(f"A {kind} onecycle schedule needs positive transition_steps, got {transition_steps}")
    return piecewise_interpolate_schedule(kind, init_value, boundaries_and_scales)


@schedule_factory
def linear_onecycle_schedule(transition_steps: int, peak_value: Any, pct_start: float = 0.3, pct_final: float = 0.85,
                             div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    """Three linear phases: up to ``peak_value``, back down, then to the final value (``optax.linear_onecycle_schedule``).

    Smith & Topin, Super-Convergence (https://arxiv.org/abs/1708.07120). A
    :func:`piecewise_interpolate_schedule` through ``peak/div_factor`` (step 0),
    ``peak`` (``pct_start * T``), ``peak/div_factor`` (``pct_final * T``) and
    ``peak/div_factor/final_div_factor`` (``T``).

    Args:
      transition_steps: :math:`T > 0`.
      peak_value: the highest value.
      pct_start: the fraction of :math:`T` spent rising.
      pct_final: the fraction of :math:`T` at which the fall back to the initial value ends.
      div_factor: the initial value is ``peak_value / div_factor``.
      final_div_factor: the final value is the initial value over ``final_div_factor``.
    """
    return _onecycle("linear", transition_steps, peak_value / div_factor, {
        int(pct_start * transition_steps): div_factor,
        int(pct_final * transition_steps): 1.0 / div_factor,
        transition_steps: 1.0 / final_div_factor,
    })


@schedule_factory
def cosine_onecycle_schedule(transition_steps: int, peak_value: Any, pct_start: float = 0.3,
                             div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    """A cosine rise to ``peak_value`` and a cosine fall to the final value (``optax.cosine_onecycle_schedule``).

    Smith & Topin, Super-Convergence (https://arxiv.org/abs/1708.07120). The phase
    boundaries are ``int(pct_start * T)`` and ``T`` as in optax; torch's
    ``OneCycleLR`` places them one step earlier (see :func:`onecycle_schedule`).

    Args:
      transition_steps: :math:`T > 0`.
      peak_value: the highest value.
      pct_start: the fraction of :math:`T` spent rising.
      div_factor: the initial value is ``peak_value / div_factor``.
      final_div_factor: the final value is the initial value over ``final_div_factor``.
    """
    return _onecycle("cosine", transition_steps, peak_value / div_factor, {
        int(pct_start * transition_steps): div_factor,
        int(transition_steps): 1.0 / (div_factor * final_div_factor),
    })
