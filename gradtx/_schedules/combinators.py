"""Combinators: schedules in sequence (joined at boundaries) and in a chain (multiplied)."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from gradtx._base import Schedule
from gradtx._schedules._object import schedule_factory

__all__ = ["join_schedules", "chain_schedules"]


@schedule_factory
def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Schedules one after another, each restarted from 0 at its boundary (``optax.join_schedules``).

    .. math:: v_t = s_k(t - b_{k}) \quad \text{for } b_k \le t < b_{k+1}, \quad b_0 = 0

    This is also torch's ``SequentialLR(schedulers, milestones)`` in closed form:
    build each schedule with the base value as its initial value and pass the
    milestones as ``boundaries``.

    Args:
      schedules: ``n`` schedules.
      boundaries: the ``n - 1`` steps at which the next schedule takes over.
    """
    schedules, boundaries = list(schedules), list(boundaries)
    if not schedules:
        raise ValueError("join_schedules needs at least one schedule")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join_schedules needs one boundary fewer than schedules, got {len(schedules)} schedules "
            f"and {len(boundaries)} boundaries"
        )

    def schedule(count):
        count = jnp.asarray(count)
        value = schedules[0](count)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = jnp.where(count < boundary, value, later(count - boundary))
        return value

    return schedule


@schedule_factory
def chain_schedules(*schedules: Schedule) -> Schedule:
    r"""The product of schedules: :math:`v_t = \prod_k s_k(t)`.

    This is torch's ``ChainedScheduler`` in closed form for its multiplicative
    schedulers: give the first schedule the base value and the others the value
    1 (for instance ``chain_schedules(geometric_schedule(0.1, 0.9),
    constant_factor_schedule(1.0, factor=0.5, total_iters=5))``).

    Args:
      *schedules: one or more schedules.
    """
    if not schedules:
        raise ValueError("chain_schedules needs at least one schedule")

    def schedule(count):
        count = jnp.asarray(count)
        value = schedules[0](count)
        for other in schedules[1:]:
            value = value * other(count)
        return value

    return schedule
