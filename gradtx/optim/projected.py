r"""pytorch-optimizer's GaLore and SophiaH as declarations over gradtx's transforms.

Both keep torch-style per-parameter state but count steps per *group*
(pytorch-optimizer's ``group["step"]``, which ``state_dict()`` carries in
``param_groups``), and both take ``maximize`` as an optimizer attribute rather
than a group option; as in pytorch-optimizer, maximizing negates each ``p.grad``
in place before the update.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, chain, identity, stateless
from gradtx.optim.optimizer import Optimizer, number
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.decay import decoupled_weight_decay as decay_after_lr
from gradtx.transforms.galore import galore_side, scale_by_galore_projection, scale_by_step_size_ratio
from gradtx.transforms.moments import scale_by_adam
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["GaLore"]


def check_pytorch_optimizer_ranges(group: dict[str, Any], non_negative: tuple[str, ...]) -> None:
    """pytorch-optimizer's checks of ``lr``, ``betas`` and non-negative options, in its words."""
    if number(group["lr"]) < 0.0:
        raise ValueError(f"learning rate must be positive. ({group['lr']} > 0)")
    for i, name in enumerate(("beta1", "beta2")):
        if not 0.0 <= number(group["betas"][i]) < 1.0:
            raise ValueError(f"{name} must be in the range [0.0, 1.0)")
    for name in non_negative:
        if number(group[name]) < 0.0:
            raise ValueError(f"{name} must be non-negative")


def decay_after_step(factor: Any) -> GradientTransformation:
    """Shrinks the *updated* parameters by ``1 - factor``: pytorch-optimizer's ``p.mul_(1 - lr*wd)`` after ``p.add_``.

    Written as an update: ``(p + u)(1 - factor) - p``.
    """
    return stateless(lambda updates, params: jax.tree.map(
        lambda u, p: ((p + u) * (1 - factor) - p).astype(u.dtype), updates, params))


NOT_PROJECTED = "not projected"  # galore_chain's rank when the group gives none (rank=None means full rank)


def galore_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), weight_decay: Any = 0.0, eps: Any = 1e-6,
                 rank: int | None | str = NOT_PROJECTED, update_proj_gap: Any = 50, scale: Any = 1.0,
                 projection_type: str = "std", step: Any = None, use_weight_decay: bool | None = None
                 ) -> GradientTransformation:
    """pytorch-optimizer's GaLore step for one parameter: projected Adam, the step size, decay after the step.

    ``m/(sqrt(v) + eps)`` of the (projected) gradient, projected back, times
    ``lr * sqrt(1 - beta2^t) / (1 - beta1^t)`` with ``t`` the group's ``step`` (None:
    the chain's own count); then the parameter is multiplied by ``1 - lr * weight_decay``.
    A ``rank`` (an int, or None for full rank) projects 2-D parameters with
    :func:`gradtx.scale_by_galore_projection`.
    """
    b1, b2 = betas
    direction = scale_by_adam(b1, b2, eps, bias_correction_mu=False, bias_correction_nu=False)
    if rank != NOT_PROJECTED:
        direction = scale_by_galore_projection(direction, rank, update_proj_gap, scale, projection_type, step)
    use_weight_decay = bool(weight_decay != 0) if use_weight_decay is None else use_weight_decay
    return chain(
        direction,
        scale_by_step_size_ratio(b1, b2, step),
        scale_by_learning_rate(lr),
        decay_after_step(lr * weight_decay) if use_weight_decay else identity(),
    )


class _GroupStep:
    """pytorch-optimizer's group-level step count and in-place maximize, for the declarations below."""

    maximize: bool

    def _update(self) -> None:
        skipped = self.skipped_steps
        previous = [group.get("step", 0) for group in self.param_groups]
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            if self.maximize:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad = -p.grad
        super()._update()
        if self.skipped_steps != skipped:  # a skipped step leaves the counts as they were
            for group, step in zip(self.param_groups, previous):
                group["step"] = step

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), **{name: getattr(self, name) for name in self._attributes}}


class GaLore(_GroupStep, Optimizer):
    r"""pytorch-optimizer's ``GaLore``: AdamW with low-rank gradient projection (https://arxiv.org/abs/2403.03507).

    .. math::
        R_t = P_t^\top G_t \ \text{or}\ G_t Q_t^\top, \quad m_t = \beta_1 m_{t-1} + (1-\beta_1) R_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) R_t^2, \\
        \theta_t = \Bigl(\theta_{t-1} - \gamma\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
        s\,\mathrm{back}\bigl(\tfrac{m_t}{\sqrt{v_t} + \epsilon}\bigr)\Bigr)(1 - \gamma\lambda)

    As in pytorch-optimizer 4.1.0, projection is switched on per param group by
    giving ``rank`` (with ``update_proj_gap``, ``scale`` and ``projection_type``,
    which land in the group as extra keywords): the group's 2-D parameters are
    projected (:func:`gradtx.scale_by_galore_projection`; ``projection_type`` ``"full"``
    is not supported), the others take the plain step. ``t`` is the group's
    ``step``. ``opt.state[p]`` holds ``exp_avg`` and ``exp_avg_sq`` (projected
    shapes) and, for projected parameters, ``projector``: the array
    pytorch-optimizer's ``GaLoreProjector`` object keeps as ``ortho_matrix``. The
    SVD runs in float32 in any dtype, as pytorch-optimizer's does.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      weight_decay: decoupled decay :math:`\lambda`, applied after the step (default 0).
      eps: :math:`\epsilon`, added to :math:`\sqrt{v_t}` (default 1e-6).
      maximize: maximize the objective (negates each ``p.grad`` in place).
      foreach: ``True`` compiles one program per group; ``False`` a per-parameter loop.
      **kwargs: group options: ``rank`` (int or None: all singular vectors),
        ``update_proj_gap``, ``scale``, ``projection_type``.
    """

    chain_builder = staticmethod(galore_chain)
    state_names = {"projector": "projector", "exp_avg": "mu", "exp_avg_sq": "nu"}
    step_name = None  # pytorch-optimizer counts steps per group (group["step"])
    static_options = ("rank",)
    complex_as_real = False
    _attributes = ("maximize",)

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[Any, Any] = (0.9, 0.999),
                 weight_decay: float = 0.0, eps: float = 1e-6, maximize: bool = False,
                 foreach: bool | None = None, **kwargs: Any) -> None:
        self.maximize = maximize
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "eps": eps, "foreach": foreach,
                    **kwargs}
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_pytorch_optimizer_ranges(group, ("weight_decay", "eps"))
        if "rank" in group:
            missing = [k for k in ("update_proj_gap", "scale", "projection_type") if k not in group]
            if missing:
                raise KeyError(f"a GaLore group with a rank also needs {missing} (pytorch-optimizer reads them at "
                               "the first step); pass e.g. update_proj_gap=200, scale=0.25, projection_type='std'")
            galore_side((2, 1), group["projection_type"])
