r"""Hyperparameters that may be numbers, arrays or schedules ``count -> value``.

The convention, in every transform that keeps a step count (and so in the
facade's optimizers that keep torch's ``step``):

- ``count`` is the number of steps this transform has taken before the current
  one (0 at the first step), as for optax's learning-rate schedules.
- A scheduled value is used at its current value everywhere in the step. In
  particular Adam-style bias corrections divide by :math:`1-\beta(t)^t` with the
  current :math:`\beta(t)`, not by :math:`1-\prod_{s\le t}\beta(s)`: the numbers
  ``inject_hyperparams`` gives (in optax and in gradtx) when the value is set by
  hand before each step. For a schedule that settles (a momentum warm-up) the two
  agree once it has settled.
- A transform without a count (``optax``-shaped states such as SM3's, or the
  stateless clipping transforms) takes numbers and arrays only.
"""

from __future__ import annotations

from typing import Any


def is_schedule(value: Any) -> bool:
    """Whether ``value`` is a schedule (a callable of the step count)."""
    return callable(value)


def value_at(value: Any, count: Any) -> Any:
    """A hyperparameter's value at step ``count``: ``value(count)`` for a schedule, else ``value`` itself.

    The convention of every transform whose hyperparameters may be numbers,
    arrays or schedules ``count -> value`` (see the module docstring).

    Args:
      value: a number, an array or a schedule (a callable of the step count).
      count: the steps taken before this one (0 at the first step), possibly traced.

    Returns:
      ``value(count)`` when ``value`` is callable, otherwise ``value``.
    """
    return value(count) if callable(value) else value


def any_schedule(*values: Any) -> bool:
    """Whether any of ``values`` is a schedule (so the transform must keep a step count)."""
    return any(callable(v) for v in values)
