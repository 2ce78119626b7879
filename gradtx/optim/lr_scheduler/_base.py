"""The base class of the facade's LR schedulers and the helpers they share (torch's warnings, per-group values)."""

from __future__ import annotations

import copy
import types
import warnings
from collections.abc import Sequence
from typing import Any

from gradtx.optim.lr_scheduler._load_checks import checked_load

__all__ = ["LRScheduler"]


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("load_state_dict")
        if own is not None and not getattr(own, "_checked_load", False):  # every class's load checks first
            cls.load_state_dict = checked_load(own)

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
        """Restores the state and writes the saved lrs back into the param groups, so the next step resumes exactly.

        The dict is checked first (:mod:`gradtx.optim.lr_scheduler._load_checks`): one value per param group
        where the scheduler keeps one per group (else ValueError), values of the kinds this scheduler keeps
        (else TypeError); a refused load changes neither the scheduler nor the optimizer.
        """
        kinds = {k: type(v) for k, v in self.__dict__.items() if isinstance(v, dict) and type(v) is not dict}
        self.__dict__.update(copy.deepcopy(state_dict))
        for key, kind in kinds.items():  # a Counter of milestones saved as a plain dict (.npz) is a Counter again
            if type(self.__dict__.get(key)) is dict:
                self.__dict__[key] = kind(self.__dict__[key])
        self._restore_groups()

    load_state_dict = checked_load(load_state_dict)

    def _restore_groups(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, getattr(self, "_last_lr", [])):
            group["lr"] = lr
