"""torch.optim.lr_scheduler for the facade: the same classes, arguments, numbers and state_dicts.

A scheduler edits ``optimizer.param_groups[i]["lr"]`` (a Python float; with
momentum cycling also ``"momentum"`` or ``betas[0]``); the facade's compiled step
reads these as array arguments, so a scheduler never causes a recompilation.

The numbers are torch's: where torch's ``get_lr`` is recursive ("chainable":
it multiplies the group's current lr) so is ours, with the same operations in
the same order, so schedulers compose with each other and with manual edits
of ``lr`` exactly as in torch. The same rules in closed form, as pure
functions of the step for the functional face, are in :mod:`gradtx.schedules`
(each class names its schedule).

Where torch has traps, these classes do not (issue 10, point 6):

- a :class:`SequentialLR` or :class:`ChainedScheduler` may be a child of a
  :class:`SequentialLR` (torch raises or computes wrong values);
- ``load_state_dict`` resumes exactly: it also writes the saved lrs (and cycled
  momenta) back into the param groups, so resuming does not depend on loading the
  optimizer's state first, and every ``state_dict`` can be pickled;
- a param group added with ``optimizer.add_param_group`` after the scheduler was
  built joins the schedule (its ``lr`` becomes its base lr; per-group arguments
  given as lists are read from the group's own keys, e.g. ``{"max_lr": ...}``).

Warnings are torch's: ``scheduler.step()`` before the first ``optimizer.step()``
(read from the facade optimizer's ``_opt_called``), passing ``epoch`` to
``step``, and calling ``get_lr()`` outside of ``step``.
"""

from __future__ import annotations

import copy
import math
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "SequentialLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where possible. "
    "Please use `scheduler.step()` to step the scheduler. During the deprecation, if epoch is different from "
    "None, the closed form is used instead of the new chainable form, where available."
)
ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. You should call them in the opposite "
    "order: `optimizer.step()` before `lr_scheduler.step()`. Failure to do this will result in skipping the "
    "first value of the learning rate schedule."
)


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _per_group(name: str, optimizer: Any, value: Any) -> list[Any]:
    """``value`` repeated for every group, or the list given (one per group)."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. {name} has {len(value)} values, "
                f"param_groups has {len(optimizer.param_groups)}."
            )
        return list(value)
    return [value] * len(optimizer.param_groups)


def _scalar_or_none(value: Any) -> Any:
    """What a group added later takes for an argument: the scalar given, or ``None`` for a per-group list."""
    return None if isinstance(value, (list, tuple)) else value


def _lrs(optimizer: Any) -> list[Any]:
    return [group["lr"] for group in optimizer.param_groups]


def _callable_state(fn: Any) -> Any:
    """What a state_dict keeps of a user function: nothing for functions, the attributes of callable objects."""
    return None if fn is None or isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__)


def _load_callable_states(fns: Sequence[Any], saved: Sequence[Any]) -> None:
    """Gives callable objects back the attributes :func:`_callable_state` saved."""
    for fn, attributes in zip(fns, saved):
        if attributes is not None and fn is not None:
            fn.__dict__.update(copy.deepcopy(attributes))


class LRScheduler:
    """The base class: ``step()``, ``get_last_lr()``, ``last_epoch``, ``base_lrs``, state_dicts.

    Follows ``torch.optim.lr_scheduler.LRScheduler``. A subclass implements
    ``get_lr()`` (the lrs at ``self.last_epoch``; recursive or closed form) and,
    optionally, ``_get_closed_form_lr()`` used by the deprecated ``step(epoch)``.

    Args:
      optimizer: a facade optimizer (anything with torch-style ``param_groups``).
      last_epoch: the index of the last step when resuming; ``-1`` starts afresh
        (then each group's ``initial_lr`` is set to its ``lr``).
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False
    _unsaved: tuple[str, ...] = ("optimizer",)  # attributes that state_dict leaves out (or saves its own way)

    def __init__(self, optimizer: Any, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming scheduler with "
                        "last_epoch >= 0. Load the optimizer's state_dict first, or build the scheduler with "
                        "last_epoch=-1 and load the scheduler's state_dict."
                    )
        self.base_lrs: list[Any] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    # -- stepping ---------------------------------------------------------------------------------------------
    def _initial_step(self) -> None:
        """The step every constructor takes: the values at ``last_epoch + 1``, in 'initial' mode."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def _begin(self) -> None:
        """Starts the schedule anew at step 0 from the groups' current lrs (as when it was built)."""
        self.last_epoch = -1
        self._initial_step()

    def _jump_to_start(self) -> None:
        """Moves to step 0 from the base lrs: torch's ``SequentialLR`` at a milestone."""
        self._update_lr(0)

    def _warn_order(self) -> None:
        if self._step_count == 1 and not getattr(self.optimizer, "_opt_called", False):
            warnings.warn(ORDER_WARNING, UserWarning, stacklevel=3)

    def step(self, epoch: int | None = None) -> None:
        """Advances one step (or, deprecated, to ``epoch`` with the closed form) and sets the groups' lrs."""
        self._warn_order()
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        self._sync_groups()
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        self._set_lrs(values)

    def _set_lrs(self, values: Sequence[Any]) -> None:
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(f"{type(self).__name__} computed {len(values)} lrs for {len(groups)} param groups")
        for group, lr in zip(groups, values):
            group["lr"] = lr
        self._last_lr = _lrs(self.optimizer)

    def get_lr(self) -> list[Any]:
        """The lrs at ``last_epoch``; called by ``step``. To read the current lrs use :meth:`get_last_lr`."""
        raise NotImplementedError

    def _warn_get_lr(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                          UserWarning, stacklevel=3)

    def get_last_lr(self) -> list[Any]:
        """The lrs this scheduler set last, one per param group."""
        return self._last_lr

    # -- param groups added after the scheduler was built ---------------------------------------------------
    def _sync_groups(self) -> None:
        for group in self.optimizer.param_groups[len(self.base_lrs):]:
            self._add_group(group)

    def _add_group(self, group: dict) -> None:
        """Makes a group added with ``add_param_group`` part of the schedule; subclasses add their lists."""
        group.setdefault("initial_lr", group["lr"])
        self.base_lrs.append(group["initial_lr"])

    def _group_value(self, group: dict, key: str, default: Any) -> Any:
        """A new group's ``key``: its own entry, or the scalar argument; an error for a per-group list."""
        if key in group:
            return group[key]
        if default is None:
            raise ValueError(
                f"{type(self).__name__} was given one {key} per param group, and a group added later has none: "
                f"add the group with its own value, optimizer.add_param_group({{'params': ..., '{key}': ...}})"
            )
        return default

    # -- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (picklable: user functions are dropped, callable objects keep their attributes)."""
        return copy.deepcopy({key: value for key, value in self.__dict__.items() if key not in self._unsaved})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the state and writes the saved lrs back into the param groups, so the next step resumes exactly."""
        self.__dict__.update(copy.deepcopy(state_dict))
        self._restore_groups()

    def _restore_groups(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, getattr(self, "_last_lr", [])):
            group["lr"] = lr


class _LambdaScheduler(LRScheduler):
    """LambdaLR and MultiplicativeLR: one user function per group, kept out of the state_dict."""

    _unsaved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer: Any, lr_lambda: Any, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        self._one_lambda = not isinstance(lr_lambda, (list, tuple))
        super().__init__(optimizer, last_epoch)

    def _add_group(self, group: dict) -> None:
        super()._add_group(group)
        self.lr_lambdas.append(self._group_value(group, "lr_lambda", self.lr_lambdas[0] if self._one_lambda else None))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = [_callable_state(fn) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("lr_lambdas")
        super().load_state_dict(state)
        _load_callable_states(self.lr_lambdas, saved)


class LambdaLR(_LambdaScheduler):
    """lr = base_lr * lr_lambda(step) (``torch.optim.lr_scheduler.LambdaLR``; closed form :func:`gradtx.lambda_schedule`).

    Args:
      optimizer: the optimizer.
      lr_lambda: a function of the step, or a list of one per group.
      last_epoch: see :class:`LRScheduler`.
    """

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaScheduler):
    """lr *= lr_lambda(step) each step (``torch.optim.lr_scheduler.MultiplicativeLR``; :func:`gradtx.multiplicative_schedule`).

    Args:
      optimizer: the optimizer.
      lr_lambda: a function of the step giving the factor, or a list of one per group.
      last_epoch: see :class:`LRScheduler`.
    """

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self._is_initial:
            return _lrs(self.optimizer)
        return [group["lr"] * fn(self.last_epoch) for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups)]


class StepLR(LRScheduler):
    """lr *= gamma every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``; :func:`gradtx.step_decay_schedule`).

    Args:
      optimizer: the optimizer.
      step_size: the period of the decay.
      gamma: the factor.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _lrs(self.optimizer)
        return [lr * self.gamma for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr *= gamma at each milestone (``torch.optim.lr_scheduler.MultiStepLR``; :func:`gradtx.multistep_decay_schedule`).

    Args:
      optimizer: the optimizer.
      milestones: the steps at which to decay (a repeated milestone decays once per repetition).
      gamma: the factor.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self.last_epoch not in self.milestones:
            return _lrs(self.optimizer)
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[Any]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base_lr * self.gamma**passed for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr = factor * base_lr until ``total_iters``, then base_lr (``torch.optim.lr_scheduler.ConstantLR``; :func:`gradtx.constant_factor_schedule`).

    Args:
      optimizer: the optimizer.
      factor: in [0, 1].
      total_iters: the steps at the reduced lr.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self.last_epoch == 0:
            return [lr * self.factor for lr in _lrs(self.optimizer)]
        if self.last_epoch != self.total_iters:
            return _lrs(self.optimizer)
        return [lr * (1.0 / self.factor) for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """A linear ramp of the lr's factor (``torch.optim.lr_scheduler.LinearLR``; :func:`gradtx.linear_factor_schedule`).

    Args:
      optimizer: the optimizer.
      start_factor: in (0, 1].
      end_factor: in [0, 1].
      total_iters: the steps of the ramp.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in _lrs(self.optimizer)]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _lrs(self.optimizer)
        slope = self.end_factor - self.start_factor
        ratio = 1.0 + slope / (self.total_iters * self.start_factor + (self.last_epoch - 1) * slope)
        return [lr * ratio for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr *= gamma every step (``torch.optim.lr_scheduler.ExponentialLR``; :func:`gradtx.geometric_schedule`).

    Args:
      optimizer: the optimizer.
      gamma: the factor.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self._is_initial:
            return _lrs(self.optimizer)
        return [lr * self.gamma for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Polynomial decay to 0 over ``total_iters`` (``torch.optim.lr_scheduler.PolynomialLR``; :func:`gradtx.polynomial_decay_schedule`).

    Args:
      optimizer: the optimizer.
      total_iters: the steps of the decay.
      power: the power of the polynomial.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        if self._is_initial or self.last_epoch > self.total_iters:
            return _lrs(self.optimizer)
        factor = ((1.0 - self.last_epoch / self.total_iters)
                  / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [lr * factor for lr in _lrs(self.optimizer)]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
                for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing to ``eta_min`` over ``T_max`` (``torch.optim.lr_scheduler.CosineAnnealingLR``; :func:`gradtx.cosine_annealing_schedule`).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983). Recursive as in
    torch; past ``T_max`` the cosine rises again.

    Args:
      optimizer: the optimizer.
      T_max: the steps of half a period.
      eta_min: the lowest lr.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:  # noqa: N803
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _lrs(self.optimizer)
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        ratio = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / (
            1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
        return [ratio * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every ``T_i`` steps, ``T_i`` growing by ``T_mult`` (``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``).

    Loshchilov & Hutter, SGDR (https://arxiv.org/abs/1608.03983). Closed form
    :func:`gradtx.cosine_restarts_schedule`. ``step(epoch)`` accepts fractional
    epochs (``step(epoch + i / iters)``), as in torch.

    Args:
      optimizer: the optimizer.
      T_0: the steps until the first restart (a positive int).
      T_mult: the growth of the period (an int >= 1).
      eta_min: the lowest lr.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base_lr in self.base_lrs]

    def _jump_to_start(self) -> None:
        self.step(0)

    def step(self, epoch: float | None = None) -> None:
        """Advances one step, or moves to the (possibly fractional) ``epoch``."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        elif epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        elif epoch >= self.T_0:
            if self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:
                n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult**n
        else:
            self.T_i = self.T_0
            self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._sync_groups()
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        self._set_lrs(values)


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


class _Composite(LRScheduler):
    """SequentialLR and ChainedScheduler: schedulers over one optimizer, saved and loaded together."""

    _unsaved = ("optimizer", "_schedulers")

    _schedulers: list[LRScheduler]

    def _check_children(self, optimizer: Any, schedulers: Sequence[Any]) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
        for i, scheduler in enumerate(schedulers):
            if not hasattr(scheduler, "optimizer"):
                raise TypeError(f"{name} at index {i} should have `optimizer` as its attribute.")
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(
                    f"{name} does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs to "
                    f"be specified when calling `step`, but got one at index {i} in the given schedulers sequence."
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"{name} expects all schedulers to belong to the same optimizer, but got scheduler "
                    f"{type(scheduler).__name__} at index {i} has {scheduler.optimizer}, which is different from "
                    f"{type(optimizer).__name__}."
                )

    def _reset_lrs(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        for scheduler, child_state in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(child_state)
        self.__dict__.update(copy.deepcopy(state))
        self._restore_groups()  # last: the children's saved lrs may be older than the parent's


class SequentialLR(_Composite):
    """Schedulers one after another, switching at the milestones (``torch.optim.lr_scheduler.SequentialLR``).

    Closed form: :func:`gradtx.join_schedules`. At a milestone the next scheduler
    restarts from step 0 at the base lrs, as in torch. Unlike torch, a child may
    itself be a :class:`SequentialLR` or a :class:`ChainedScheduler`.

    Args:
      optimizer: the optimizer all the schedulers drive.
      schedulers: the schedulers, in order.
      milestones: the ``len(schedulers) - 1`` steps at which to switch.
      last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: Any, schedulers: list[LRScheduler], milestones: list[int],
                 last_epoch: int = -1) -> None:
        self._check_children(optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of "
                f"milestone points, but got number of schedulers {len(schedulers)} and the number of milestones "
                f"to be equal to {len(milestones)}"
            )
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.optimizer = optimizer
        self.last_epoch = last_epoch + 1
        self._begin()

    def _begin(self) -> None:
        self._reset_lrs()
        self.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        active = self._schedulers[bisect_right(self._milestones, 0)]
        active._begin()
        self._last_lr = active.get_last_lr()

    def _jump_to_start(self) -> None:
        self.last_epoch = 0
        self._begin()

    def step(self) -> None:  # type: ignore[override]
        """Advances the active scheduler, or starts the next one at a milestone."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._jump_to_start()
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()



class ChainedScheduler(_Composite):
    """Schedulers stepped together, each applying its rule to the lr the previous one set (``torch.optim.lr_scheduler.ChainedScheduler``).

    Closed form for multiplicative schedulers: :func:`gradtx.chain_schedules`.
    Unlike torch, it may be a child of a :class:`SequentialLR`.

    Args:
      schedulers: the schedulers, all of one optimizer.
      optimizer: that optimizer (default: the first scheduler's).
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Any | None = None) -> None:
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler to be chained, but got no scheduler.")
        optimizer = optimizer or schedulers[0].optimizer
        self._check_children(optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self.base_lrs = list(self._schedulers[0].base_lrs)
        self._last_lr = _lrs(optimizer)

    def _begin(self) -> None:
        for scheduler in self._schedulers:
            scheduler._begin()
        self._last_lr = _lrs(self.optimizer)

    def _jump_to_start(self) -> None:
        self._reset_lrs()
        self._begin()

    def step(self) -> None:  # type: ignore[override]
        """Steps every scheduler in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _lrs(self.optimizer)



class ReduceLROnPlateau(LRScheduler):
    """lr *= factor when a metric has stopped improving (``torch.optim.lr_scheduler.ReduceLROnPlateau``).

    ``step(metrics)`` takes the metric. The functional face's counterpart is
    :func:`gradtx.reduce_on_plateau` (optax's arguments).

    Args:
      optimizer: the optimizer.
      mode: ``'min'`` (lower is better) or ``'max'``.
      factor: the reduction, < 1.
      patience: steps without improvement before a reduction.
      threshold: what counts as an improvement.
      threshold_mode: ``'rel'`` (``best * (1 -+ threshold)``) or ``'abs'`` (``best -+ threshold``).
      cooldown: steps to wait after a reduction.
      min_lr: the lowest lr (a float, or a list of one per group).
      eps: reductions smaller than this are skipped.
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: Any = 0,
                 eps: float = 1e-8) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self.base_lrs = _lrs(optimizer)
        self._last_lr = _lrs(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        """Whether a reduction happened less than ``cooldown`` steps ago."""
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether ``a`` improves on ``best`` by more than the threshold."""
        if self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold) if self.mode == "min" else a > best * (self.threshold + 1.0)
        return a < best - self.threshold if self.mode == "min" else a > best + self.threshold

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Reads ``metrics`` (a number or 0-d array) and reduces the lrs after ``patience`` steps without improvement."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _lrs(self.optimizer)

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        for group in groups[len(self.min_lrs):]:
            self.min_lrs.append(self._group_value(group, "min_lr", self.default_min_lr))
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr
