"""Checks a scheduler's ``load_state_dict`` runs before it writes anything, and the undo if a load still fails.

torch's ``LRScheduler.load_state_dict`` copies the dict into the scheduler
unchecked, so ``{"_last_lr": ["abc"]}`` or the state of a 3-group run loads into a
1-group optimizer and fails (or silently drops groups) later. Here a saved value is
compared with what this scheduler itself would save (:meth:`state_dict`): a list
with one value per param group must have one per group of this optimizer
(``ValueError``), and every value must be of the kind of this scheduler's own (a
number for a number, ``TypeError`` otherwise; not NaN), before the scheduler or the
optimizer's param groups change. Keys this scheduler does not save are set as
given, as torch sets them (except ``optimizer``, which a state dict never holds).
Last, the state is loaded into a copy of the scheduler, over copies of the param
groups, and that copy takes its next step: a state it cannot step from is refused.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradtx.optim._options import short

__all__ = ["check_state", "checked_load", "try_next_step"]


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "number"
    if isinstance(value, np.ndarray) or hasattr(value, "__jax_array__") or type(value).__name__ == "ArrayImpl":
        return "number" if np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.number) else "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "sequence"
    if isinstance(value, Mapping):  # a callable object's saved attributes, or a Counter of milestones
        return "dict" if type(value) is dict else "mapping"
    if callable(value):
        return "callable"
    return type(value).__name__


# For the kind of this scheduler's own value, the kinds a saved value may have (None: any).
_ALLOWED = {"integer": {"integer", "number"}, "number": {"number", "integer"},  # epochs may be fractional "bool": {"bool"}, "string": {"string"},
            "dict": {"dict", "None"}, "mapping": {"mapping", "dict"}, "callable": {"callable", "dict", "None"}}


def _check_value(key: str, value: Any, reference: Any, where: str) -> None:
    ref_kind, kind = _kind(reference), _kind(value)
    if ref_kind == "sequence":
        if kind != "sequence":
            raise TypeError(f"{where}: {key!r} must be a list like {short(reference)}, got {short(value)}")
        # lengths matter where they count param groups (check_state); other lists (milestones) may differ
        for item, ref in zip(value, reference):
            _check_value(key, item, ref, where)
        return
    allowed = _ALLOWED.get(ref_kind)
    if allowed is not None and kind not in allowed:
        raise TypeError(f"{where}: {key!r} = {short(value)} ({kind}) cannot replace this scheduler's "
                        f"{short(reference)} ({ref_kind})")
    if kind == "number" and np.isnan(np.asarray(value)):  # would turn every later lr into NaN
        raise ValueError(f"{where}: {key!r} is NaN")


def check_state(scheduler: Any, state_dict: Any, where: str = "the scheduler's state dict") -> None:
    """Raises TypeError/ValueError for a state this scheduler cannot resume from, before anything changes."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{where} must be a dict (as state_dict() returns), got {type(state_dict).__name__}")
    bad = [k for k in state_dict if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{where} has keys that are not attribute names (strings): {short(bad)}")
    if "optimizer" in state_dict:
        raise ValueError(f"{where} holds 'optimizer'; a scheduler's state dict never does (build the scheduler "
                         "on its optimizer, then load the state)")
    groups = len(scheduler.optimizer.param_groups)
    reference = scheduler.state_dict()
    for key, value in state_dict.items():
        if key not in reference:
            continue
        ref = reference[key]
        if key == "_schedulers":
            children = scheduler._schedulers
            if not isinstance(value, (list, tuple)) or len(value) != len(children):
                raise ValueError(f"{where}: '_schedulers' must hold the states of {len(children)} schedulers, got "
                                 f"{short(value)}")
            for i, (child, child_state) in enumerate(zip(children, value)):
                check_state(child, child_state, f"{where}, scheduler {i} ({type(child).__name__})")
            continue
        per_group = isinstance(ref, list) and len(ref) == groups and key not in ("milestones", "_milestones")
        if per_group:
            if not isinstance(value, (list, tuple)) or len(value) != groups:
                count = len(value) if isinstance(value, (list, tuple)) else short(value)
                raise ValueError(f"{where}: {key!r} has {count} value(s), one per param group of the run that "
                                 f"saved it, but this optimizer has {groups} param group(s); load it into an "
                                 "optimizer with the same param groups")
            for i, (item, item_ref) in enumerate(zip(value, ref)):
                _check_value(key, item, item_ref, f"{where}, param group {i}")
                if _kind(item) == "number" and not np.isfinite(np.asarray(item)):
                    raise ValueError(f"{where}, param group {i}: {key!r} is {item!r}; a learning rate or momentum "
                                     "is finite")
        else:
            _check_value(key, value, ref, where)


def _schedulers(scheduler: Any) -> list[Any]:
    """The scheduler and every scheduler nested in it (SequentialLR, ChainedScheduler)."""
    found = [scheduler]
    for child in scheduler.__dict__.get("_schedulers", []):
        found += _schedulers(child)
    return found


class _StandIn:
    """The optimizer as a trial step sees it: copies of its param groups, its other attributes read through."""

    def __init__(self, optimizer: Any) -> None:
        self.param_groups = [dict(group) for group in optimizer.param_groups]
        self._optimizer = optimizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_optimizer"], name)


def try_next_step(scheduler: Any, load: Callable, state_dict: Any) -> None:
    """Loads ``state_dict`` into a copy of ``scheduler`` over a stand-in optimizer and takes the next step there.

    A state whose values pass :func:`check_state` can still break the next step (a
    period of 0, a mode the scheduler does not know); torch would fail there, so the
    load is refused now, with the error that step raised.
    """
    try:
        for with_epoch in (False, True):  # step() and the deprecated step(epoch), which compute differently
            trial = copy.deepcopy(scheduler, {id(scheduler.optimizer): _StandIn(scheduler.optimizer)})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(trial, copy.deepcopy(state_dict))
                parameters = inspect.signature(trial.step).parameters
                needed = [p for p in parameters.values()
                          if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
                metric = [getattr(trial, "best", 0.0)] * len(needed)  # for ReduceLROnPlateau
                epoch = {"epoch": getattr(trial, "last_epoch", 0) + 1} if with_epoch and "epoch" in parameters else {}
                trial.step(*metric, **epoch)
    except Exception as error:  # any failure of the next step refuses the load
        kind = type(error) if isinstance(error, (TypeError, KeyError, ValueError)) else ValueError
        raise kind(f"the scheduler's state dict: {type(scheduler).__name__} cannot take its next step from it "
                   f"({type(error).__name__}: {error}); torch would fail there too. Load a state dict this "
                   "scheduler class saved") from error


def checked_load(load: Callable) -> Callable:
    """``load_state_dict`` that checks first, and puts the scheduler(s) and param groups back if it fails."""

    @functools.wraps(load)
    def checked(self: Any, state_dict: Any) -> None:
        check_state(self, state_dict)
        try_next_step(self, load, state_dict)
        schedulers = [(s, dict(s.__dict__)) for s in _schedulers(self)]
        groups = [(g, dict(g)) for g in self.optimizer.param_groups]
        try:
            load(self, state_dict)
        except BaseException:
            for s, before in schedulers:
                s.__dict__.clear()
                s.__dict__.update(before)
            for g, before in groups:
                g.clear()
                g.update(before)
            raise

    checked._checked_load = True  # type: ignore[attr-defined]
    return checked
