"""Adam's relatives as chains, with optax 0.2.8's names, arguments and defaults.

nadam, nadamw, radam, adabelief, yogi, novograd, lion, adan, lamb, lars, fromage.
torch's NAdam and RAdam (with their own momentum schedule, eps placement and
decay options) are :func:`gradtx.optim.chains.nadam_chain` and :func:`gradtx.optim.chains.radam_chain`.
"""


from typing import Any

from gradtx._aliases.core import adam, adamw
from gradtx._base import GradientTransformation, ScalarOrSchedule, chain
from gradtx._transforms.adam_variants import (
    fromage_rates,
    scale_by_adan,
    scale_by_belief,
    scale_by_lion,
    scale_by_novograd,
    scale_by_radam,
    scale_by_trust_ratio,
    scale_by_yogi,
)
from gradtx._transforms.decay import add_decayed_weights
from gradtx._transforms.moments import scale_by_adam
from gradtx._transforms.momentum import trace
from gradtx._transforms.scaling import scale_by_learning_rate
from gradtx._transforms.wrappers import masked

__all__ = ["nadam", "nadamw", "radam", "adabelief", "yogi", "novograd", "lion", "adan", "lamb", "lars", "fromage"]


def nadam(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
          mu_dtype: Any = None, *, nesterov: bool = True, nu_dtype: Any = None) -> GradientTransformation:
    r"""NAdam (Dozat, 2016, https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ), as ``optax.nadam``.

    .. math::
        u_t = -\eta\, \frac{\beta_1 m_t / (1-\beta_1^{t+1}) + (1-\beta_1) g_t / (1-\beta_1^t)}
                          {\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    :func:`gradtx.adam` with ``nesterov=True``. torch's NAdam, whose momentum
    follows a schedule, is :func:`gradtx.scale_by_nadam`.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`gradtx.scale_by_adam`.
      nesterov: kept for optax's signature (``optax.nadam`` is ``partial(adam, nesterov=True)``).
      nu_dtype: (beyond optax) the second moment's dtype, as in :func:`gradtx.scale_by_adam`.
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype)


def nadamw(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
           mu_dtype: Any = None, weight_decay: ScalarOrSchedule = 1e-4, mask: Any = None, *,
           nesterov: bool = True, nu_dtype: Any = None) -> GradientTransformation:
    r"""NAdam with decoupled weight decay, as ``optax.nadamw`` (:func:`gradtx.adamw` with ``nesterov=True``).

    .. math:: u_t = -\eta \left(\text{nadam\_direction}_t + \lambda w_t\right)

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`gradtx.scale_by_adam`.
      weight_decay: :math:`\lambda`.
      mask: which leaves to decay (a tree of booleans or a function of the params).
      nesterov: kept for optax's signature.
      nu_dtype: (beyond optax) the second moment's dtype, as in :func:`gradtx.scale_by_adam`.
    """
    return adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov,
                 nu_dtype=nu_dtype)


def radam(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, eps_root: Any = 0.0,
          threshold: Any = 5.0, *, nesterov: bool = False, mu_dtype: Any = None,
          nu_dtype: Any = None) -> GradientTransformation:
    r"""Rectified Adam (Liu et al., 2020, https://arxiv.org/abs/1908.03265), as ``optax.radam``.

    .. math:: u_t = -\eta\, \text{radam\_direction}_t  \quad\text{(see :func:`gradtx.scale_by_radam`)}

    For ``torch.optim.RAdam`` see :func:`gradtx.optim.chains.radam_chain`.

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, eps_root, threshold, nesterov: as in :func:`gradtx.scale_by_radam`.
      mu_dtype, nu_dtype: (beyond optax) the moments' dtypes, as in :func:`gradtx.scale_by_radam`.
    """
    return chain(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adabelief(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-16,
              eps_root: Any = 1e-16, *, nesterov: bool = False) -> GradientTransformation:
    r"""AdaBelief (Zhuang et al., 2020, https://arxiv.org/abs/2010.07468), as ``optax.adabelief``.

    .. math:: u_t = -\eta\, \hat m_t / (\sqrt{\hat s_t} + \epsilon)  \quad\text{(see :func:`gradtx.scale_by_belief`)}

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, eps_root, nesterov: as in :func:`gradtx.scale_by_belief`.
    """
    return chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def yogi(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-3) -> GradientTransformation:
    r"""Yogi (Zaheer et al., 2018), as ``optax.yogi``.

    .. math:: u_t = -\eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)  \quad\text{(see :func:`gradtx.scale_by_yogi`)}

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps: as in :func:`gradtx.scale_by_yogi`.
    """
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


def novograd(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.25, eps: Any = 1e-6, eps_root: Any = 0.0,
             weight_decay: ScalarOrSchedule = 0.0) -> GradientTransformation:
    r"""NovoGrad (Ginsburg et al., 2019, https://arxiv.org/abs/1905.11286), as ``optax.novograd``.

    .. math:: u_t = -\eta\, m_t  \quad\text{(see :func:`gradtx.scale_by_novograd`)}

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, eps_root, weight_decay: as in :func:`gradtx.scale_by_novograd`.
    """
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def lion(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.99, mu_dtype: Any = None,
         weight_decay: ScalarOrSchedule = 1e-3, mask: Any = None) -> GradientTransformation:
    r"""Lion (Chen et al., 2023, https://arxiv.org/abs/2302.06675), as ``optax.lion``.

    .. math:: u_t = -\eta \left(\operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t) + \lambda w_t\right)

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, mu_dtype: as in :func:`gradtx.scale_by_lion`.
      weight_decay: :math:`\lambda`, decoupled (added after the sign).
      mask: which leaves to decay (a tree of booleans or a function of the params).
    """
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adan(learning_rate: ScalarOrSchedule, b1: Any = 0.98, b2: Any = 0.92, b3: Any = 0.99, eps: Any = 1e-8,
         eps_root: Any = 1e-8, weight_decay: ScalarOrSchedule = 0.0, mask: Any = None) -> GradientTransformation:
    r"""Adan (Xie et al., 2022, https://arxiv.org/abs/2208.06677), as ``optax.adan``.

    .. math:: u_t = -\eta \left(\text{adan\_direction}_t + \lambda w_t\right)
       \quad\text{(see :func:`gradtx.scale_by_adan`)}

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, b3, eps, eps_root: as in :func:`gradtx.scale_by_adan`.
      weight_decay: :math:`\lambda`, decoupled (added after the rescaling).
      mask: which leaves to decay (a tree of booleans or a function of the params).
    """
    return chain(
        scale_by_adan(b1, b2, b3, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def lamb(learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-6, eps_root: Any = 0.0,
         weight_decay: ScalarOrSchedule = 0.0, mask: Any = None) -> GradientTransformation:
    r"""LAMB (You et al., 2020, https://arxiv.org/abs/1904.00962), as ``optax.lamb``.

    .. math::
        r_t = \text{adam\_direction}_t + \lambda w_t, \qquad
        u_t = -\eta\, \frac{\lVert w_t \rVert}{\lVert r_t \rVert}\, r_t \quad \text{(per leaf)}

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      b1, b2, eps, eps_root: as in :func:`gradtx.scale_by_adam`.
      weight_decay: :math:`\lambda`.
      mask: which leaves to decay (a tree of booleans or a function of the params).
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def lars(learning_rate: ScalarOrSchedule, weight_decay: ScalarOrSchedule = 0.0, weight_decay_mask: Any = True,
         trust_coefficient: Any = 0.001, eps: Any = 0.0, trust_ratio_mask: Any = True, momentum: Any = 0.9,
         nesterov: bool = False) -> GradientTransformation:
    r"""LARS (You et al., 2017, https://arxiv.org/abs/1708.03888), as ``optax.lars``.

    .. math::
        r_t = g_t + \lambda w_t, \quad
        s_t = -\eta\, \frac{c \lVert w_t \rVert}{\lVert r_t \rVert + \epsilon}\, r_t \quad \text{(per leaf)}, \quad
        u_t = \text{trace}(s_t;\ \mu)

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      weight_decay: :math:`\lambda`.
      weight_decay_mask: which leaves to decay (``True`` for all, a tree of booleans or a function).
      trust_coefficient: :math:`c`.
      eps: added to the norm of :math:`r_t`.
      trust_ratio_mask: which leaves get the trust ratio (``True`` for all, a tree or a function).
      momentum: :math:`\mu`, the momentum applied after the learning rate.
      nesterov: whether that momentum is Nesterov's.
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov),
    )


def fromage(learning_rate: ScalarOrSchedule, min_norm: Any = 1e-6) -> GradientTransformation:
    r"""Fromage (Bernstein et al., 2020, https://arxiv.org/abs/2002.03432), as ``optax.fromage``.

    .. math::
        w_{t+1} = \frac{1}{\sqrt{1+\eta^2}}
                  \left( w_t - \eta\, \frac{\lVert w_t \rVert}{\lVert g_t \rVert}\, g_t \right)
        \quad \text{(per leaf)}

    i.e. a trust-ratio step scaled by :math:`\eta/\sqrt{1+\eta^2}` and a decay of
    :math:`1 - 1/\sqrt{1+\eta^2}` (both from ``fromage_rates``).

    Args:
      learning_rate: :math:`\eta`, a float, an array or a schedule.
      min_norm: the smallest norm either side of the trust ratio is taken to have.
    """
    step_size, decay = fromage_rates(learning_rate)
    return chain(
        scale_by_trust_ratio(min_norm),
        scale_by_learning_rate(step_size),
        add_decayed_weights(decay),
    )
