"""What a loaded state must hold for the next step to compute what torch would compute from it.

``load_state_dict`` (:mod:`gradtx.optim._state_dict`) converts each saved entry to
this optimizer's shapes and dtypes; the checks here then refuse, before anything
changes, a state that torch's next step would fail on or that gradtx cannot
honour exactly:

- a parameter's entry that keeps some of the chain's state but not all of it (an
  Adam entry without ``exp_avg``, SGD's or RMSprop's entries loaded into Adam):
  torch's step raises ``KeyError`` there, so the load does;
- a step count that is negative (torch's bias corrections divide by zero or go
  negative) or fractional (torch keeps 2.5 in its bias correction; gradtx's chains
  count steps in integers, so the load says so instead of truncating);
- a saved param group without a numeric option this optimizer needs (``lr``,
  ``betas``...): torch's step raises ``KeyError``; flags (booleans, ``None``)
  are filled from the defaults, as torch's ``__setstate__`` fills the ones newer
  releases added.

A ``None`` under one of the state's names is a buffer not created yet, as torch
treats old SGD's ``{"momentum_buffer": None}`` (an entry with nothing else is a
parameter without state, whose next step is its first); keys this optimizer does not keep
are carried as given and ignored by the step, as torch carries and ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from gradtx.optim import _engine
from gradtx.optim._options import short
from gradtx.optim._required import required

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer
    from gradtx.optim._parameter import Parameter

__all__ = ["check_entry", "check_saved_group", "check_step"]


def check_step(value: Any, where: str, key: str) -> None:
    """Raises ValueError unless ``value`` is a non-negative whole number (a step count)."""
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        return  # not a count at all: the conversion's own checks name it
    number = float(array.reshape(()))
    if not np.isfinite(number) or number < 0 or number != np.floor(number):
        raise ValueError(
            f"{where}: '{key}' is {number!r}, but a step count is a non-negative whole number (torch's bias "
            "corrections would use it as given; gradtx counts steps in integers). Load the state dict this "
            "optimizer or torch wrote, or set the step to the number of steps taken")


def check_entry(opt: Optimizer, group: dict, p: Parameter, converted: dict, where: str) -> None:
    """Refuses a converted entry from which the next step could not compute torch's numbers (see the module)."""
    cls = type(opt)
    if cls.step_name is not None and cls.step_name in converted:
        check_step(converted[cls.step_name], where, cls.step_name)
    if not converted:
        return  # no state (or only None values): the parameter starts fresh, as in torch
    expected = _engine.state_entries(cls, group, p)
    missing = [k for k in expected if k not in converted]
    if missing:
        kept = [k for k in expected if k in converted]
        other = [k for k in converted if k not in expected]
        found = f"it has {kept}" + (f" and {other}, which {cls.__name__} does not keep" if other else "")
        raise KeyError(
            f"{where}: {cls.__name__} with these options keeps {list(expected)}, but the entry lacks {missing} "
            f"({found}); torch's step would raise KeyError. Load a state dict saved by {cls.__name__} with the "
            "same options, or drop this parameter's entry from 'state' to start it fresh")


def check_saved_group(opt: Optimizer, saved: Mapping, index: int) -> None:
    """Refuses a saved param group that lacks a numeric option of this optimizer, or whose ``step`` is not a count.

    A group saved by another optimizer (SGD's ``momentum`` and no ``betas``, loaded
    into Adam) is named as such in the message.
    """

    where = f"param group {index} of the state dict"
    if "step" in saved and not callable(saved["step"]):
        check_step(saved["step"], where, "step")
    # options the reference keeps on the optimizer object, not in its groups, declared as `optimizer_options`: a
    # group it saved lacks them, and the loaded group takes the constructor's value, as the reference's step would
    kept = getattr(type(opt), "optimizer_options", ())
    needed = [name for name, default in opt.defaults.items()
              if name not in saved and name not in kept and (_engine.is_dynamic(default) or default is required)]
    # flags the class's step reads from the group, declared as `saved_group_keys` (schedule-free's train_mode)
    needed += [name for name in getattr(type(opt), "saved_group_keys", ()) if name not in saved]
    if not needed:
        return
    foreign = [k for k in saved if k not in opt.defaults and k not in ("params", "param_names", "initial_lr", "step")]
    origin = (f"; it has options {short(foreign)} that {type(opt).__name__} does not take: it was saved by another "
              "optimizer" if foreign else "")
    raise KeyError(f"{where} has no option(s) {needed}{origin}. torch's step would raise KeyError. Load a state "
                   f"dict saved by {type(opt).__name__}, or add the options to the saved group")
