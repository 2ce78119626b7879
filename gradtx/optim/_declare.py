"""Checks the declarations share, in torch's words."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradtx.optim._params import is_array

__all__ = ["check_tensor_lr"]


def check_tensor_lr(lr: Any) -> None:
    """torch's first check of ``lr``: an array (torch's Tensor lr) must have one element.

    Raises:
      ValueError: "Tensor lr must be 1-element", torch's message, when ``lr`` is
        an array of another size (give a scalar, a 1-element array or a schedule).
    """
    if is_array(lr) and np.size(lr) != 1:
        raise ValueError("Tensor lr must be 1-element")
