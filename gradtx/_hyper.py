"""Hyperparameters that may be numbers, arrays or schedules ``count -> value``."""

from __future__ import annotations

from typing import Any


def is_schedule(value: Any) -> bool:
    """Whether ``value`` is a schedule (a callable of the step count)."""
    return callable(value)


def value_at(value: Any, count: Any) -> Any:
    """The hyperparameter's value at step ``count``: ``value(count)`` for a schedule, else ``value``."""
    return value(count) if callable(value) else value


def any_schedule(*values: Any) -> bool:
    """Whether any of ``values`` is a schedule (so the transform must keep a step count)."""
    return any(callable(v) for v in values)
