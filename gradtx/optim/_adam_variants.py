"""torch.optim.NAdam and RAdam as declarations over gradtx's transforms."""

from __future__ import annotations

from typing import Any


from gradtx import GradientTransformation, scale_by_nadam, scale_by_radam
from gradtx.optim._adam import torch_adam_family
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer

__all__ = ["NAdam", "RAdam"]


def nadam_chain(lr: Any = 2e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
                momentum_decay: Any = 4e-3, decoupled_weight_decay: bool = False, maximize: bool = False,
                use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.NAdam's step for one parameter group, as a chain.

    Coupled: ``maximize -> +wd*p -> scale_by_nadam -> -lr``. Decoupled
    (``decoupled_weight_decay=True``, torch's NAdamW): ``maximize -> scale_by_nadam
    -> -lr -> -lr*wd*p``, i.e. ``p.mul_(1 - lr*wd)`` before the step. The chain's
    state holds torch's ``step``, ``mu_product`` (float32, as torch keeps it),
    ``exp_avg`` and ``exp_avg_sq`` as ``count``, ``mu_product``, ``mu``, ``nu``.
    ``use_weight_decay`` says whether a decay stage exists (defaults to ``weight_decay != 0``;
    callers passing traced values set it).
    """
    b1, b2 = betas
    return torch_adam_family(scale_by_nadam(b1, b2, eps, momentum_decay), lr, weight_decay,
                            decoupled_weight_decay, maximize, use_weight_decay)


def radam_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
                decoupled_weight_decay: bool = False, maximize: bool = False,
                use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.RAdam's step for one parameter group, as a chain.

    The direction is ``scale_by_radam(eps_on_raw=True, strict_threshold=True)``
    (torch adds ``eps`` to the root of the raw second moment and rectifies when
    ``rho_t > 5``); weight decay, ``maximize`` and the learning rate are placed as
    in :func:`nadam_chain`. State: torch's ``step``, ``exp_avg``, ``exp_avg_sq`` as
    ``count``, ``mu``, ``nu``.
    """
    b1, b2 = betas
    direction = scale_by_radam(b1, b2, eps, threshold=5.0, eps_on_raw=True, strict_threshold=True)
    return torch_adam_family(direction, lr, weight_decay, decoupled_weight_decay, maximize, use_weight_decay)


class NAdam(Optimizer):
    r"""torch.optim.NAdam: Adam with Nesterov momentum.

    Dozat, 2016, *Incorporating Nesterov Momentum into Adam*, https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        \mu_t = \beta_1 \left(1 - \tfrac12\, 0.96^{t \psi}\right), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \theta_t = \theta_{t-1} - \gamma \frac{1}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}
            \left( \frac{1-\mu_t}{1-\prod_{i \le t}\mu_i} g_t + \frac{\mu_{t+1}}{1-\prod_{i \le t+1}\mu_i} m_t \right)

    The same numbers as torch 2.13's ``NAdam``; the step is :func:`nadam_chain`
    (direction :func:`gradtx.scale_by_nadam`). With ``decoupled_weight_decay=True``
    the decay is NAdamW's, :math:`\theta \leftarrow \theta(1 - \gamma\lambda)` before
    the step, instead of the L2 term in :math:`g_t`. ``opt.state[p]`` holds
    ``step``, ``mu_product`` (a float32 scalar, as torch's), ``exp_avg`` and ``exp_avg_sq``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 2e-3).
      betas: :math:`(\beta_1, \beta_2)`, the moments' decay rates (default (0.9, 0.999)).
      eps: :math:`\epsilon`, added to the denominator (default 1e-8).
      weight_decay: :math:`\lambda` (default 0).
      momentum_decay: :math:`\psi`, the momentum schedule's rate (default 4e-3).
      decoupled_weight_decay: NAdamW's decay instead of L2.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      capturable: accepted for torch compatibility (every step is a compiled program).
      differentiable: accepted for torch compatibility.
    """

    chain_builder = staticmethod(nadam_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize")
    elementwise = True
    switches = ('weight_decay',)
    state_names = {"mu_product": "mu_product", "exp_avg": "mu", "exp_avg_sq": "nu"}

    def __init__(self, params: Any, lr: Any = 2e-3, betas: tuple[Any, Any] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "momentum_decay": momentum_decay, "decoupled_weight_decay": decoupled_weight_decay,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "eps", "betas", "weight_decay", "momentum_decay")


class RAdam(Optimizer):
    r"""torch.optim.RAdam: rectified Adam (Liu et al., 2020, https://arxiv.org/abs/1908.03265).

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}, \\
        \theta_t = \theta_{t-1} - \gamma\, \hat m_t \cdot
            \begin{cases} r_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
                           1 & \text{otherwise} \end{cases}

    The same numbers as torch 2.13's ``RAdam``; the step is :func:`radam_chain`
    (direction :func:`gradtx.scale_by_radam` with torch's eps placement and strict
    threshold). With ``decoupled_weight_decay=True`` the decay is
    :math:`\theta \leftarrow \theta(1 - \gamma\lambda)` before the step.
    ``opt.state[p]`` holds ``step``, ``exp_avg`` and ``exp_avg_sq``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      betas: :math:`(\beta_1, \beta_2)`, the moments' decay rates (default (0.9, 0.999)).
      eps: :math:`\epsilon`, added to the denominator (default 1e-8).
      weight_decay: :math:`\lambda` (default 0).
      decoupled_weight_decay: AdamW-style decay instead of L2.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      capturable: accepted for torch compatibility (every step is a compiled program).
      differentiable: accepted for torch compatibility.
    """

    chain_builder = staticmethod(radam_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "maximize")
    switches = ('weight_decay',)
    state_names = {"exp_avg": "mu", "exp_avg_sq": "nu"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[Any, Any] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": capturable, "decoupled_weight_decay": decoupled_weight_decay,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "eps", "betas", "weight_decay")
