"""Argument checks that run on Python numbers and stand aside for traced values.

Factories are called with plain numbers by users and with traced arrays by
:func:`gradtx.inject_hyperparams` and the facade; only the former can be checked
in Python, so every check here skips values it cannot read without tracing.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def concrete_float(value: Any) -> float | None:
    """``value`` as a Python float when it is known now; ``None`` for tracers and schedules."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything unreadable is left to the computation
        return None
    if array.shape != () or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array.real)


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, where: str = "") -> None:
    """Raises ``ValueError`` when a known ``value`` lies outside ``[low, high]`` (or the open ends).

    Factories call it on their arguments. A value that cannot be read in Python
    (a tracer under ``jax.jit`` or :func:`gradtx.inject_hyperparams`, a schedule,
    an array of several elements) is not checked, so a factory may call it
    whatever it is given.

    Args:
      name: the argument's name, for the message.
      value: the value to check.
      low, high: the bounds (``None``: unbounded on that side).
      low_open, high_open: exclude the bound itself.
      where: a prefix naming the caller (``"LBFGS"``), for the message.

    Raises:
      ValueError: ``"<where>: <name> must be in [low, high], got <value>"``, NaN included.
    """
    x = concrete_float(value)
    if x is None:
        return
    bad = math.isnan(x)
    if low is not None:
        bad |= x <= low if low_open else x < low
    if high is not None:
        bad |= x >= high if high_open else x > high
    if bad:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be in {left}{lo}, {hi}{right}, got {value!r}")
