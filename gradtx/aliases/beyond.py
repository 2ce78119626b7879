"""Optimizers from ``optax.contrib`` as chains, with optax 0.2.8's names, arguments, defaults and numbers.

schedule_free_adamw, schedule_free_sgd (see also :func:`gradtx.schedule_free`).
The torch-style classes of the reference packages (``schedulefree``) are built
by :mod:`gradtx.optim.schedule_free`.
"""

from __future__ import annotations

from typing import Any

from gradtx.aliases.core import sgd
from gradtx.base import GradientTransformation, chain
from gradtx.schedules.optax_style import warmup_constant_schedule
from gradtx.transforms.accumulators import scale_by_rms
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate
from gradtx.transforms.schedule_free import schedule_free

__all__ = ["schedule_free_adamw", "schedule_free_sgd"]


def _warmed_up(learning_rate: Any, warmup_steps: int | None) -> Any:
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps)


def schedule_free_sgd(learning_rate: Any = 1.0, warmup_steps: int | None = None, b1: Any = 0.9,
                      weight_decay: Any = None, weight_lr_power: Any = 2.0,
                      state_dtype: Any = None) -> GradientTransformation:
    """Schedule-Free SGD (``optax.contrib.schedule_free_sgd``): :func:`gradtx.schedule_free` around ``sgd``.

    Defazio et al., The Road Less Scheduled, 2024, https://arxiv.org/abs/2405.15682.

    Args:
      learning_rate: SGD's learning rate.
      warmup_steps: length of a linear warmup from 0 (none by default).
      b1: :math:`\\beta_1`, the interpolation weight (positive).
      weight_decay: L2 decay added to the gradient (scaled by the learning rate), or None.
      weight_lr_power: power of the largest learning rate in the averaging weights.
      state_dtype: dtype of the :math:`z` sequence.

    Returns:
      A GradientTransformation; evaluate at :func:`gradtx.schedule_free_eval_params`.
    """
    learning_rate = _warmed_up(learning_rate, warmup_steps)
    base = sgd(learning_rate)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power,
                         state_dtype=state_dtype)


def schedule_free_adamw(learning_rate: Any = 0.0025, warmup_steps: int | None = None, b1: Any = 0.9,
                        b2: Any = 0.999, eps: Any = 1e-8, weight_decay: Any = 0.0, weight_lr_power: Any = 2.0,
                        state_dtype: Any = None) -> GradientTransformation:
    """Schedule-Free AdamW (``optax.contrib.schedule_free_adamw``): :func:`gradtx.schedule_free` around AdamW.

    The base is Adam without momentum (``scale_by_rms`` with eps outside the root and
    bias correction), then decoupled decay at the current parameters and the
    learning rate. Defazio et al., 2024, https://arxiv.org/abs/2405.15682.

    Args:
      learning_rate: AdamW's learning rate.
      warmup_steps: length of a linear warmup from 0 (none by default).
      b1: :math:`\\beta_1`, the interpolation weight (positive).
      b2: decay rate of the second moment.
      eps: added to the root of the second moment.
      weight_decay: decoupled weight decay.
      weight_lr_power: power of the largest learning rate in the averaging weights.
      state_dtype: dtype of the :math:`z` sequence.

    Returns:
      A GradientTransformation; evaluate at :func:`gradtx.schedule_free_eval_params`.
    """
    learning_rate = _warmed_up(learning_rate, warmup_steps)
    base = chain(scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
                 add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))
    return schedule_free(base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power,
                         state_dtype=state_dtype)
