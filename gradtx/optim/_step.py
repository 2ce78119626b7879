"""The facade's update, top to bottom: plan the work, check it all, trace it all, run it, store it.

1. *Plan*: every parameter with a gradient joins a unit, a group's state as
   the chain's own state over some of its parameters: a pack (in the default
   tier: small parameters, elementwise optimizers, the chain's state over
   their concatenation, :mod:`gradtx.optim._packing`) or a store (its other
   parameters, by bucket of one step count: the chain's state over them,
   :mod:`gradtx.optim._stores`). Each optimizer finds its own packs and stores
   of a parameter, so one stepped by several keeps complete state in each.
   Units run in programs by tier: all groups' in one by default, one per group
   with ``foreach=True``, one per parameter with ``foreach=False``. Runs of
   ``opt.program_max_params`` alike parameters are stores of their own, and
   packs when there are several, each a program of its own compiled once for
   its kind. Units are split by the devices their arrays live on, so
   parameters on different devices (or meshes) step together with
   single-device numbers.
2. *Check*: every group's options against the optimizer's defaults (type and
   torch's checks), every gradient's shape and dtype.
3. *Trace*: every program is traced (compiled on first use) before any runs, so
   an option or a chain that cannot be compiled fails the step before any group
   changes.
4. *Run and store*: each program's results replace the parameters and the
   chain state it was given. Programs donate their inputs (parameters unless
   ``opt.donate_params`` is False), so memory does not double; an input that
   someone besides the optimizer holds (an array from the constructor,
   ``opt.params``, ``p.data`` or ``opt.state``) is copied first (see
   :func:`owned`), so what a user holds is never invalidated and keeps its value.

Packs and stores keep their plan from one step to the next while the group's
parameters with a gradient are the same (:func:`gradtx.optim._packing.group_packs`,
:func:`gradtx.optim._stores.group_stores`): a steady step reads nothing from
the device, so it queues behind the running step as the functional step does.
"""

from __future__ import annotations

import operator
import sys
from collections import deque
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine, _grads, _packing, _stores
from gradtx.optim._options import check_group_options

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer

__all__: list[str] = []


class Unit(NamedTuple):
    """What one compiled update takes for some of a group's parameters: a pack's or a store's (``pack``).

    ``state`` is the chain's own state over them (over the pack's one flat
    parameter), as the last step left it; ``group`` the index of their group.
    """

    params: list
    static: tuple
    dynamic: dict
    arrays: list
    grads: list
    state: Any
    pack: Any
    group: int


_consume = deque(maxlen=0).extend
_DATA = operator.attrgetter("_data")
_GRAD = operator.attrgetter("grad")
_AVAL_SHAPE = operator.attrgetter("aval.shape")
_AVAL_DTYPE = operator.attrgetter("aval.dtype")


def _calibrate() -> int:
    """The references ``sys.getrefcount`` sees, as :func:`owned` counts them, for an array only the optimizer holds."""
    storage = [object()]
    listed = [storage[0]]
    return max(map(sys.getrefcount, listed))


# References to an array held by the optimizer's storage and by one list of the step's own: anything above this
# count is someone else's (a user's variable, a tree from opt.params, an array read from opt.state).
_OWN_REFERENCES = _calibrate()


def owned(arrays: list) -> list:
    """``arrays`` (a list the step built from the optimizer's storage), each one held elsewhere too replaced by a copy.

    A program may then donate (reuse) every buffer it is given, and an array a
    user still holds keeps its value, as a JAX array does: the reference-count
    test numpy uses to elide temporaries. In the ordinary loop nothing is held
    and nothing is copied (checked with C-level iteration).
    """
    if max(map(sys.getrefcount, arrays), default=0) > _OWN_REFERENCES:
        counts = list(map(sys.getrefcount, arrays))
        for i, count in enumerate(counts):
            if count > _OWN_REFERENCES:
                arrays[i] = jnp.array(arrays[i], copy=True)
    return arrays


def device_key(array: Any) -> tuple:
    """The devices an array lives on: units are compiled per device set."""
    sharding = getattr(array, "sharding", None)
    return tuple(sorted(d.id for d in sharding.device_set)) if sharding is not None else ()


def _checked_grads(opt: Optimizer, work: list) -> dict:
    """``{p: p.grad}`` after checking each gradient is an array of its parameter's shape and dtype.

    The common case (JAX arrays that fit) is checked with C-level iteration;
    otherwise each gradient is checked (and converted) on its own, and the
    first that does not fit raises, naming its parameter.
    """
    grads, arrays = list(map(_GRAD, work)), list(map(_DATA, work))
    if all(issubclass(kind, jax.Array) for kind in set(map(type, grads))):
        try:  # a concrete array's abstract value, read at C level (``.shape`` is a Python property)
            if (list(map(_AVAL_SHAPE, grads)) == list(map(_AVAL_SHAPE, arrays))
                    and list(map(_AVAL_DTYPE, grads)) == list(map(_AVAL_DTYPE, arrays))):
                return dict(zip(work, grads))
        except AttributeError:  # an array type without one: checked one by one
            pass
    return {p: _grads.checked_grad(opt, p, p.grad) for p in work}


def options_of(group: dict) -> tuple[list, list]:
    """A group's keys and values, recognised by identity later (:func:`same_options`)."""
    return list(group), list(group.values())


def same_options(group: dict, keys: list, values: list) -> bool:
    """Whether ``group`` holds the same objects under the same keys as when :func:`options_of` read it."""
    return (len(group) == len(keys) and all(map(operator.is_, group.values(), values))
            and all(map(operator.is_, group, keys)))


def _options(opt: Optimizer, group: dict, index: int) -> tuple[tuple, dict]:
    """A group's options, checked and split into ``(static, dynamic)`` (see :func:`_engine.split_options`).

    Kept while the group holds the same objects under the same keys (and none
    is a list, dict or array, which could change in place): a step with
    unchanged options neither checks nor splits them again.
    """
    cache = opt.__dict__.setdefault("_step_options", {})
    seen = cache.get(id(group))
    if seen is not None and seen[0] is opt.defaults and same_options(group, *seen[1]):
        return seen[2]
    check_group_options(opt, group, index)
    split = _engine.split_options(type(opt), group, where=f"param group {index}")
    if not any(isinstance(value, (list, dict, np.ndarray)) for key, value in group.items()
               if key not in _engine.NOT_OPTIONS):
        cache[id(group)] = (opt.defaults, options_of(group), split)
    else:
        cache.pop(id(group), None)
    return split


def plan(opt: Optimizer) -> dict[str, list[Unit]]:
    """The units of this step per tier (see the module docstring); checks every group's options first."""
    cls = type(opt)
    program_limit(opt.program_max_params)
    options = {}
    for index, group in enumerate(opt.param_groups):
        if any(p.grad is not None for p in group["params"]):
            options[index] = _options(opt, group, index)
    _packing.sync_packs(opt)  # the arrays users assigned (p.data) since the last step
    units: dict[str, list[Unit]] = {"fused": [], "foreach": [], "for-loop": []}
    for index, (static, dynamic) in options.items():
        group = opt.param_groups[index]
        work = [p for p in group["params"] if p.grad is not None]
        grads = _checked_grads(opt, work)
        tier = opt._tier(group)
        packs = _packing.group_packs(opt, group, work)
        if packs:
            packed = {p for pack in packs for p in pack.params}
            work = [p for p in work if p not in packed]
        stores = _stores.group_stores(opt, group, tier, work, static, dynamic)
        kind = (static, _engine._dynamic_structure(dynamic))
        for pack in packs + stores:  # its chain state as the step left it (translated after a load, or a change)
            units[tier].append(Unit(pack.params, static, dynamic, owned(list(map(_DATA, pack.params))),
                                    list(map(grads.__getitem__, pack.params)),
                                    pack.chain_state(cls, static, dynamic, kind), pack, index))
    return units


class _Call(NamedTuple):
    """One program to run: its arguments and the units whose results it returns."""

    args: tuple
    units: list

    @property
    def spread(self) -> bool:
        """Whether its arrays live on several devices (a mesh)."""
        return len(device_key(self.units[0].arrays[0])) > 1

    @property
    def mixed_packs(self) -> bool:
        """Whether it updates only packs of several shapes (see ``_engine._compiler_options``)."""
        return all(unit.pack.flat and unit.pack.mixed for unit in self.units)


def _calls(opt: Optimizer, units: dict[str, list[Unit]]) -> list[_Call]:
    """The step's programs: the default tier's units in one per device (alike packs and stores, and runs of
    alike units, apart), the ``foreach`` tier's in one per group, the for-loop tier's one per parameter (each
    of its stores holds one)."""
    cls = type(opt)
    limit = program_limit(opt.program_max_params)
    calls = []
    joined: dict[tuple, list[Unit]] = {}  # (group, or None for all groups; devices) -> the units of one program
    packs = sum(unit.pack.flat for unit in units["fused"])
    for tier, same_tier in units.items():
        for unit in same_tier:
            # alike packs (or stores): one compiled program; one temporary at a time; a pack of several shapes
            # compiles apart
            if unit.pack.alike if not unit.pack.flat else packs > 1 or unit.pack.mixed:
                calls.append(_call(cls, [unit]))
            else:
                joined.setdefault((None if tier == "fused" else unit.group, device_key(unit.arrays[0])),
                                  []).append(unit)
    for same in joined.values():
        runs, rest = _alike_units(same, limit)
        calls.extend(_call(cls, run) for run in runs + ([rest] if rest else []))
    return calls


def _alike_units(units: list[Unit], size: float) -> tuple[list[list[Unit]], list[Unit]]:
    """Runs of ``size`` alike stores of one program as programs of their own, and the other units.

    Alike: the same static options, option structure, shapes, dtypes and state
    structure (one parameter per group, as AdamMini's groups are). Alike runs
    share one compiled program, so thousands of groups compile an update of
    ``size`` of them instead of one of thousands.
    """
    if len(units) <= size:
        return [], units
    keys = [None if u.pack.flat else
            (u.static, _engine._dynamic_structure(u.dynamic), tuple((a.shape, str(a.dtype)) for a in u.arrays),
             jax.tree.structure(u.state))
            for u in units]
    runs, rest = _engine.alike_runs(keys, size)
    runs = [run for run in runs if keys[run[0]] is not None]
    rest = sorted(set(range(len(units))) - {i for run in runs for i in run})
    return [[units[i] for i in run] for run in runs], [units[i] for i in rest]


def _call(cls: type, same: list[Unit]) -> _Call:
    return _Call((cls, tuple(u.static for u in same), tuple("pack" if u.pack.flat else "store" for u in same),
                  [u.dynamic for u in same], [u.arrays for u in same], [u.grads for u in same],
                  [u.state for u in same], np.True_), same)


def program_limit(value: Any) -> float:
    """``opt.program_max_params`` checked: the most parameters one program updates (inf for None).

    Raises:
      ValueError: for anything but a positive int or None (nothing has changed yet).
    """
    if value is None:
        return float("inf")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"opt.program_max_params must be a positive int (parameters per compiled program) or None "
                         f"(a group in one program), but got {value!r}")
    return int(value)


def run(opt: Optimizer, units: dict[str, list[Unit]]) -> None:
    """Traces every program, then runs each and stores its results in the parameters and their packs or stores."""
    calls = _calls(opt, units)
    donate = bool(opt.donate_params)
    for call in calls:
        _engine.trace(donate, call.args, call.spread, call.mixed_packs)
    for call in calls:
        new_params, new_states = _engine.program(donate, call.spread, call.mixed_packs)(*call.args)
        for unit, data, state in zip(call.units, new_params, new_states):
            _consume(map(setattr, unit.params, repeat("_data"), data))
            unit.pack.updated(data, state, type(opt), (unit.static, _engine._dynamic_structure(unit.dynamic)))
