"""Optimistic Adam: Adam whose direction is extrapolated with the previous one (for min-max games)."""


import warnings
from typing import Any

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain
from gradtx._transforms.moments import scale_by_adam
from gradtx._transforms.scaling import scale_by_learning_rate
from gradtx._transforms.step_rules import scale_by_optimistic_gradient

__all__ = ["optimistic_adam", "optimistic_adam_v2"]


def optimistic_adam_v2(learning_rate: ScalarOrSchedule, *, alpha: Any = 1.0, beta: Any = 1.0, b1: Any = 0.9,
                       b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0, mu_dtype: Any = None,
                       nesterov: bool = True) -> GradientTransformation:
    r"""Optimistic Adam (Daskalakis et al., 2017, https://arxiv.org/abs/1711.00141), as ``optax.optimistic_adam_v2``.

    Adam's direction :math:`d_t` is extrapolated with the previous one before the
    learning rate: :math:`(\alpha + \beta) d_t - \beta d_{t-1}`.

    Args:
      learning_rate: a number or a schedule.
      alpha, beta: the weights of the optimistic step (:func:`gradtx.scale_by_optimistic_gradient`).
      b1, b2, eps, eps_root, mu_dtype, nesterov: as :func:`gradtx.scale_by_adam` (Nesterov on by default).
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(learning_rate: Any, optimism: Any = None, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8,
                    eps_root: Any = 0.0, mu_dtype: Any = None, *, nesterov: bool = True) -> GradientTransformation:
    r"""The older form of :func:`optimistic_adam_v2` (``optax.optimistic_adam``, deprecated there too).

    The learning rate is the optimistic step's :math:`\alpha` and ``optimism``
    its :math:`\beta` (default: the learning rate); no schedules.
    """
    warnings.warn("`optimistic_adam` is deprecated, please use `optimistic_adam_v2` instead.",
                  category=DeprecationWarning, stacklevel=2)
    if callable(learning_rate):
        raise ValueError("optimistic_adam does not take a learning-rate schedule; use optimistic_adam_v2, which does.")
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=learning_rate if optimism is None else optimism),
        scale_by_learning_rate(1.0),
    )
