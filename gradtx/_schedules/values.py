"""Values of a schedule over a range of steps, for plots and logs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx._base import Schedule

__all__ = ["schedule_values"]


def schedule_values(schedule: Schedule, steps: int | Iterable[int] | Any) -> np.ndarray:
    """The values of ``schedule`` at ``steps`` as a numpy array, ready for ``plt.plot``.

    Example::

        lrs = gradtx.schedule_values(gradtx.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 1000), 1000)
        plt.plot(lrs)

    The schedule is evaluated once, vectorised over the steps (``jax.vmap``); a
    schedule that cannot be vectorised (a Python function that branches on the
    step) is evaluated step by step.

    Args:
      schedule: a function ``count -> value``.
      steps: ``n`` for the steps ``0 .. n-1``, or the steps themselves (ints, or
        floats for schedules of fractional steps).
    """
    counts = np.arange(steps) if isinstance(steps, (int, np.integer)) else np.asarray(list(np.ravel(steps)))
    if counts.dtype.kind in "iub":
        counts = counts.astype(np.int32)
    if counts.size == 0:
        return np.zeros((0,))
    try:
        values = jax.vmap(schedule)(jnp.asarray(counts))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerIntegerConversionError, TypeError):
        values = [schedule(c.item()) for c in counts]
    return np.asarray(jnp.broadcast_to(jnp.asarray(values), counts.shape))
