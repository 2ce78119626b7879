r"""The ``schedulefree`` package's optimizers (1.4) as declarations: AdamWScheduleFree, SGDScheduleFree, RAdamScheduleFree.

Schedule-Free learning: Defazio et al., The Road Less Scheduled, 2024,
https://arxiv.org/abs/2405.15682. As the package's classes (the user-facing ones,
``schedulefree.AdamWScheduleFree`` and so on, not the ``Reference``/``Closure``
variants), these keep the step ``k``, ``lr_max``, ``weight_sum`` and
``scheduled_lr`` in each param group and ``z`` / ``exp_avg_sq`` per parameter;
they start in eval mode, refuse to step until :meth:`train` is called, and
:meth:`train` / :meth:`eval` move the parameters between :math:`y` (where
gradients are taken) and :math:`x` (where to evaluate and save). The step is
:func:`gradtx.schedule_free_step`.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from gradtx import GradientTransformation, schedule_free_step
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer, number

__all__ = ["AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree"]

_NOT_IN_TRAIN_MODE = ("Optimizer was not in train mode when step is called. Please insert .train() and .eval() "
                      "calls on the optimizer. See documentation for details.")


def schedule_free_adamw_chain(scheduled_lr: Any, betas: Any, eps: Any, weight_decay: Any, k: Any, lr_max: Any,
                              weight_sum: Any, r: Any, weight_lr_power: Any) -> GradientTransformation:
    """schedulefree.AdamWScheduleFree's step for one parameter (the group's counters as arguments)."""
    return schedule_free_step(scheduled_lr, betas[0], weight_decay, k, lr_max, weight_sum, r, weight_lr_power,
                              b2=betas[1], eps=eps)


def schedule_free_radam_chain(scheduled_lr: Any, betas: Any, eps: Any, weight_decay: Any, k: Any, lr_max: Any,
                              weight_sum: Any, r: Any, weight_lr_power: Any) -> GradientTransformation:
    """schedulefree.RAdamScheduleFree's step for one parameter: AdamW's, normalised only once rho_t > 4."""
    return schedule_free_step(scheduled_lr, betas[0], weight_decay, k, lr_max, weight_sum, r, weight_lr_power,
                              b2=betas[1], eps=eps, rectify=True)


def schedule_free_sgd_chain(scheduled_lr: Any, momentum: Any, weight_decay: Any, k: Any, lr_max: Any,
                            weight_sum: Any, r: Any, weight_lr_power: Any) -> GradientTransformation:
    """schedulefree.SGDScheduleFree's step for one parameter."""
    return schedule_free_step(scheduled_lr, momentum, weight_decay, k, lr_max, weight_sum, r, weight_lr_power)


def _lerp(start: Any, end: Any, weight: float) -> Any:
    # torch's lerp, which the package uses to move between x and y.
    return start + weight * (end - start) if abs(weight) < 0.5 else end - (end - start) * (1 - weight)


class _ScheduleFree(Optimizer):
    """The package's shared machinery: group counters before each step, and train/eval switching."""

    state_names = {"z": "z", "exp_avg_sq": "nu"}
    step_name = None  # the package keeps its step k in the param group
    saved_group_keys = ("train_mode",)  # a loaded group without it: the package's step raises KeyError
    elementwise = True

    @classmethod
    def _beta1(cls, group: dict[str, Any]) -> float:
        return number(group["betas"][0])

    @classmethod
    def _lr_factor(cls, group: dict[str, Any]) -> float:
        """The package's linear warmup over ``warmup_steps``."""
        k, warmup = group["k"], group["warmup_steps"]
        return (k + 1) / warmup if k < warmup else 1.0

    def _step(self, grads: Any = None, closure: Any = None) -> Any:
        if not self.param_groups[0]["train_mode"]:
            raise Exception(_NOT_IN_TRAIN_MODE)
        saved = [{key: group[key] for key in ("scheduled_lr", "lr_max", "weight_sum")} for group in self.param_groups]
        for group in self.param_groups:  # the package's bookkeeping, in Python floats as it does it
            lr = group["lr"] * self._lr_factor(group)
            group["scheduled_lr"] = lr
            group["lr_max"] = lr_max = max(lr, group["lr_max"])
            group["weight_sum"] = group["weight_sum"] + (group["k"] + 1) ** group["r"] * lr_max ** group["weight_lr_power"]
        try:
            loss = super()._step(grads, closure)
        except BaseException:
            for group, values in zip(self.param_groups, saved):
                group.update(values)
            raise
        for group in self.param_groups:
            group["k"] = group["k"] + 1
        return loss

    def _switch(self, train_mode: bool) -> None:
        state = self.state
        for group in self.param_groups:
            if group["train_mode"] == train_mode:
                continue
            beta1 = self._beta1(group)
            weight = 1 - beta1 if train_mode else 1 - 1 / beta1
            for p in group["params"]:
                if p in state and "z" in state[p]:
                    p.data = _lerp(p.data, jnp.asarray(state[p]["z"], p.dtype), weight)
            group["train_mode"] = train_mode

    def train(self) -> None:
        r"""Puts the parameters at :math:`y = \mathrm{lerp}(x, z, 1-\beta_1)`, where gradients are taken; call before training."""
        self._switch(True)

    def eval(self) -> None:
        r"""Puts the parameters at :math:`x` (:math:`y` moved by :math:`1 - 1/\beta_1` towards :math:`z`): evaluate and save here."""
        self._switch(False)


class AdamWScheduleFree(_ScheduleFree):
    r"""schedulefree.AdamWScheduleFree: Schedule-Free AdamW (Defazio et al., 2024, https://arxiv.org/abs/2405.15682).

    .. math::
        v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad d = \frac{g}{\sqrt{v / (1-\beta_2^{t})} + \epsilon} + \lambda y,
        \quad y \leftarrow \mathrm{lerp}(y, z, c_t) + \gamma_t(\beta_1(1-c_t) - 1)\, d, \quad z \leftarrow z - \gamma_t d

    with :math:`\gamma_t` the warmed-up learning rate and :math:`c_t = t^r\gamma_{\max}^p / \sum w`.
    The same numbers as ``schedulefree.AdamWScheduleFree`` 1.4.1. Call :meth:`train`
    before training (the optimizer starts in eval mode and refuses to step) and
    :meth:`eval` before evaluating or saving. ``opt.state[p]`` holds ``z`` and
    ``exp_avg_sq``; each param group holds ``k``, ``train_mode``, ``weight_sum``,
    ``lr_max`` and ``scheduled_lr`` as the package's do.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate (default 0.0025).
      betas: :math:`(\beta_1, \beta_2)`: the interpolation weight and the second moment's decay (default (0.9, 0.999)).
      eps: added to the denominator (default 1e-8).
      weight_decay: :math:`\lambda`, applied at :math:`y` (default 0).
      warmup_steps: linear learning-rate warmup length (default 0).
      r: polynomial weighting power of the average (default 0).
      weight_lr_power: power of the largest learning rate in the averaging weights (default 2).
      foreach: ``True`` (the package's default) compiles one program per group; ``False`` a per-parameter loop;
        ``None`` one program for all groups.
    """

    chain_builder = staticmethod(schedule_free_adamw_chain)
    chain_options = ("scheduled_lr", "betas", "eps", "weight_decay", "k", "lr_max", "weight_sum", "r",
                     "weight_lr_power")

    def __init__(self, params: Any, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 foreach: bool | None = True) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)


class RAdamScheduleFree(_ScheduleFree):
    r"""schedulefree.RAdamScheduleFree: Schedule-Free RAdam, needing no warmup (https://arxiv.org/abs/2405.15682).

    :class:`AdamWScheduleFree`'s step with RAdam's rectification (Liu et al., 2020,
    https://arxiv.org/abs/1908.03265) in place of warmup: with
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`, the learning rate is scaled by
    :math:`r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}` once
    :math:`\rho_t > 4`; before that the step is SGD's (unnormalised) at the full rate,
    or nothing with ``silent_sgd_phase=True`` (the default: only the moments move).
    The same numbers as ``schedulefree.RAdamScheduleFree`` 1.4.1; state and modes as :class:`AdamWScheduleFree`.

    Args:
      params: parameters or param groups.
      lr: learning rate (default 0.0025).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      eps: added to the denominator (default 1e-8).
      weight_decay: applied at :math:`y` (default 0).
      r: polynomial weighting power (default 0).
      weight_lr_power: power of the learning rate in the averaging weights (default 2).
      foreach: as :class:`AdamWScheduleFree`.
      silent_sgd_phase: no parameter movement while :math:`\rho_t \le 4` (default True).
    """

    chain_builder = staticmethod(schedule_free_radam_chain)
    chain_options = ("scheduled_lr", "betas", "eps", "weight_decay", "k", "lr_max", "weight_sum", "r",
                     "weight_lr_power")

    def __init__(self, params: Any, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 foreach: bool | None = True, silent_sgd_phase: bool = True) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0,
                        scheduled_lr=0.0, weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                        foreach=foreach, silent_sgd_phase=silent_sgd_phase)
        super().__init__(params, defaults)

    @classmethod
    def _lr_factor(cls, group: dict[str, Any]) -> float:
        """RAdam's rectification at step k + 1, or 0/1 (``silent_sgd_phase``) while rho_t <= 4."""
        step, beta2 = group["k"] + 1, number(group["betas"][1])
        beta2_t = beta2**step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
        if rho_t > 4.0:
            return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return float(not group["silent_sgd_phase"])


class SGDScheduleFree(_ScheduleFree):
    r"""schedulefree.SGDScheduleFree: Schedule-Free SGD (Defazio et al., 2024, https://arxiv.org/abs/2405.15682).

    .. math::
        d = g + \lambda y, \quad y \leftarrow \mathrm{lerp}(y, z, c_t) + \gamma_t(\beta(1-c_t) - 1)\, d,
        \quad z \leftarrow z - \gamma_t d

    with :math:`\beta` = ``momentum``. The same numbers as ``schedulefree.SGDScheduleFree``
    1.4.1; ``opt.state[p]`` holds ``z``; modes as :class:`AdamWScheduleFree`.

    Args:
      params: parameters or param groups.
      lr: learning rate (default 1.0).
      momentum: :math:`\beta`, the interpolation weight, in (0, 1) (default 0.9).
      weight_decay: applied at :math:`y` (default 0).
      warmup_steps: linear warmup length (default 0).
      r: polynomial weighting power (default 0).
      weight_lr_power: power of the learning rate in the averaging weights (default 2).
      foreach: as :class:`AdamWScheduleFree`.
    """

    chain_builder = staticmethod(schedule_free_sgd_chain)
    chain_options = ("scheduled_lr", "momentum", "weight_decay", "k", "lr_max", "weight_sum", "r", "weight_lr_power")

    def __init__(self, params: Any, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2,
                 foreach: bool | None = True) -> None:
        defaults = dict(lr=lr, momentum=momentum, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, "lr", "weight_decay", nan_passes=True)  # schedulefree's `if lr < 0.0`
        if number(group["momentum"]) <= 0 or number(group["momentum"]) >= 1:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {group['momentum']}")

    @classmethod
    def _beta1(cls, group: dict[str, Any]) -> float:
        return number(group["momentum"])
