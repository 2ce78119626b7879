"""Checks the declarations share, in their references' words (torch's, pytorch_optimizer's)."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradtx.optim._optimizer import number
from gradtx.optim._params import is_array

__all__ = ["check_betas", "check_lr", "check_non_negative", "check_positive", "check_tensor_lr", "check_torch_ranges"]


def check_tensor_lr(lr: Any) -> None:
    """torch's first check of ``lr``: an array (torch's Tensor lr) must have one element.

    Raises:
      ValueError: "Tensor lr must be 1-element", torch's message, when ``lr`` is
        an array of another size (give a scalar, a 1-element array or a schedule).
    """
    if is_array(lr) and np.size(lr) != 1:
        raise ValueError("Tensor lr must be 1-element")


# torch's words for an option out of range: "Invalid <label>: <value>"
_TORCH_LABELS = {"lr": "learning rate", "eps": "epsilon value"}
_DEFAULT_INTERVALS = {"betas": "[0, 1)"}


@functools.cache
def _interval(text: str) -> tuple[float, float, bool, bool]:
    """``"[0, 1)"`` -> ``(0.0, 1.0, low_closed, high_closed)``."""
    if text[0] not in "[(" or text[-1] not in "])" or text.count(",") != 1:
        raise ValueError(f"an interval is written '[low, high)' with [ or ( and ] or ), got {text!r}")
    low, high = (part.strip() for part in text[1:-1].split(","))
    return float(low), float(high), text[0] == "[", text[-1] == "]"


def _inside(x: float, interval: str) -> bool:
    low, high, low_closed, high_closed = _interval(interval)
    return (low <= x if low_closed else low < x) and (x <= high if high_closed else x < high)


def check_torch_ranges(group: Mapping[str, Any], *options: str | tuple[str, str], nan_passes: bool = False) -> None:
    """torch's range checks of a param group's ``options``, in the order given, in torch's words.

    Each option is a name, checked in ``[0, inf)``, or ``(name, interval)`` with the
    interval written as in mathematics (``"(0, inf)"``, ``"[0, 1]"``). ``lr`` is
    first checked as torch checks a Tensor lr (:func:`check_tensor_lr`); ``betas``
    element by element (the first two) in ``[0, 1)`` unless given another
    interval. A schedule reads as 0 (see :func:`gradtx.optim.number`).

    Args:
      group: the param group (or the defaults).
      options: the options to check, in the order torch checks them.
      nan_passes: NaN is accepted, as by torch's ``if lr < 0.0`` (SGD); by
        default it is rejected, as by torch's ``if not 0.0 <= lr`` (Adam and most).

    Raises:
      ValueError: torch's message for the first option out of range:
        ``"Tensor lr must be 1-element"``, ``"Invalid learning rate: <lr>"``, ``"Invalid epsilon value: <eps>"``,
        ``"Invalid beta parameter at index <i>: <beta>"``, or ``"Invalid <name> value: <value>"``.
    """
    for option in options:
        name, interval = option if isinstance(option, tuple) else (option, _DEFAULT_INTERVALS.get(option, "[0, inf)"))
        if name == "lr":
            check_tensor_lr(group[name])
        if name == "betas":
            checks = [(f"beta parameter at index {i}", beta) for i, beta in enumerate(group[name][:2])]
        else:
            checks = [(_TORCH_LABELS.get(name, f"{name} value"), group[name])]
        for label, value in checks:
            x = number(value)
            if not (_inside(x, interval) or (nan_passes and math.isnan(x))):
                raise ValueError(f"Invalid {label}: {value}")


def check_lr(value: Any, note: str = "learning rate") -> None:
    """pytorch_optimizer's ``validate_learning_rate`` (it raises its own NegativeLRError; here a ValueError)."""
    if value is not None and number(value) < 0.0:
        raise ValueError(f"{note} must be positive. ({value} > 0)")


def check_betas(group: Mapping[str, Any], key: str = "betas") -> None:
    """pytorch_optimizer's ``validate_betas`` for ``group[key]``: each of the first two in [0, 1) (None passes)."""
    for index, beta in enumerate(group[key][:2]):
        if beta is not None and not 0.0 <= number(beta) < 1.0:
            raise ValueError(f"beta{index + 1} must be in the range [0.0, 1.0)")


def check_non_negative(group: Mapping[str, Any], *keys: str) -> None:
    """pytorch_optimizer's ``validate_non_negative`` for each of ``keys`` (None passes)."""
    for key in keys:
        if group[key] is not None and number(group[key]) < 0.0:
            raise ValueError(f"{key} must be non-negative")


def check_positive(group: Mapping[str, Any], *keys: str) -> None:
    """pytorch_optimizer's ``validate_positive`` for each of ``keys``."""
    for key in keys:
        if number(group[key]) <= 0:
            raise ValueError(f"{key} must be positive")
