"""CyclicLR and OneCycleLR: schedules that also cycle momentum (or Adam's beta1)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from gradtx.optim.lr_scheduler._base import (
    LRScheduler,
    _callable_state,
    _check_optimizer,
    _load_callable_states,
    _per_group,
    _scalar_or_none,
)

__all__ = ["CyclicLR", "OneCycleLR"]


class _MomentumCycler(LRScheduler):
    """CyclicLR and OneCycleLR: cycle ``momentum`` (or ``betas[0]`` for Adam-like optimizers) against the lr."""

    cycle_momentum: bool = False

    def _setup_momentum(self, optimizer: Any, base_momentum: Any, max_momentum: Any, last_epoch: int) -> None:
        defaults = getattr(optimizer, "defaults", {})
        if "momentum" not in defaults and "betas" not in defaults:
            raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
        self.use_beta1 = "betas" in defaults
        self._momentum_defaults = (_scalar_or_none(base_momentum), _scalar_or_none(max_momentum))
        self.base_momentums = _per_group("base_momentum", optimizer, base_momentum)
        self.max_momentums = _per_group("max_momentum", optimizer, max_momentum)
        if last_epoch == -1:
            for group, low, high in zip(optimizer.param_groups, self.base_momentums, self.max_momentums):
                self._write_momentum(group, high)
                group["max_momentum"] = high
                group["base_momentum"] = low

    def _add_momentum_group(self, group: dict) -> None:
        low = self._group_value(group, "base_momentum", self._momentum_defaults[0])
        high = self._group_value(group, "max_momentum", self._momentum_defaults[1])
        self.base_momentums.append(low)
        self.max_momentums.append(high)
        group["base_momentum"], group["max_momentum"] = low, high

    def _write_momentum(self, group: dict, value: Any) -> None:
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _set_momenta(self, values: Sequence[Any]) -> None:
        for group, value in zip(self.optimizer.param_groups, values):
            self._write_momentum(group, value)
        self._last_momentum = list(values)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.pop("_last_momentum", None)  # a state from torch has none: keep the groups' momenta
        super().load_state_dict(state_dict)

    def _restore_groups(self) -> None:
        super()._restore_groups()
        if self.cycle_momentum and hasattr(self, "_last_momentum"):
            self._set_momenta(self._last_momentum)


class CyclicLR(_MomentumCycler):
    """A triangular lr wave, momentum in the opposite phase (``torch.optim.lr_scheduler.CyclicLR``).

    Smith, Cyclical Learning Rates (https://arxiv.org/abs/1506.01186). Closed form
    :func:`gradtx.cyclic_schedule` and :func:`gradtx.cyclic_momentum_schedule`.

    Args:
      optimizer: the optimizer.
      base_lr: the bottom of the wave (a float, or a list of one per group).
      max_lr: the top of the wave (a float or a list).
      step_size_up: steps of the rise.
      step_size_down: steps of the fall (default ``step_size_up``).
      mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``.
      gamma: the base of ``'exp_range'``.
      scale_fn: a custom amplitude function (then ``mode`` is ignored).
      scale_mode: ``'cycle'`` or ``'iterations'``: what ``scale_fn`` receives.
      cycle_momentum: cycle ``momentum`` (or ``betas[0]``) between ``max_momentum`` and ``base_momentum``.
      base_momentum: the momentum at the lr's peak (float or list).
      max_momentum: the momentum at the lr's bottom (float or list).
      last_epoch: see :class:`LRScheduler`.
    """

    _unsaved = ("optimizer", "_scale_fn_custom")

    def __init__(self, optimizer: Any, base_lr: Any, max_lr: Any, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: Any = 0.8, max_momentum: Any = 0.9,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        self._lr_defaults = (_scalar_or_none(base_lr), _scalar_or_none(max_lr))
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode if scale_fn is not None else ("iterations" if mode == "exp_range" else "cycle")
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self._setup_momentum(optimizer, base_momentum, max_momentum, last_epoch)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def scale_fn(self, x: float) -> float:
        """The amplitude's scale at ``x`` (the cycle or the step, as ``scale_mode`` says)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def _add_group(self, group: dict) -> None:
        base_lr = self._group_value(group, "base_lr", self._lr_defaults[0])
        group.setdefault("initial_lr", base_lr)
        self.base_lrs.append(base_lr)
        self.max_lrs.append(self._group_value(group, "max_lr", self._lr_defaults[1]))
        if self.cycle_momentum:
            self._add_momentum_group(group)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        height = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base_lr + (max_lr - base_lr) * height * scale for base_lr, max_lr in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            self._set_momenta([high - (high - low) * height * scale
                               for low, high in zip(self.base_momentums, self.max_momentums)])
        return lrs

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_scale_fn_custom"] = _callable_state(self._scale_fn_custom)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("_scale_fn_custom", None)
        super().load_state_dict(state)
        _load_callable_states([self._scale_fn_custom], [saved])


class OneCycleLR(_MomentumCycler):
    """The 1cycle policy (``torch.optim.lr_scheduler.OneCycleLR``; :func:`gradtx.onecycle_schedule`).

    Smith & Topin, Super-Convergence (https://arxiv.org/abs/1708.07120). Momentum:
    :func:`gradtx.onecycle_momentum_schedule`.

    Args:
      optimizer: the optimizer.
      max_lr: the peak lr (float or list).
      total_steps: steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
      epochs: with ``steps_per_epoch``, ``total_steps = epochs * steps_per_epoch``.
      steps_per_epoch: see ``epochs``.
      pct_start: the fraction of the cycle spent rising.
      anneal_strategy: ``'cos'`` or ``'linear'``.
      cycle_momentum: cycle ``momentum`` (or ``betas[0]``) against the lr.
      base_momentum: the momentum at the peak (float or list).
      max_momentum: the momentum at the start and end (float or list).
      div_factor: ``initial_lr = max_lr / div_factor``.
      final_div_factor: ``min_lr = initial_lr / final_div_factor``.
      three_phase: fall back to ``initial_lr`` before the final decay.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, max_lr: Any, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: Any = 0.85, max_momentum: Any = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        # torch's phases: the last step of each, and the group keys of the values at its start and end
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        rise = (float(pct_start * self.total_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum")
        if three_phase:
            phases = [rise,
                      (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr", "base_momentum",
                       "max_momentum"),
                      (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            phases = [rise, (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self._schedule_phases = [dict(zip(keys, phase)) for phase in phases]
        if not isinstance(pct_start, float) or pct_start < 0 or pct_start > 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy
        self._div_factors = (div_factor, final_div_factor)
        self._max_lr_default = _scalar_or_none(max_lr)
        if last_epoch == -1:
            for group, peak in zip(optimizer.param_groups, _per_group("max_lr", optimizer, max_lr)):
                self._set_group_lrs(group, peak)
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self._setup_momentum(optimizer, base_momentum, max_momentum, last_epoch)
        super().__init__(optimizer, last_epoch)

    def _set_group_lrs(self, group: dict, peak: Any) -> None:
        div_factor, final_div_factor = self._div_factors
        group["initial_lr"] = peak / div_factor
        group["max_lr"] = peak
        group["min_lr"] = group["initial_lr"] / final_div_factor

    def _add_group(self, group: dict) -> None:
        if "initial_lr" not in group or "min_lr" not in group:
            self._set_group_lrs(group, self._group_value(group, "max_lr", self._max_lr_default))
        self.base_lrs.append(group["initial_lr"])
        if self.cycle_momentum:
            self._add_momentum_group(group)

    def _anneal(self, start: Any, end: Any, pct: float) -> Any:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps is {self.total_steps}")
        lrs, momenta = [], []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if step <= end or i == len(self._schedule_phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        momenta.append(self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct))
                    break
                start = end
        if self.cycle_momentum:
            self._set_momenta(momenta)
        return lrs
