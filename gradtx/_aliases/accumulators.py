"""Adagrad, RMSprop, Adadelta and Adamax as chains, with optax's names, arguments and defaults."""


from typing import Any

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain, identity
from gradtx._transforms.accumulators import (scale_by_adadelta, scale_by_adamax, scale_by_rms, scale_by_rss,
                                            scale_by_stddev)
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.momentum import trace
from gradtx._transforms.scaling import scale_by_learning_rate

__all__ = ["adagrad", "rmsprop", "adadelta", "adamax", "adamaxw"]


def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value: Any = 0.1,
            eps: Any = 1e-7, *, sum_of_squares_dtype: Any = None) -> GradientTransformation:
    r"""Adagrad (Duchi et al., 2011, https://jmlr.org/papers/v12/duchi11a.html), as ``optax.adagrad``.

    .. math::
        s_t = s_{t-1} + g_t^2, \qquad \theta_t = \theta_{t-1} - \eta\, g_t / \sqrt{s_t + \epsilon}

    ``chain(scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate))``.
    torch.optim.Adagrad puts ``eps`` outside the root and decays the step size:
    see :func:`gradtx.optim.chains.adagrad_chain`.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      initial_accumulator_value: :math:`s_0`.
      eps: :math:`\epsilon`.
      sum_of_squares_dtype: (beyond optax) the accumulator's dtype; ``None``: the parameters'.
    """
    return chain(
        scale_by_rss(initial_accumulator_value, eps, sum_of_squares_dtype=sum_of_squares_dtype),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(learning_rate: ScalarOrSchedule, decay: Any = 0.9, eps: Any = 1e-8, initial_scale: Any = 0.0,
            eps_in_sqrt: bool = True, centered: bool = False, momentum: Any = None, nesterov: bool = False,
            bias_correction: bool = False, *, nu_dtype: Any = None, mu_dtype: Any = None) -> GradientTransformation:
    r"""RMSprop (Tieleman & Hinton, 2012), optionally centered (Graves, 2013, https://arxiv.org/abs/1308.0850), as ``optax.rmsprop``.

    .. math::
        v_t = \rho\, v_{t-1} + (1-\rho)\, g_t^2, \qquad \theta_t = \theta_{t-1} - \eta\, g_t / \sqrt{v_t + \epsilon}

    ``chain(scale_by_rms(...) or scale_by_stddev(...) when centered, scale_by_learning_rate(lr),
    trace(momentum, nesterov) when momentum is given)``. As in optax the momentum
    accumulates the lr-scaled steps; torch.optim.RMSprop accumulates before the lr
    and keeps ``eps`` outside the root (:func:`gradtx.optim.chains.rmsprop_chain`).

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      decay: :math:`\rho`.
      eps: :math:`\epsilon`.
      initial_scale: :math:`v_0`.
      eps_in_sqrt: add ``eps`` under the square root (else after it).
      centered: divide by the estimated standard deviation instead of the RMS.
      momentum: the momentum coefficient; ``None`` for none.
      nesterov: Nesterov momentum.
      bias_correction: bias-correct the moving averages.
      nu_dtype: (beyond optax) the moving average of squares' dtype; ``None``: the parameters' real dtype.
      mu_dtype: (beyond optax) with ``centered``, the moving average's dtype; ``None``: the parameters'.
    """
    slots = {"nu_dtype": nu_dtype, **({"mu_dtype": mu_dtype} if centered else {})}
    rescale = scale_by_stddev if centered else scale_by_rms
    return chain(
        rescale(decay, eps, initial_scale, eps_in_sqrt, bias_correction, **slots),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov) if momentum is not None else identity(),
    )


def adadelta(learning_rate: ScalarOrSchedule | None = None, rho: Any = 0.9, eps: Any = 1e-6,
             weight_decay: ScalarOrSchedule = 0.0, weight_decay_mask: Any = None) -> GradientTransformation:
    r"""Adadelta (Zeiler, 2012, https://arxiv.org/abs/1212.5701), as ``optax.adadelta``.

    .. math::
        a_t = \rho\, a_{t-1} + (1-\rho)\, g_t^2, \quad
        \Delta_t = \frac{\sqrt{d_{t-1} + \epsilon}}{\sqrt{a_t + \epsilon}}\, g_t, \quad
        d_t = \rho\, d_{t-1} + (1-\rho)\, \Delta_t^2, \quad
        \theta_t = \theta_{t-1} - \eta\, \Delta_t

    ``chain(add_decayed_weights(weight_decay, weight_decay_mask), scale_by_adadelta(rho, eps),
    scale_by_learning_rate(learning_rate))``. As in optax, ``learning_rate=None`` leaves
    the updates unscaled *and unnegated* (no learning-rate stage at all).

    Args:
      learning_rate: :math:`\eta`, a float, an array, a schedule or ``None``.
      rho: :math:`\rho`.
      eps: :math:`\epsilon`.
      weight_decay: coupled L2 decay added to the gradient first.
      weight_decay_mask: which leaves to decay (a tree of booleans or a function of the params).
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(learning_rate) if learning_rate is not None else identity(),
    )


def adamax(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, *,
           mu_dtype: Any = None, nu_dtype: Any = None) -> GradientTransformation:
    r"""Adamax (Kingma & Ba, 2015, section 7, https://arxiv.org/abs/1412.6980), as ``optax.adamax``.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
        \theta_t = \theta_{t-1} - \eta\, \frac{m_t}{(1-\beta_1^t)\, u_t}

    ``chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      eps: :math:`\epsilon`.
      mu_dtype, nu_dtype: (beyond optax) the slots' dtypes, as in :func:`gradtx.scale_by_adamax`.
    """
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamaxw(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8,
            weight_decay: ScalarOrSchedule = 1e-4, mask: Any = None, *, mu_dtype: Any = None,
            nu_dtype: Any = None) -> GradientTransformation:
    r"""Adamax with decoupled weight decay (Loshchilov & Hutter, 2019, https://arxiv.org/abs/1711.05101), as ``optax.adamaxw``.

    .. math::
        \theta_t = \theta_{t-1} - \eta \left(\frac{m_t}{(1-\beta_1^t)\, u_t} + \lambda\, \theta_{t-1}\right)

    ``chain(scale_by_adamax(b1, b2, eps), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      eps: :math:`\epsilon`.
      weight_decay: :math:`\lambda`, the decoupled decay rate.
      mask: which leaves to decay (a tree of booleans or a function of the params).
      mu_dtype, nu_dtype: (beyond optax) the slots' dtypes, as in :func:`gradtx.scale_by_adamax`.
    """
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
