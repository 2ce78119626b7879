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
    """What one compiled update takes for some of a group's parameters (``pack``: they are packed).

    ``buckets`` lists the parameters' indices bucket by bucket (parameters whose
    shared state, the step, is equal step through one chain state); ``shared``
    and ``fresh`` are each bucket's shared entries and whether its parameters
    had no state before this step.
    """

    params: list
    static: tuple
    dynamic: dict
    arrays: list
    grads: list
    states: list
    buckets: tuple
    shared: list
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


def _buckets(states: list[dict], fresh: list[bool], names: tuple, bucketable: bool) -> tuple[tuple, list[dict]]:
    """Parameters whose shared entries are the same arrays (or fresh ones, equal by construction) share a bucket.

    A step stores one array for a bucket's shared entries in each member's
    dict, so buckets persist by identity with no reading of values; a parameter
    that skipped a step (its ``grad`` was None), or whose step was loaded or
    assigned, has arrays of its own and steps in a bucket of its own.
    """
    groups: dict[tuple, list[int]] = {}
    for i, state in enumerate(states):
        if not bucketable:
            key: tuple = (i,)
        elif fresh[i]:
            key = (True,)
        else:
            key = (False, *(id(state.get(name)) for name in names))
        groups.setdefault(key, []).append(i)
    buckets = _merge_equal(tuple(tuple(members) for members in groups.values()), states, fresh, names, bucketable)
    shared = [{name: states[members[0]][name] for name in names if name in states[members[0]]}
              for members in buckets]
    for state in states:
        for name in names:
            state.pop(name, None)
    return buckets, shared


def _value_key(value: Any) -> Any:
    if value is None:
        return None
    value = np.asarray(value)
    return value.dtype.str, value.shape, value.tobytes()


def _merge_equal(buckets: tuple, states: list[dict], fresh: list[bool], names: tuple, bucketable: bool) -> tuple:
    """Buckets whose shared entries hold equal values made one (after a load, or a parameter that skipped a step).

    Reads the shared entries (scalars: the step) of the buckets that differ by
    identity only, once: the merged bucket's members then store one array.
    """
    if not bucketable or len(buckets) < 2 or not names:
        return buckets
    values = jax.device_get([[states[m[0]].get(name) for name in names] for m in buckets])
    merged: dict[tuple, list[int]] = {}
    for members, entries in zip(buckets, values):
        key = (fresh[members[0]], *(_value_key(v) for v in entries))
        merged.setdefault(key, []).extend(members)
    return tuple(tuple(sorted(members)) for members in merged.values())


def _unit(params: list, static: tuple, dynamic: dict, arrays: list, grads: list, states: list, fresh: list,
          shared_names: tuple, pack: Any = None) -> Unit:
    cls_shared, bucketable = shared_names
    buckets, shared = _buckets(states, fresh, cls_shared, bucketable)
    return Unit(params, static, dynamic, owned(arrays), grads, _owned_states(states), buckets, shared,
                [fresh[members[0]] for members in buckets], pack)


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
        packs = _packing.group_packs(opt, group, work)
        for pack in packs:
            state, fresh = pack.state, not pack.state
            if fresh:
                state = _engine.init_states(cls, static, dynamic, [pack.flat])[0]
            shared = _engine.shared_entries(cls, static, dynamic, tuple(pack.flat.shape), pack.flat.dtype)
            units["fused"].append(_unit(pack.params, static, dynamic, [pack.flat], [grads[p] for p in pack.params],
                                        [dict(state)], [fresh], shared, pack))
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
            shared = _engine.shared_entries(cls, static, dynamic, tuple(same[0].shape), jnp.dtype(same[0].dtype))
            units[tier].append(_unit(same, static, dynamic, [p._data for p in same], [grads[p] for p in same],
                                     states, fresh, shared))
    return units


class _Call(NamedTuple):
    """One program to run: its kind, its arguments and the units whose results it returns."""

    kind: str
    args: tuple
    units: list

    @property
    def spread(self) -> bool:
        """Whether its arrays live on several devices (a mesh)."""
        return len(device_key(self.units[0].arrays[0])) > 1


def _calls(opt: Optimizer, units: dict[str, list[Unit]]) -> list[_Call]:
    cls = type(opt)
    calls = []
    fused: dict[tuple, list[Unit]] = {}
    for unit in units["fused"]:
        fused.setdefault(device_key(unit.arrays[0]), []).append(unit)
    for same in fused.values():
        calls.append(_Call("fused", (cls, tuple(u.static for u in same), tuple(u.buckets for u in same),
                                     tuple(u.pack is not None for u in same), [u.dynamic for u in same],
                                     [u.arrays for u in same], [u.grads for u in same], [u.states for u in same],
                                     [u.shared for u in same], [np.asarray(u.fresh) for u in same], np.True_), same))
    for u in units["foreach"]:
        calls.append(_Call("group", _group_args(cls, u), [u]))
    for u in units["for-loop"]:
        for b, members in enumerate(u.buckets):
            for i in members:
                one = Unit([u.params[i]], u.static, u.dynamic, [u.arrays[i]], [u.grads[i]], [u.states[i]], ((0,),),
                           [u.shared[b]], [u.fresh[b]], None)
                calls.append(_Call("group", _group_args(cls, one), [one]))
    return calls


def _group_args(cls: type, u: Unit) -> tuple:
    return (cls, u.static, u.buckets, u.dynamic, u.arrays, u.grads, u.states, u.shared, np.asarray(u.fresh))


def run(opt: Optimizer, units: dict[str, list[Unit]]) -> None:
    """Traces every program, then runs each and stores its results (see the module docstring)."""
    calls = _calls(opt, units)
    donate = bool(opt.donate_params)
    for call in calls:
        _engine.trace(call.kind, donate, call.args, call.spread)
    stepped: dict[int, dict] = {}  # a bucket's new shared entries, by its old ones (the for-loop splits buckets)
    for call in calls:
        new_params, new_states, new_shared = _engine.program(call.kind, donate, call.spread)(*call.args)
        if call.kind == "group":
            new_params, new_states, new_shared = [new_params], [new_states], [new_shared]
        for unit, data, states, shared in zip(call.units, new_params, new_states, new_shared):
            for members, old, entries in zip(unit.buckets, unit.shared, shared):
                entries = stepped.setdefault(id(old), entries)
                for i in members:
                    states[i].update(entries)  # one array per shared entry: the bucket stays one
            if unit.pack is not None:
                unit.pack.updated(data[0], states[0])
            else:
                opt._store(unit.params, data, states)
