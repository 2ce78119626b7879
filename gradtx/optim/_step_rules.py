"""torch.optim.Rprop and ASGD as declarations over gradtx's transforms."""

from __future__ import annotations

from typing import Any


from gradtx import (
    GradientTransformation, add_decayed_weights, chain, identity, negate_if, scale, scale_by_asgd, scale_by_rprop,
)
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["Rprop", "ASGD"]


def rprop_chain(lr: Any = 1e-2, etas: Any = (0.5, 1.2), step_sizes: Any = (1e-6, 50), maximize: bool = False
                ) -> GradientTransformation:
    """torch.optim.Rprop's step for one parameter group, as a chain.

    ``maximize -> scale_by_rprop(clamp_always=True) -> -1``. The chain's Rprop state
    holds torch's ``step`` (``count``), ``step_size`` (``step_sizes``) and ``prev``
    (``prev_grads``).
    """
    eta_minus, eta_plus = etas
    min_step, max_step = step_sizes
    return chain(
        negate_if(maximize),
        scale_by_rprop(lr, eta_minus, eta_plus, min_step, max_step, clamp_always=True, lagged=False),
        scale(-1.0),
    )


def asgd_chain(lr: Any = 1e-2, lambd: Any = 1e-4, alpha: Any = 0.75, t0: Any = 1e6, weight_decay: Any = 0.0,
               maximize: bool = False, use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.ASGD's step for one parameter group, as a chain.

    ``maximize -> coupled L2 decay -> scale_by_asgd``. The chain's ASGD state holds
    torch's ``step`` (``count``), ``eta``, ``mu`` and ``ax``. ``use_weight_decay``
    says whether the decay stage exists (default: whether ``weight_decay`` is
    non-zero); callers that pass traced values set it explicitly.
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    return chain(
        negate_if(maximize),
        add_decayed_weights(weight_decay) if use_weight_decay else identity(),
        scale_by_asgd(lr, lambd, alpha, t0),
    )


class Rprop(Optimizer):
    r"""torch.optim.Rprop: resilient backpropagation (Riedmiller & Braun, 1993, https://doi.org/10.1109/ICNN.1993.298623).

    .. math::
        s = g_t g_{t-1}, \quad
        \Delta_t = \mathrm{clip}\left(\Delta_{t-1} \cdot
            \begin{cases} \eta_+ & s > 0 \\ \eta_- & s < 0 \\ 1 & s = 0 \end{cases},
            \Delta_{\min}, \Delta_{\max}\right), \quad
        g_t \leftarrow 0 \text{ where } s < 0, \quad
        \theta_t = \theta_{t-1} - \Delta_t \operatorname{sign}(g_t)

    with :math:`\Delta_0` = ``lr``. The same numbers as torch 2.13's ``Rprop``; the
    step is :func:`rprop_chain`. ``opt.state[p]`` holds ``step``, ``prev`` and ``step_size``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: the initial step size (default 1e-2).
      etas: :math:`(\eta_-, \eta_+)`, the factors shrinking and growing the step sizes (default (0.5, 1.2)).
      step_sizes: :math:`(\Delta_{\min}, \Delta_{\max})` (default (1e-6, 50)).
      capturable: accepted for torch compatibility (every step is a compiled program).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      differentiable: accepted for torch compatibility.
    """

    chain_builder = staticmethod(rprop_chain)
    chain_options = ("lr", "etas", "step_sizes", "maximize")
    state_names = {"prev": "prev_grads", "step_size": "step_sizes"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False) -> None:
        defaults = {"lr": lr, "etas": etas, "step_sizes": step_sizes, "foreach": foreach, "maximize": maximize,
                    "differentiable": differentiable, "capturable": capturable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr")
        etas = group["etas"]
        if not 0.0 < number(etas[0]) < 1.0 < number(etas[1]):
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")


class ASGD(Optimizer):
    r"""torch.optim.ASGD: averaged stochastic gradient descent (Polyak & Juditsky, 1992, https://doi.org/10.1137/0330046).

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + w \theta_{t-1}, \quad
        \theta_t = (1 - \lambda \eta_t)\theta_{t-1} - \eta_t g_t, \quad
        \bar\theta_t = \bar\theta_{t-1} + \mu_t (\theta_t - \bar\theta_{t-1}), \\
        \eta_{t+1} = \frac{\gamma}{(1 + \lambda \gamma t)^{\alpha}}, \quad
        \mu_{t+1} = \frac{1}{\max(1, t - t_0)}, \quad \eta_1 = \gamma, \ \mu_1 = 1

    The same numbers as torch 2.13's ``ASGD``; the step is :func:`asgd_chain`.
    ``opt.state[p]`` holds ``step``, ``eta``, ``mu`` (float32 scalars, as torch's)
    and ``ax``, the averaged parameters.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-2).
      lambd: decay term :math:`\lambda` (default 1e-4).
      alpha: power :math:`\alpha` of the step-size decay (default 0.75).
      t0: the step :math:`t_0` at which averaging starts (default 1e6).
      weight_decay: L2 penalty :math:`w` (default 0).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      differentiable: accepted for torch compatibility.
      capturable: accepted for torch compatibility (every step is a compiled program).
    """

    chain_builder = staticmethod(asgd_chain)
    chain_options = ("lr", "lambd", "alpha", "t0", "weight_decay", "maximize")
    elementwise = True
    switches = ('weight_decay',)
    state_names = {"eta": "eta", "mu": "mu", "ax": "ax"}

    def __init__(self, params: Any, lr: Any = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
                 weight_decay: float = 0, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False) -> None:
        defaults = {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0, "weight_decay": weight_decay,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
                    "capturable": capturable}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "weight_decay")
