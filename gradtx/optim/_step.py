"""The facade's update, top to bottom: plan the work, check it all, trace it all, run it, store it.

1. *Plan*: every parameter with a gradient joins a unit: a group's packed small
   parameters (default tier, elementwise optimizers), or the group's other
   parameters for its tier (all groups' in one program by default, one program
   per group with ``foreach=True``, one per parameter with ``foreach=False``).
   Units are split by the devices their arrays live on, so parameters on
   different devices (or meshes) step together with single-device numbers.
2. *Check*: every group's options against the optimizer's defaults (type and
   torch's checks), every gradient's shape and dtype.
3. *Trace*: every program is traced (compiled on first use) before any runs, so
   an option or a chain that cannot be compiled fails the step before any group
   changes.
4. *Run and store*: each program's results replace the parameters and state it
   was given. Programs donate their inputs (parameters unless
   ``opt.donate_params`` is False), so memory does not double; an input that
   someone besides the optimizer holds (an array from the constructor,
   ``opt.params``, ``p.data`` or ``opt.state``) is copied first (see
   :func:`owned`), so what a user holds is never invalidated and keeps its value.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine, _grads, _packing
from gradtx.optim._options import check_group_options

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer

__all__: list[str] = []


class Unit(NamedTuple):
    """What one compiled update takes for some of a group's parameters (``pack``: they are packed)."""

    params: list
    static: tuple
    dynamic: dict
    arrays: list
    grads: list
    states: list
    fresh: list
    pack: Any


class _Holder:
    __slots__ = ("value",)


def _calibrate() -> int:
    holder = _Holder()
    holder.value = object()
    listed = [holder.value]
    return sys.getrefcount(listed[0])


# References to an array held by the optimizer's storage and by one list of the step's own: anything above this
# count is someone else's (a user's variable, a tree from opt.params, a dict read from opt.state).
_OWN_REFERENCES = _calibrate()


def owned(arrays: list) -> list:
    """``arrays`` (a list the step built from the optimizer's storage), each one held elsewhere too replaced by a copy.

    A program may then donate (reuse) every buffer it is given, and an array a
    user still holds keeps its value, as a JAX array does: the reference-count
    test numpy uses to elide temporaries. In the ordinary loop nothing is held
    and nothing is copied.
    """
    for i in range(len(arrays)):
        if sys.getrefcount(arrays[i]) > _OWN_REFERENCES:
            arrays[i] = jnp.array(arrays[i], copy=True)
    return arrays


def _owned_states(states: list[dict]) -> list[dict]:
    for state in states:
        for key in state:
            if sys.getrefcount(state[key]) > _OWN_REFERENCES:
                state[key] = jnp.array(state[key], copy=True)
    return states


def device_key(array: Any) -> tuple:
    """The devices an array lives on: units are compiled per device set."""
    sharding = getattr(array, "sharding", None)
    return tuple(sorted(d.id for d in sharding.device_set)) if sharding is not None else ()


def plan(opt: Optimizer) -> dict[str, list[Unit]]:
    """The units of this step per tier (see the module docstring); checks every group's options first."""
    cls = type(opt)
    for index, group in enumerate(opt.param_groups):
        if any(p.grad is not None for p in group["params"]):
            check_group_options(opt, group, index)
    keys = set(_engine.order_keys(cls))
    units: dict[str, list[Unit]] = {"fused": [], "foreach": [], "for-loop": []}
    for index, group in enumerate(opt.param_groups):
        work = [p for p in group["params"] if p.grad is not None]
        if not work:
            continue
        grads = {p: _grads.checked_grad(opt, p, p.grad) for p in work}
        static, dynamic = _engine.split_options(cls, group, where=f"param group {index}")
        tier = opt._tier(group)
        packs = _packing.group_packs(opt, group, work) if tier == "fused" else []
        for pack in packs:
            state, fresh = pack.state, not pack.state
            if fresh:
                state = _engine.init_states(cls, static, dynamic, [pack.flat])[0]
            units["fused"].append(Unit(pack.params, static, dynamic, owned([pack.flat]),
                                       [grads[p] for p in pack.params], _owned_states([dict(state)]), [fresh], pack))
        packed = {p for pack in packs for p in pack.params}
        by_device: dict[tuple, list] = {}
        for p in work:
            if p not in packed:
                by_device.setdefault(device_key(p._data), []).append(p)
        for same in by_device.values():
            states = [{k: v if isinstance(v, jax.Array) else jnp.asarray(v)
                       for k, v in opt._state.get(p, {}).items() if k in keys} for p in same]
            fresh = [not state for state in states]
            if any(fresh):  # torch's lazy initialisation, in a small program of its own
                inits = iter(_engine.init_states(cls, static, dynamic, [p.data for p, f in zip(same, fresh) if f]))
                states = [next(inits) if f else state for state, f in zip(states, fresh)]
            units[tier].append(Unit(same, static, dynamic, owned([p._data for p in same]), [grads[p] for p in same],
                                    _owned_states(states), fresh, None))
    return units


class _Call(NamedTuple):
    """One program to run: its kind, its arguments and the units whose results it returns."""

    kind: str
    args: tuple
    units: list


def _calls(opt: Optimizer, units: dict[str, list[Unit]]) -> list[_Call]:
    cls = type(opt)
    calls = []
    fused: dict[tuple, list[Unit]] = {}
    for unit in units["fused"]:
        fused.setdefault(device_key(unit.arrays[0]), []).append(unit)
    for same in fused.values():
        calls.append(_Call("fused", (cls, tuple(u.static for u in same), tuple(u.pack is not None for u in same),
                                     [u.dynamic for u in same], [u.arrays for u in same], [u.grads for u in same],
                                     [u.states for u in same], [np.asarray(u.fresh) for u in same], np.True_), same))
    for u in units["foreach"]:
        calls.append(_Call("group", (cls, u.static, u.dynamic, u.arrays, u.grads, u.states, np.asarray(u.fresh)), [u]))
    for u in units["for-loop"]:
        for i, p in enumerate(u.params):
            one = Unit([p], u.static, u.dynamic, [u.arrays[i]], [u.grads[i]], [u.states[i]], [u.fresh[i]], None)
            calls.append(_Call("group", (cls, one.static, one.dynamic, one.arrays, one.grads, one.states,
                                         np.asarray(one.fresh)), [one]))
    return calls


def run(opt: Optimizer, units: dict[str, list[Unit]]) -> None:
    """Traces every program, then runs each and stores its results (see the module docstring)."""
    calls = _calls(opt, units)
    donate = bool(opt.donate_params)
    for call in calls:
        _engine.trace(call.kind, donate, call.args)
    for call in calls:
        new_params, new_states = _engine.program(call.kind, donate)(*call.args)
        if call.kind == "group":
            new_params, new_states = [new_params], [new_states]
        for unit, data, state in zip(call.units, new_params, new_states):
            if unit.pack is not None:
                unit.pack.updated(data[0], state[0])
            else:
                opt._store(unit.params, data, state)
