"""torch.optim.SGD as a declaration over gradtx's transforms."""

from __future__ import annotations

from typing import Any


from gradtx import (
    GradientTransformation, add_decayed_weights, chain, identity, negate_if, scale_by_learning_rate, trace,
)
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["SGD"]


def sgd_chain(lr: Any = 1e-3, momentum: Any = 0.0, dampening: Any = 0.0, weight_decay: Any = 0.0,
              nesterov: bool = False, maximize: bool = False, use_momentum: bool | None = None,
              use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.SGD's step for one parameter group, as a chain.

    ``maximize -> coupled L2 decay -> trace(torch_init=True) -> -lr``. The
    ``use_*`` flags say whether a stage exists at all (torch keeps no momentum
    buffer when ``momentum == 0``); they default to whether the value is non-zero,
    and callers that pass traced values set them explicitly.
    """
    use_momentum = bool(momentum != 0) if use_momentum is None else use_momentum
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    return chain(
        negate_if(maximize),
        add_decayed_weights(weight_decay) if use_weight_decay else identity(),
        trace(momentum, nesterov, dampening=dampening, torch_init=True) if use_momentum else identity(),
        scale_by_learning_rate(lr),
    )


class SGD(Optimizer):
    r"""torch.optim.SGD: stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda \theta_{t-1}, \quad
        b_t = \begin{cases} g_t & t = 1 \\ \mu b_{t-1} + (1-\tau) g_t & t > 1 \end{cases}, \quad
        \theta_t = \theta_{t-1} - \gamma \cdot \begin{cases} g_t + \mu b_t & \text{nesterov} \\
        b_t & \text{otherwise} \end{cases}

    The same numbers as torch 2.13's ``SGD`` (Nesterov momentum after Sutskever et
    al., 2013, http://www.cs.toronto.edu/~hinton/absps/momentum.pdf); the step is
    :func:`sgd_chain`. ``opt.state[p]`` holds ``momentum_buffer`` when ``momentum != 0``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      momentum: momentum factor :math:`\mu` (default 0).
      dampening: dampening :math:`\tau` for momentum (default 0).
      weight_decay: L2 penalty :math:`\lambda` (default 0).
      nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
      maximize: maximize the objective instead of minimizing it.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      differentiable: accepted for torch compatibility (JAX can differentiate any step).
      fused: ``True`` or ``None`` (with ``foreach=None``): one program for all groups.
    """

    chain_builder = staticmethod(sgd_chain)
    chain_options = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    switches = ('momentum', 'weight_decay')
    state_names = {"momentum_buffer": "trace"}
    elementwise = True
    step_name = None  # torch's SGD keeps no step

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: Any = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize, "foreach": foreach,
                    "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "momentum", "weight_decay", nan_passes=True)  # torch's `if lr < 0.0`
        if group["nesterov"] and (number(group["momentum"]) <= 0 or number(group["dampening"]) != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
