"""SequentialLR and ChainedScheduler: schedulers made of schedulers (nesting allowed)."""

from __future__ import annotations

import copy
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from gradtx.optim.lr_scheduler._base import LRScheduler, _lrs
from gradtx.optim.lr_scheduler._plateau import ReduceLROnPlateau

__all__ = ["ChainedScheduler", "SequentialLR"]


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
