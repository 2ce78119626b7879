"""SOAP, Shampoo, MARS, LaProp, SCION and Adam-mini as chains (no optax counterpart; the numbers of pytorch_optimizer 4.1.0's classes).

The torch-style classes with pytorch_optimizer's names, options and state are in
:mod:`gradtx.optim` (:class:`gradtx.optim.SOAP`, ...).
"""

from __future__ import annotations

from typing import Any

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain, identity
from gradtx._transforms.adam_mini import scale_by_adam_mini
from gradtx._transforms.decay import decoupled_weight_decay
from gradtx._transforms.mars import scale_by_laprop, scale_by_mars
from gradtx._transforms.preconditioned import decay_after_step, scale_by_shampoo, scale_by_soap
from gradtx._transforms.scaling import scale_by_learning_rate
from gradtx._transforms.scion import scale_by_lmo, scale_by_lmo_momentum

__all__ = ["soap", "shampoo", "mars", "laprop", "scion", "adam_mini"]


def soap(learning_rate: ScalarOrSchedule = 3e-3, b1: Any = 0.95, b2: Any = 0.95, shampoo_beta: Any = None,
         eps: Any = 1e-8, weight_decay: ScalarOrSchedule | None = 1e-2, precondition_frequency: Any = 10,
         max_precondition_dim: int = 10000, merge_dims: bool = False, precondition_1d: bool = False,
         correct_bias: bool = True, normalize_gradient: bool = False,
         data_format: str = "channels_first") -> GradientTransformation:
    r"""SOAP (Vyas et al., 2024, https://arxiv.org/abs/2409.11321; optax#1580): Adam in Shampoo's eigenbasis.

    ``chain(scale_by_soap, scale_by_learning_rate, decay_after_step)``: the decay multiplies the
    updated parameter by :math:`1 - \eta\lambda` and skips the first, statistics-only step, as
    ``pytorch_optimizer.SOAP`` does.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1: as in :func:`gradtx.scale_by_soap`, and so are the options after it up to ``data_format``.
      weight_decay: :math:`\lambda` (decoupled); ``None`` leaves the decay stage out.

    Returns:
      A ``GradientTransformation``.

    Example::

        tx = gradtx.soap(3e-3, precondition_frequency=10)
    """
    return chain(
        scale_by_soap(b1, b2, shampoo_beta, eps, precondition_frequency, max_precondition_dim, merge_dims,
                      precondition_1d, correct_bias, normalize_gradient, data_format),
        scale_by_learning_rate(learning_rate),
        identity() if weight_decay is None else decay_after_step(weight_decay, learning_rate, skip_first=True),
    )


def mars(learning_rate: ScalarOrSchedule = 3e-3, b1: Any = 0.95, b2: Any = 0.99, gamma: Any = 0.025,
         eps: Any = 1e-8, weight_decay: ScalarOrSchedule | None = 0.0, *, lion: bool = False,
         ams_bound: bool = False, cautious: bool = False) -> GradientTransformation:
    r"""MARS (Yuan et al., 2024, https://arxiv.org/abs/2411.10438): Adam or Lion on a variance-reduced gradient.

    ``chain(scale_by_mars, scale_by_learning_rate, decoupled_weight_decay)`` on every leaf (the
    reference's ``optimize_1d=True``; :class:`gradtx.optim.MARS` gives 1-D parameters AdamW's step).

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, gamma, eps, ams_bound, cautious: as in :func:`gradtx.scale_by_mars`.
      weight_decay: :math:`\lambda`, decoupled (:math:`\theta \leftarrow \theta - \eta\lambda\theta`);
        ``None`` leaves the decay stage out.
      lion: MARS-Lion's sign step.

    Returns:
      A ``GradientTransformation``.
    """
    return chain(
        scale_by_mars(b1, b2, gamma, eps, sign=lion, ams_bound=ams_bound, cautious=cautious),
        scale_by_learning_rate(learning_rate),
        identity() if weight_decay is None else decoupled_weight_decay(weight_decay, learning_rate),
    )


def laprop(learning_rate: ScalarOrSchedule = 4e-4, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-15,
           weight_decay: ScalarOrSchedule | None = 0.0, *, centered: bool = False,
           steps_before_using_centered: int = 10, ams_bound: bool = False,
           cautious: bool = False) -> GradientTransformation:
    r"""LaProp (Ziyin et al., 2020, https://arxiv.org/abs/2002.04839): momentum over the normalized gradient.

    ``chain(scale_by_laprop, decay_after_step)``: the decay multiplies the updated parameter by
    :math:`1 - \eta\lambda`, as ``pytorch_optimizer.LaProp`` does.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, centered, steps_before_using_centered, ams_bound, cautious: as in
        :func:`gradtx.scale_by_laprop`.
      weight_decay: :math:`\lambda` (decoupled); ``None`` leaves the decay stage out.

    Returns:
      A ``GradientTransformation``.
    """
    return chain(
        scale_by_laprop(learning_rate, b1, b2, eps, centered=centered,
                        steps_before_using_centered=steps_before_using_centered, ams_bound=ams_bound,
                        cautious=cautious),
        identity() if weight_decay is None else decay_after_step(weight_decay, learning_rate),
    )


def scion(learning_rate: ScalarOrSchedule = 1e-3, momentum: Any = 0.1, norm: str | int = "auto",
          norm_kwargs: dict | None = None, radius: Any = 1.0, weight_decay: ScalarOrSchedule | None = None, *,
          constraint: bool = False) -> GradientTransformation:
    r"""SCION (Pethick et al., 2025, https://arxiv.org/abs/2502.07529): steps along a norm's LMO.

    .. math::
        d_t = (1-\alpha) d_{t-1} + \alpha g_t, \quad
        \theta_t = \theta_{t-1} - \eta\rho\,\mathrm{lmo}(d_t)

    (with ``constraint``, :math:`\theta_{t-1}(1-\eta)` replaces :math:`\theta_{t-1}`):
    ``chain(scale_by_lmo_momentum, scale_by_lmo, scale_by_learning_rate, decay)``, the numbers of
    ``pytorch_optimizer.SCION``. Use :func:`gradtx.multi_transform` to give layers different norms.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      momentum: :math:`\alpha`, the new gradient's weight.
      norm: the norm (see :func:`gradtx.lmo_direction`).
      norm_kwargs: the norm's options.
      radius: :math:`\rho` (pytorch_optimizer's ``scale``).
      weight_decay: decoupled decay, :math:`\theta \leftarrow \theta(1 - \eta\lambda)` before the step;
        ``None``: none. Not applied with ``constraint``.
      constraint: the conditional-gradient form.

    Returns:
      A ``GradientTransformation``.
    """
    if constraint:
        decay = decoupled_weight_decay(1.0, learning_rate)
    else:
        decay = identity() if weight_decay is None else decoupled_weight_decay(weight_decay, learning_rate)
    return chain(
        scale_by_lmo_momentum(momentum),
        scale_by_lmo(norm, radius, **(norm_kwargs or {})),
        scale_by_learning_rate(learning_rate),
        decay,
    )


def shampoo(learning_rate: ScalarOrSchedule = 1e-3, momentum: Any = 0.0, matrix_eps: Any = 1e-6,
            preconditioning_compute_steps: Any = 1, weight_decay: ScalarOrSchedule | None = None) -> GradientTransformation:
    r"""Shampoo (Gupta et al., 2018, https://arxiv.org/abs/1802.09568): one preconditioner per tensor axis.

    ``chain(scale_by_shampoo, scale_by_learning_rate, decoupled_weight_decay)``, the numbers of
    ``pytorch_optimizer.Shampoo`` (with ``weight_decouple=True`` when ``weight_decay`` is given).

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      momentum, matrix_eps, preconditioning_compute_steps: as in :func:`gradtx.scale_by_shampoo`.
      weight_decay: decoupled decay, :math:`\theta \leftarrow \theta(1 - \eta\lambda)` before the step; ``None``: none.

    Returns:
      A ``GradientTransformation``.
    """
    return chain(
        scale_by_shampoo(momentum, matrix_eps, preconditioning_compute_steps),
        scale_by_learning_rate(learning_rate),
        identity() if weight_decay is None else decoupled_weight_decay(weight_decay, learning_rate),
    )


def adam_mini(learning_rate: ScalarOrSchedule = 1.0, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8,
              weight_decay: ScalarOrSchedule | None = 0.1, block: str = "tensor",
              view: tuple[int, ...] | None = None) -> GradientTransformation:
    r"""Adam-mini (Zhang et al., 2024, https://arxiv.org/abs/2406.16793): one second moment per block.

    ``chain(scale_by_adam_mini, scale_by_learning_rate, decoupled_weight_decay)`` with one block kind for
    every leaf; :func:`gradtx.multi_transform` (or :class:`gradtx.optim.AdamMini`, which picks the block from
    each parameter's name as ``pytorch_optimizer.AdamMini`` does) mixes them.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, block, view: as in :func:`gradtx.scale_by_adam_mini`.
      weight_decay: decoupled decay, :math:`\theta \leftarrow \theta(1 - \eta\lambda)` before the step; ``None``: none.

    Returns:
      A ``GradientTransformation``.
    """
    return chain(
        scale_by_adam_mini(b1, b2, eps, block, view),
        scale_by_learning_rate(learning_rate),
        identity() if weight_decay is None else decoupled_weight_decay(weight_decay, learning_rate),
    )
