"""torch.optim.Adam and AdamW as declarations over gradtx's transforms."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradtx import (
    GradientTransformation, add_decayed_weights, chain, identity, negate_if, scale_by_adam, scale_by_learning_rate,
    decoupled_weight_decay as decay_after_lr,
)
from gradtx.optim._params import is_array
from gradtx.optim._declare import check_tensor_lr, check_torch_ranges
from gradtx.optim._optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


def torch_adam_family(direction: GradientTransformation, lr: Any, weight_decay: Any, decoupled_weight_decay: bool,
                      maximize: bool, use_weight_decay: bool | None) -> GradientTransformation:
    """torch's shared Adam-family step around a ``direction``: ``maximize -> (+wd*p) -> direction -> -lr -> (-lr*wd*p)``.

    Coupled decay (torch's ``weight_decay``) is added to the gradient before the
    direction; decoupled decay (AdamW, and ``decoupled_weight_decay=True`` in
    Adam/NAdam/RAdam) is torch's ``p.mul_(1 - lr*wd)`` before the step, written as
    an update after the learning rate. ``use_weight_decay`` says whether a decay
    stage exists (defaults to ``weight_decay != 0``; callers passing traced values set it).
    """
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    coupled = use_weight_decay and not decoupled_weight_decay
    decoupled = use_weight_decay and decoupled_weight_decay
    return chain(
        negate_if(maximize),
        add_decayed_weights(weight_decay) if coupled else identity(),
        direction,
        scale_by_learning_rate(lr),
        decay_after_lr(weight_decay, lr) if decoupled else identity(),
    )


def adam_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 0.0,
               amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False,
               use_weight_decay: bool | None = None) -> GradientTransformation:
    """torch.optim.Adam's step for one parameter group (AdamW's with ``decoupled_weight_decay=True``).

    :func:`torch_adam_family` around ``scale_by_adam`` (amsgrad keeping the maximum of the raw second moment).
    """
    b1, b2 = betas
    direction = scale_by_adam(b1, b2, eps, amsgrad=amsgrad, amsgrad_max_of="raw")
    return torch_adam_family(direction, lr, weight_decay, decoupled_weight_decay, maximize, use_weight_decay)


def adamw_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8, weight_decay: Any = 1e-2,
                amsgrad: bool = False, maximize: bool = False, use_weight_decay: bool | None = None
                ) -> GradientTransformation:
    """torch.optim.AdamW's step: :func:`adam_chain` with decoupled decay."""
    return adam_chain(lr, betas, eps, weight_decay, amsgrad, maximize, True, use_weight_decay)


def _check_adam(group: dict[str, Any]) -> None:
    """torch.optim.Adam's checks, in torch's order and words."""
    lr, betas, foreach, capturable = group["lr"], group["betas"], group["foreach"], group["capturable"]
    if is_array(lr):
        if foreach and not capturable:
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        check_tensor_lr(lr)
    check_torch_ranges(group, "lr", "eps", "betas", "weight_decay")
    # torch's rule, with schedules (gradtx's extension) allowed beside either kind.
    numbers = [b for b in betas[:2] if not callable(b)]
    if not (all(isinstance(b, float) for b in numbers) or all(is_array(b) for b in numbers)):
        raise ValueError("betas must be either both floats or both Tensors")
    for i in (0, 1):
        if is_array(betas[i]):
            if not capturable and foreach:
                raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
            if np.size(betas[i]) != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")


class Adam(Optimizer):
    r"""torch.optim.Adam (Kingma & Ba, 2015, https://arxiv.org/abs/1412.6980), with AMSGrad and decoupled decay options.

    .. math::
        g_t \leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \theta_t = \theta_{t-1} - \gamma \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t / (1-\beta_2^t)} + \epsilon},
        \quad \hat v_t = \max(\hat v_{t-1}, v_t) \text{ (amsgrad) or } v_t

    The same numbers as torch 2.13's ``Adam``; the step is :func:`adam_chain`.
    With ``decoupled_weight_decay=True`` the decay is AdamW's,
    :math:`\theta \leftarrow \theta(1 - \gamma\lambda)` before the step, instead of
    the L2 term in :math:`g_t`. AMSGrad: Reddi et al., 2018,
    https://openreview.net/forum?id=ryQu7f-RZ. ``opt.state[p]`` holds ``step``,
    ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      betas: :math:`(\beta_1, \beta_2)`, the moments' decay rates (default (0.9, 0.999)).
      eps: :math:`\epsilon`, added to the denominator (default 1e-8).
      weight_decay: :math:`\lambda` (default 0).
      amsgrad: divide by the running maximum of the second moment.
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      maximize: maximize the objective instead of minimizing it.
      capturable: accepted for torch compatibility (every step is a compiled program).
      differentiable: accepted for torch compatibility.
      fused: ``True`` or ``None`` (with ``foreach=None``): one program for all groups.
      decoupled_weight_decay: AdamW's decay instead of L2.

    Beyond torch, ``lr``, either beta, ``eps`` and ``weight_decay`` may be schedules
    ``step -> value`` (``step``: the steps this parameter has taken before this one),
    evaluated per parameter inside the compiled step; bias corrections use the current
    value, :math:`1-\beta_1(t)^t` (see :func:`gradtx.scale_by_adam`). A schedule is a
    static option: replacing it recompiles, editing a number does not.
    """

    chain_builder = staticmethod(adam_chain)
    chain_options = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")
    switches = ('weight_decay',)
    state_names = {"exp_avg": "mu", "exp_avg_sq": "nu", "max_exp_avg_sq": "nu_max"}
    elementwise = True

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[Any, Any] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        _check_adam(group)


class AdamW(Adam):
    r"""torch.optim.AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019, https://arxiv.org/abs/1711.05101).

    .. math::
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda), \quad
        \theta_t = \theta_{t-1} - \gamma \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t / (1-\beta_2^t)} + \epsilon}

    :class:`Adam` with ``decoupled_weight_decay=True`` and torch's default
    ``weight_decay=1e-2``; as torch's, loading a state dict keeps
    ``decoupled_weight_decay=True``. Args as :class:`Adam`.
    """

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[Any, Any] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
