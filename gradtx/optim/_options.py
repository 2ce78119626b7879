"""Checking a param group's options: by kind against the optimizer's own, then by the declaration's checks.

Used when a state dict is loaded (each loaded option against the group's
current one) and before every step (each group's options against
``defaults``), so that a group edited by hand into something the step cannot
use (a deleted key, a string learning rate, betas of the wrong length) fails
with a message naming the group and the option, before anything changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine
from gradtx.optim._engine import KERNEL_FLAGS

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer

__all__ = ["UNKNOWN", "check_group_options", "check_option", "current_hyperparams", "is_index", "short"]


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_index(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _kind(value: Any) -> str:
    """What an option value is, for comparing a loaded option with the optimizer's own."""
    if value is None:
        return "None"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, (np.ndarray, jax.Array)):
        numeric = jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)
        return "number" if value.size == 1 and numeric else "array"
    if isinstance(value, (tuple, list)):
        return "sequence"
    if callable(value):
        return "schedule"
    return type(value).__name__


# For the kind of the optimizer's own value, the kinds a loaded value may have.
_COMPATIBLE = {"number": {"number", "schedule"}, "schedule": {"number", "schedule"}, "bool": {"bool"},
               "string": {"string", "None"}, "None": {"None", "bool", "string", "number"}}
_PLAIN = {"None", "bool", "string", "number"}


def check_option(cls: type, name: str, value: Any, reference: Any, where: str) -> None:
    """Raises a TypeError when a loaded option cannot stand in for the optimizer's own (a string for a number...)."""
    kind = _kind(value)
    if reference is UNKNOWN:  # an option this optimizer does not have (a scheduler's initial_lr): plain data
        if kind == "sequence":
            for item in value:
                check_option(cls, name, item, UNKNOWN, where)
        elif kind not in _PLAIN:
            raise TypeError(f"{where}: option {name!r} = {short(value)} is not a number, bool, string, None or "
                            "a tuple of those")
        return
    ref_kind = _kind(reference)
    if ref_kind == "sequence":
        if kind != "sequence" or len(value) != len(reference):
            raise TypeError(f"{where}: option {name!r} must be a sequence of {len(reference)} values like "
                            f"{short(reference)}, got {short(value)}")
        for item, ref in zip(value, reference):
            check_option(cls, name, item, ref, where)
        return
    allowed = _COMPATIBLE.get(ref_kind)
    if allowed is not None and kind not in allowed:
        raise TypeError(f"{where}: option {name!r} = {short(value)} ({kind}) cannot replace {short(reference)} "
                        f"({ref_kind})")
    if kind == "schedule" and cls.step_name is None:
        raise TypeError(f"{where}: {cls.__name__} keeps no step count, so option {name!r} cannot be a schedule")
    if name in cls.static_options and ref_kind == "number" and not is_index(value):
        raise TypeError(f"{where}: option {name!r} must be an integer, got {short(value)}")


UNKNOWN = object()


def check_group_options(opt: Optimizer, group: dict[str, Any], index: int) -> None:
    """Raises KeyError/TypeError/ValueError, naming group ``index`` and the option, for options a step cannot use.

    Every option of ``defaults`` must be present (torch raises KeyError for a
    deleted one too), of a kind that can stand in for the default (a number for a
    number, a sequence of the same length for ``betas``...), and pass the
    declaration's ``check_options``. Keys that are not options (a scheduler's
    ``initial_lr``, a user's own notes) are left alone.
    """
    cls = type(opt)
    where = f"param group {index}"
    for name, default in opt.defaults.items():
        if name not in group and name not in KERNEL_FLAGS:  # (the kernel flags change no number)
            raise KeyError(f"{where} has no option {name!r} (was it deleted, or the group replaced by a dict "
                           f"without it?); set it again, e.g. opt.param_groups[{index}][{name!r}] = {default!r}")
        if name in group:
            check_option(cls, name, group[name], default, where)
    try:
        cls.check_options(group)
    except (ValueError, TypeError, KeyError) as error:
        raise type(error)(f"{where}: {error.args[0] if error.args else error}") from error


def current_hyperparams(opt) -> list[dict[str, Any]]:
    """Each group's numeric options, schedules evaluated at its step count (see ``Optimizer.current_hyperparams``)."""
    result = []
    for group in opt.param_groups:
        count = _group_count(opt, group)
        values = {}
        for name, value in group.items():
            if name in _engine.NOT_OPTIONS:
                continue
            if callable(value):
                value = _engine.as_float(value(count))
            elif _engine.is_dynamic(value):
                value = _engine.as_float(value)
            elif isinstance(value, (tuple, list)) and value and all(
                    callable(v) or _engine.is_number(v) for v in value):  # betas=(schedule, 0.999)
                value = tuple(_engine.as_float(v(count) if callable(v) else v) for v in value)
            else:
                continue
            values[name] = value
        result.append(values)
    return result


def _group_count(opt, group: dict[str, Any]) -> int:
    """The step count of the group's first parameter with state (0 before the first step)."""
    name = type(opt).step_name
    for p in group["params"]:
        state = opt.state.get(p, {})
        if name is not None and name in state:
            return int(np.asarray(state[name]))
        if name is None and state:
            return 1
    return 0
