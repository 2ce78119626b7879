"""Sign SGD, Signum, noisy SGD, Polyak SGD, optimistic GD and Rprop, with optax's names, arguments and defaults."""


from typing import Any

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain
from gradtx._transforms.momentum import trace
from gradtx._transforms.scaling import scale, scale_by_learning_rate
from gradtx._transforms.step_rules import (
    add_noise,
    scale_by_optimistic_gradient,
    scale_by_polyak,
    scale_by_rprop,
    scale_by_sign,
)

__all__ = ["sign_sgd", "signum", "noisy_sgd", "polyak_sgd", "optimistic_gradient_descent", "rprop"]


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""signSGD (Bernstein et al., 2018, https://arxiv.org/abs/1802.04434), as ``optax.sign_sgd``.

    .. math::
        u_t = -\alpha_t \operatorname{sign}(g_t)

    ``chain(scale_by_sign(), scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: :math:`\alpha_t`, a float, an array or a schedule.
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(learning_rate: ScalarOrSchedule, beta: Any = 0.9, accumulator_dtype: Any = None) -> GradientTransformation:
    r"""Signum: signSGD on an exponential moving average of the gradients, as ``optax.signum``.

    .. math::
        m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad u_t = -\alpha_t \operatorname{sign}(m_t)

    Bernstein et al., 2018 (https://arxiv.org/abs/1802.04434); Zhao et al., 2024
    (https://arxiv.org/abs/2407.07972). The average is not debiased (only its sign
    is used): it is ``trace`` with dampening equal to its decay.

    Args:
      learning_rate: :math:`\alpha_t`, a float, an array or a schedule.
      beta: :math:`\beta`, the decay of the average.
      accumulator_dtype: dtype of the average; ``None`` keeps the parameters'.
    """
    return chain(
        trace(beta, accumulator_dtype=accumulator_dtype, dampening=beta),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


def noisy_sgd(learning_rate: ScalarOrSchedule, eta: Any = 0.01, gamma: Any = 0.55, key: Any = None, *,
              seed: int | None = None) -> GradientTransformation:
    r"""SGD on gradients with annealed Gaussian noise (Neelakantan et al., 2015, https://arxiv.org/abs/1511.06807).

    .. math::
        u_t = -\alpha_t (g_t + \sigma_t \xi_t), \qquad \sigma_t^2 = \eta / t^{\gamma}, \quad \xi_t \sim \mathcal N(0, I)

    As ``optax.noisy_sgd`` (the same noise for the same key):
    ``chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: :math:`\alpha_t`, a float, an array or a schedule.
      eta: the base variance of the noise.
      gamma: the annealing exponent.
      key: a ``jax.random.key`` or an integer seed.
      seed: optax's older name for an integer ``key``.
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))


def polyak_sgd(max_learning_rate: Any = 1.0, scaling: ScalarOrSchedule = 1.0, f_min: Any = 0.0, eps: Any = 0.0,
               variant: str = "sps") -> GradientTransformation:
    r"""SGD with the stochastic Polyak step size (Loizou et al., 2021, https://arxiv.org/abs/2002.10542).

    .. math::
        u_t = -s \min\left\{\frac{f(x_t) - f^\star}{\|s\, g_t\|^2 + \epsilon}, \gamma_{\max}\right\} s\, g_t

    As ``optax.polyak_sgd``: ``chain(scale_by_learning_rate(scaling), scale_by_polyak(...))``
    (the norm is that of the already scaled gradient, as in optax). ``update`` needs
    ``value=loss``; ``variant="sps+"`` clips a negative gap to zero (Garrigos et al., 2023).

    Args:
      max_learning_rate: :math:`\gamma_{\max}`.
      scaling: :math:`s`, a float, an array or a schedule.
      f_min: :math:`f^\star`, a lower bound on the loss.
      eps: :math:`\epsilon`, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"``.
    """
    return chain(
        scale_by_learning_rate(scaling),
        scale_by_polyak(f_min=f_min, max_learning_rate=max_learning_rate, eps=eps, variant=variant),
    )


def optimistic_gradient_descent(learning_rate: ScalarOrSchedule, alpha: ScalarOrSchedule = 1.0,
                                beta: ScalarOrSchedule = 1.0) -> GradientTransformation:
    r"""Optimistic gradient descent (Mokhtari et al., 2019, https://arxiv.org/abs/1901.08511).

    .. math::
        u_t = -\eta_t \left((\alpha + \beta) g_t - \beta g_{t-1}\right)

    As ``optax.optimistic_gradient_descent``:
    ``chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: :math:`\eta_t`, a float, an array or a schedule.
      alpha: the coefficient of the current gradient.
      beta: the coefficient of the optimistic correction.
    """
    return chain(scale_by_optimistic_gradient(alpha=alpha, beta=beta), scale_by_learning_rate(learning_rate))


def rprop(learning_rate: Any, eta_minus: Any = 0.5, eta_plus: Any = 1.2, min_step_size: Any = 1e-6,
          max_step_size: Any = 50.0, *, lagged: bool = True) -> GradientTransformation:
    r"""Rprop (Riedmiller & Braun, 1993, https://doi.org/10.1109/ICNN.1993.298623), as ``optax.rprop``.

    .. math::
        u_t = -\Delta_t \operatorname{sign}(g_t) \ \text{(zero where the sign flipped)}

    with per-element step sizes :math:`\Delta_t` grown by ``eta_plus`` while the sign
    holds and shrunk by ``eta_minus`` when it flips (see :func:`gradtx.scale_by_rprop`).
    ``chain(scale_by_rprop(...), scale(-1.0))``, optax's signature, defaults and numbers.
    optax 0.2.8 applies each step one step late (its first update is zero;
    google-deepmind/optax pull request 1725); this alias does the same by default so
    that it reproduces optax runs, and ``lagged=False`` applies each step at once, as
    published and as torch does. For torch.optim.Rprop see ``gradtx.optim.Rprop``.

    Args:
      learning_rate: the initial step size.
      eta_minus: the factor shrinking a step after a sign change.
      eta_plus: the factor growing it while the sign holds.
      min_step_size: the smallest step size.
      max_step_size: the largest step size.
      lagged: reproduce optax 0.2.8's one-step-late updates (default); ``False`` for the published algorithm.
    """
    return chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, lagged=lagged),
        scale(-1.0),
    )
