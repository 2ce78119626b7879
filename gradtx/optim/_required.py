"""``required`` (an option without a default) and ``number`` (an option read as a float for torch's checks)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["number", "required"]


class _RequiredParameter:
    """Marks an option without a default: every param group must give it."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def number(value: Any) -> float:
    """An option as a Python float for validation (floats, ints, 1-element arrays); schedules read as 0."""
    if callable(value):
        return 0.0
    if isinstance(value, (str, bytes)) or not np.issubdtype(np.asarray(value).dtype, np.number):
        raise TypeError(f"an option must be a number (or a schedule), got {value!r} ({type(value).__name__})")
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"an option given as an array must have 1 element, got shape {array.shape}")
    return float(array.reshape(()))
