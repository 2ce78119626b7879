"""The facade's update, top to bottom: plan the work, check it all, trace it all, run it, store it.

1. *Plan*: every parameter with a gradient joins a unit: a group's packs
   (in the default tier: small parameters, elementwise optimizers, the
   chain's state over their concatenation, :mod:`gradtx.optim._packing`) and
   stores (its other parameters, by bucket of one step count: the chain's
   state over them, :mod:`gradtx.optim._stores`), and, for the parameters a
   store does not take, the group's parameters with their per-parameter dicts.
   Units run in programs by tier: all groups' in one by default, one per group
   with ``foreach=True``, one per parameter with ``foreach=False``.
   Runs of ``opt.program_max_params`` alike parameters, and packs when there
   are several, are programs of their own, each compiled once for its kind
   (:func:`_chunks`).
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

A step over many parameters with per-parameter dicts pays per parameter for
planning in Python. So the plan of such a group's parameters (their devices, buckets and state
names) is kept from one step to the next (:class:`_Layout`), with a weak
reference to each parameter's array and the names and ids of its state
entries as the step stored them; the next step reuses it when the group's
parameters, tier and option types are the same and those are unchanged (a few
identity tests per parameter, run as C-level iteration: ``map`` over the
parameters, not a Python loop; the options are checked again only when a
group holds other objects). Anything else (``p.data`` or an ``opt.state``
entry assigned or deleted, a parameter without a gradient, a group added,
``load_state_dict``) plans again. Steps that reuse a plan read nothing from
the device, so they queue behind the running step as the functional step does.
"""

from __future__ import annotations

import collections
import operator
import sys
import weakref
from collections import deque
from itertools import chain, repeat
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
    """What one compiled update takes for some of a group's parameters (``pack``: they are packed).

    ``buckets`` lists the parameters' indices bucket by bucket (parameters whose
    shared state, the step, is equal step through one chain state); ``shared``
    and ``fresh`` are each bucket's shared entries and whether its parameters
    had no state before this step. A pack's ``states`` is the chain's own state
    over its flat parameter (``buckets``, ``shared`` and ``fresh`` are empty).
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
    pending: Any = None  # the _Pending plan of the group these parameters belong to (unpacked units)
    most_alike: int | None = None  # the most parameters of one shape and dtype (None: not counted yet)
    group: int = -1  # the index of the group of a pack's or store's parameters


_chain = chain.from_iterable
_consume = deque(maxlen=0).extend
_DATA = operator.attrgetter("_data")
_GRAD = operator.attrgetter("grad")
_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_AVAL_SHAPE = operator.attrgetter("aval.shape")
_AVAL_DTYPE = operator.attrgetter("aval.dtype")
_EMPTY: dict = {}


def _calibrate() -> tuple[int, int]:
    """The references ``sys.getrefcount`` sees, as the step counts them, for an array only the optimizer holds."""
    storage = [object()]
    listed = [storage[0]]
    entries = {"entry": object()}
    states = [dict(entries)]
    return max(map(sys.getrefcount, listed)), max(map(sys.getrefcount, _chain(map(dict.values, states))))


# References to an array held by the optimizer's storage and by one list (or state dict) of the step's own: anything
# above these counts is someone else's (a user's variable, a tree from opt.params, a dict read from opt.state).
_OWN_REFERENCES, _OWN_ENTRY_REFERENCES = _calibrate()


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


def _owned_states(states: list[dict]) -> list[dict]:
    """``states`` (dicts the step built from ``opt.state``'s), each entry held elsewhere too replaced by a copy."""
    if max(map(sys.getrefcount, _chain(map(dict.values, states))), default=0) > _OWN_ENTRY_REFERENCES:
        for state in states:
            held = [key for key, count in zip(state, map(sys.getrefcount, state.values()))
                    if count > _OWN_ENTRY_REFERENCES]
            for key in held:
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


_VALUES: collections.OrderedDict = collections.OrderedDict()  # id(array) -> (weak reference, value key)
_VALUES_LIMIT = 4096


def _value_keys(arrays: list) -> list:
    """Each array's value as a hashable key; arrays read before (still alive) are not read again.

    The shared entries compared are scalars that steps replace rather than
    change, so a key remembered by identity stays right while the array lives;
    the rest are read from the device in one transfer.
    """
    keys: list = [None] * len(arrays)
    missing = []
    for i, array in enumerate(arrays):
        if array is None:
            continue
        found = _VALUES.get(id(array))
        if found is not None and found[0]() is array:
            keys[i] = found[1]
        else:
            missing.append(i)
    if missing:
        for i, value in zip(missing, jax.device_get([arrays[i] for i in missing])):
            value = np.asarray(value)
            keys[i] = value.dtype.str, value.shape, value.tobytes()
            try:
                _VALUES[id(arrays[i])] = (weakref.ref(arrays[i]), keys[i])
            except TypeError:  # not weakly referenceable (a NumPy array): read again next time
                continue
            if len(_VALUES) > _VALUES_LIMIT:
                _VALUES.popitem(last=False)
    return keys


def _merge_equal(buckets: tuple, states: list[dict], fresh: list[bool], names: tuple, bucketable: bool) -> tuple:
    """Buckets whose shared entries hold equal values made one (after a load, or a parameter that skipped a step).

    Reads the shared entries (scalars: the step) of the buckets that differ by
    identity only, once per array (see :func:`_value_keys`): the merged
    bucket's members then store one array.
    """
    if not bucketable or len(buckets) < 2 or not names:
        return buckets
    keys = iter(_value_keys([states[m[0]].get(name) for m in buckets for name in names]))
    merged: dict[tuple, list[int]] = {}
    for members in buckets:
        key = (fresh[members[0]], *(next(keys) for _ in names))
        merged.setdefault(key, []).extend(members)
    return tuple(tuple(sorted(members)) for members in merged.values())


def _unit(params: list, static: tuple, dynamic: dict, arrays: list, grads: list, states: list, fresh: list,
          shared_names: tuple) -> Unit:
    cls_shared, bucketable = shared_names
    buckets, shared = _buckets(states, fresh, cls_shared, bucketable)
    return Unit(params, static, dynamic, owned(arrays), grads, _owned_states(states), buckets, shared,
                [fresh[members[0]] for members in buckets], None)


class _Layout(NamedTuple):
    """One device's unit of a group's unpacked parameters, as a step planned it.

    ``indices`` are the unit's parameters among the group's unpacked ones;
    ``names[j]`` the entries parameter ``j`` of the unit passes on its own
    (``pick[j]`` reads them from its state dict as a tuple), and ``shared[b]``
    those bucket ``b`` passes once (read from its first member). ``most_alike``:
    the most parameters of one shape and dtype (whether :func:`_chunks` can cut runs).
    """

    indices: tuple
    buckets: tuple
    fresh: list
    names: tuple
    shared: tuple
    pick: tuple
    most_alike: int


def _picker(names: tuple) -> Any:
    """``f(state) -> tuple of state[name] for name in names`` (C-level for one name or more)."""
    if not names:
        return lambda state: ()
    # itemgetter of one name returns the value itself: asked twice, it returns a pair (zip keeps the first)
    return operator.itemgetter(*names) if len(names) > 1 else operator.itemgetter(names[0], names[0])


class _Pending:
    """A group's plan while its step runs: what the next step may reuse once the results are stored.

    :func:`store` records, per parameter, a weak reference to its array
    (``refs``), and the keys and the ids of its state entries (``keys``,
    ``ids``); the plan is kept (:func:`run`) only when every parameter was
    stored and each one's state stays as fresh as it was (a parameter that got
    its first state plans again). ``steady``: every parameter had state before.
    """

    __slots__ = ("key", "params", "layouts", "slot", "refs", "keys", "ids", "flat", "fresh", "steady")

    def __init__(self, key: tuple, params: list, layouts: list[_Layout]) -> None:
        self.key, self.params, self.layouts = key, params, layouts
        self.slot = {id(p): i for i, p in enumerate(params)}
        self.fresh = [False] * len(params)
        for layout in layouts:
            for b, members in enumerate(layout.buckets):
                for j in members:
                    # a fresh parameter is planned again unless it starts from no entries at all (no state kept)
                    starts_empty = not layout.names[j] and not layout.shared[b]
                    self.fresh[layout.indices[j]] = layout.fresh[b] if starts_empty or not layout.fresh[b] else None
        self.steady = not any(f is not False for f in self.fresh)
        self._clear()

    def _clear(self) -> None:
        n = len(self.params)
        self.refs: list = [None] * n
        self.keys: list = [None] * n
        self.ids: list | None = [None] * n  # each parameter's entry ids; None: ``flat`` holds them all
        self.flat: list | None = None

    def again(self) -> _Pending:
        """The same plan for the next step, with nothing recorded yet."""
        pending = object.__new__(_Pending)
        pending.key, pending.params, pending.layouts, pending.slot, pending.fresh, pending.steady = (
            self.key, self.params, self.layouts, self.slot, self.fresh, self.steady)
        pending._clear()
        return pending

    @property
    def complete(self) -> bool:
        return None not in self.refs

    def record(self, params: list, arrays: list, entries: list) -> None:
        """Records what :func:`store` put in ``params`` (their arrays and state dicts, ``None`` for no dict)."""
        entries = [_EMPTY if entry is None else entry for entry in entries]
        if len(params) == len(self.params) and all(map(operator.is_, params, self.params)):
            # the whole group in its order (the common case): lists made at C level, entry ids as one flat list
            self.refs, self.keys = list(map(weakref.ref, arrays)), list(map(tuple, entries))
            self.ids, self.flat = None, list(map(id, _chain(map(dict.values, entries))))
            return
        slots = list(map(self.slot.__getitem__, map(id, params)))
        ids = map(tuple, map(map, repeat(id), map(dict.values, entries)))
        for i, ref, names, ids_ in zip(slots, map(weakref.ref, arrays), map(tuple, entries), ids):
            self.refs[i], self.keys[i], self.ids[i] = ref, names, ids_

    def entry_ids(self) -> list:
        """The ids of the recorded state entries, parameter after parameter, as one list."""
        return self.flat if self.ids is None else list(_chain(self.ids))


def _reuse(opt: Optimizer, cached: _Pending | None, key: tuple, params: list) -> bool:
    """Whether ``cached`` (the last step's plan of this group) holds for ``params`` (see the module docstring).

    State entries are compared by name and ``id``: the arrays they name are
    alive now, so equal ids are the same arrays (parameters whose steps are
    one array still share one), and the plan reads every value afresh. A
    parameter's array is compared through a weak reference (its device decides
    its unit). The comparisons run as C-level iteration.
    """
    if cached is None or cached.key != key or len(cached.params) != len(params):
        return False
    if not all(map(operator.is_, params, cached.params)):
        return False
    if not all(map(operator.is_, map(_DATA, params), map(weakref.ref.__call__, cached.refs))):
        return False
    entries = list(map(opt._state.get, params, repeat(_EMPTY)))
    try:
        return (list(map(tuple, entries)) == cached.keys
                and list(map(id, _chain(map(dict.values, entries)))) == cached.entry_ids())
    except TypeError:  # an entry replaced by another kind of mapping
        return False


def _planned_units(opt: Optimizer, cached: _Pending, static: tuple, dynamic: dict, params: list,
                   grads: dict) -> list[Unit]:
    """The units of a group's unpacked parameters from the last step's plan (:func:`_reuse` said it holds)."""
    pending = cached.again()
    units = []
    get = opt._state.get
    for layout in cached.layouts:
        same = list(map(params.__getitem__, layout.indices))
        dicts = list(map(get, same, repeat(_EMPTY)))
        states = list(map(dict, map(zip, layout.names, map(operator.call, layout.pick, dicts))))
        shared = [{k: dicts[m[0]][k] for k in names} for m, names in zip(layout.buckets, layout.shared)]
        del dicts
        units.append(Unit(same, static, dynamic, owned(list(map(_DATA, same))), list(map(grads.__getitem__, same)),
                          _owned_states(states), layout.buckets, shared, layout.fresh, None, pending,
                          layout.most_alike))
    return units


def _most_alike(arrays: list) -> int:
    return max(collections.Counter(zip(map(_SHAPE, arrays), map(_DTYPE, arrays))).values(), default=0)


def _planned_anew(opt: Optimizer, key: tuple, static: tuple, dynamic: dict, params: list,
                  grads: dict) -> list[Unit]:
    """The units of a group's unpacked parameters, planned from their arrays and state (see :func:`plan`)."""
    cls = type(opt)
    keys = set(_engine.order_keys(cls))
    by_device: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        by_device.setdefault(device_key(p._data), []).append(i)
    units, layouts = [], []
    for indices in by_device.values():
        same = [params[i] for i in indices]
        states = [{k: v if isinstance(v, jax.Array) else jnp.asarray(v)
                   for k, v in opt._state.get(p, {}).items() if k in keys} for p in same]
        fresh = [not state for state in states]
        if any(fresh):  # torch's lazy initialisation, in small programs of their own
            inits = iter(_initial_states(opt, static, dynamic, [p.data for p, f in zip(same, fresh) if f]))
            states = [next(inits) if f else state for state, f in zip(states, fresh)]
        shared_names = _engine.shared_entries(cls, static, dynamic, tuple(same[0].shape), jnp.dtype(same[0].dtype))
        arrays = [p._data for p in same]
        unit = _unit(same, static, dynamic, arrays, [grads[p] for p in same], states, fresh, shared_names)
        names = tuple(tuple(s) for s in unit.states)
        layouts.append(_Layout(tuple(indices), unit.buckets, unit.fresh, names,
                               tuple(tuple(s) for s in unit.shared), tuple(map(_picker, names)), _most_alike(arrays)))
        units.append(unit._replace(most_alike=layouts[-1].most_alike))
    pending = _Pending(key, params, layouts)
    return [unit._replace(pending=pending) for unit in units]


def _initial_states(opt: Optimizer, static: tuple, dynamic: dict, arrays: list) -> list[dict]:
    """The chain's initial state of each array, each run of alike arrays by one program (see :func:`_chunks`)."""
    keys = [(str(a.dtype), tuple(a.shape)) for a in arrays]
    batches, rest = _engine.alike_runs(keys, program_limit(opt.program_max_params))
    states: list = [None] * len(arrays)
    for batch in batches + ([rest] if rest else []):
        for i, state in zip(batch, _engine.init_states(type(opt), static, dynamic, [arrays[i] for i in batch])):
            states[i] = state
    return states


def _cache(opt: Optimizer) -> dict:
    return opt.__dict__.get("_step_plans") or {}


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
    cache = _cache(opt)
    _packing.sync_packs(opt)  # the arrays users assigned (p.data) since the last step
    units: dict[str, list[Unit]] = {"fused": [], "foreach": [], "for-loop": []}
    for index, group in enumerate(opt.param_groups):
        if index not in options:
            continue
        work = [p for p in group["params"] if p.grad is not None]
        grads = _checked_grads(opt, work)
        static, dynamic = options[index]
        tier = opt._tier(group)
        packs = _packing.group_packs(opt, group, work)
        if packs:
            packed = {p for pack in packs for p in pack.params}
            work = [p for p in work if p not in packed]
        stores, work = _stores.group_stores(opt, group, tier, work, static, dynamic)  # the chain's state over them
        kind = (static, _engine._dynamic_structure(dynamic))
        for pack in packs + stores:  # its chain state as the step left it (translated after a load, or a change)
            units[tier].append(Unit(pack.params, static, dynamic, owned(list(map(_DATA, pack.params))),
                                    list(map(grads.__getitem__, pack.params)),
                                    pack.chain_state(cls, static, dynamic, kind), (), [], [], pack, group=index))
        if not work:
            continue
        key = (id(group), tier, static, _engine._dynamic_structure(dynamic))
        cached = cache.get(id(group))
        if _reuse(opt, cached, key, work):
            units[tier].extend(_planned_units(opt, cached, static, dynamic, work, grads))
        else:
            units[tier].extend(_planned_anew(opt, key, static, dynamic, work, grads))
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

    @property
    def mixed_packs(self) -> bool:
        """Whether it updates only packs of several shapes (see ``_engine._compiler_options``)."""
        return all(unit.pack is not None and unit.pack.mixed for unit in self.units)


def _calls(opt: Optimizer, units: dict[str, list[Unit]]) -> list[_Call]:
    """The step's programs: the default tier's units in one per device (alike packs and stores, and runs of
    alike units, apart), the ``foreach`` tier's in one per group, the for-loop tier's one per parameter."""
    cls = type(opt)
    limit = program_limit(opt.program_max_params)
    calls, groups = [], []
    joined: dict[tuple, list[Unit]] = {}  # (group, or None for all groups; devices) -> the units of one program
    packs = sum(unit.pack is not None and unit.pack.flat for unit in units["fused"])
    for unit in units["fused"]:
        if unit.pack is not None and (unit.pack.alike if not unit.pack.flat else packs > 1 or unit.pack.mixed):
            # alike packs (or stores): one compiled program; one temporary at a time; a pack of several shapes
            # compiles apart
            calls.append(_fused_call(cls, [unit]))
            continue
        if unit.pack is None:
            chunks, unit = _chunks(unit, limit)
            groups.extend(chunks)
        if unit is not None:
            joined.setdefault((None, device_key(unit.arrays[0])), []).append(unit)
    for unit, size in [(u, limit) for u in units["foreach"]] + [(u, 1) for u in units["for-loop"]]:
        if unit.pack is None:
            chunks, rest = _chunks(unit, size)
            groups.extend(chunks + ([rest] if rest is not None else []))
        elif unit.pack.alike:  # a run of alike parameters (one in the for-loop tier): a program of its own
            calls.append(_fused_call(cls, [unit]))
        else:
            joined.setdefault((unit.group, device_key(unit.arrays[0])), []).append(unit)
    for same in joined.values():
        runs, rest = _alike_units(same, limit)
        calls.extend(_fused_call(cls, run) for run in runs + ([rest] if rest else []))
    calls.extend(_Call("group", _group_args(cls, u), [u]) for u in groups)
    return calls


def _alike_units(units: list[Unit], size: float) -> tuple[list[list[Unit]], list[Unit]]:
    """Runs of ``size`` alike units (groups) of the fused program as programs of their own, and the other units.

    Alike: the same static options, option structure, shapes, dtypes, state
    entries and buckets (one parameter per group, as AdamMini's groups are).
    Alike runs share one compiled program, so thousands of groups compile an
    update of ``size`` of them instead of one of thousands; as :func:`_chunks` does within a group.
    """
    if len(units) <= size:
        return [], units
    keys = [None if u.pack is not None and u.pack.flat else
            (u.static, _engine._dynamic_structure(u.dynamic), tuple((a.shape, str(a.dtype)) for a in u.arrays),
             jax.tree.structure(u.states) if u.pack is not None else tuple(map(tuple, u.states)), u.buckets,
             tuple(map(tuple, u.shared)))
            for u in units]
    runs, rest = _engine.alike_runs(keys, size)
    runs = [run for run in runs if keys[run[0]] is not None]
    rest = sorted(set(range(len(units))) - {i for run in runs for i in run})
    return [[units[i] for i in run] for run in runs], [units[i] for i in rest]


def _fused_call(cls: type, same: list[Unit]) -> _Call:
    return _Call("fused", (cls, tuple(u.static for u in same), tuple(u.buckets for u in same),
                           tuple(("pack" if u.pack.flat else "store") if u.pack is not None else "" for u in same),
                           [u.dynamic for u in same],
                           [u.arrays for u in same], [u.grads for u in same], [u.states for u in same],
                           [u.shared for u in same], [None if u.pack is not None else np.asarray(u.fresh) for u in same],
                           np.True_), same)


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


def _chunks(u: Unit, size: int) -> tuple[list[Unit], Unit | None]:
    """Runs of ``size`` alike parameters of a unit as units of their own, and the unit of the other parameters.

    Alike: one shape, dtype and set of state entries. Alike chunks (with the
    same buckets) share one compiled program, so thousands of same-shape
    matrices compile one update of ``size`` of them instead of one of
    thousands (XLA's compile time grows faster than the program); the
    parameters left over (fewer than ``size`` of a kind) keep their one program. A bucket split across programs
    passes its shared entries (the step) to each; :func:`run` keeps one array of
    the results for all of them.
    """
    if len(u.params) <= size or (_most_alike(u.arrays) if u.most_alike is None else u.most_alike) < size:
        return [], u  # no run of alike parameters (the common case: counted when the group was planned)
    items = [(b, i) for b, members in enumerate(u.buckets) for i in members]
    keys = [(str(u.arrays[i].dtype), tuple(u.arrays[i].shape), tuple(sorted(u.states[i]))) for _, i in items]
    runs, rest = _engine.alike_runs(keys, size)
    chunks = [_subunit(u, [items[j] for j in run]) for run in runs]
    return chunks, (_subunit(u, [items[j] for j in rest]) if rest else None)


def _subunit(u: Unit, items: list[tuple[int, int]]) -> Unit:
    """The unit of some of ``u``'s parameters, given as (bucket, index) pairs in bucket order."""
    positions: dict[int, list[int]] = {}
    for j, (b, _) in enumerate(items):
        positions.setdefault(b, []).append(j)
    order = list(positions)
    buckets = tuple(tuple(members) for members in positions.values())
    members = [i for _, i in items]
    return Unit([u.params[i] for i in members], u.static, u.dynamic, [u.arrays[i] for i in members],
                [u.grads[i] for i in members], [u.states[i] for i in members], buckets,
                [u.shared[b] for b in order], [u.fresh[b] for b in order], None, u.pending)


def _group_args(cls: type, u: Unit) -> tuple:
    return (cls, u.static, u.buckets, u.dynamic, u.arrays, u.grads, u.states, u.shared, np.asarray(u.fresh))


def run(opt: Optimizer, units: dict[str, list[Unit]]) -> None:
    """Traces every program, then runs each and stores its results (see the module docstring).

    The plans of the groups stored completely are kept for the next step (see :func:`_reuse`).
    """
    calls = _calls(opt, units)
    donate = bool(opt.donate_params)
    for call in calls:
        _engine.trace(call.kind, donate, call.args, call.spread, call.mixed_packs)
    stepped: dict[int, dict] = {}  # a bucket's new shared entries, by its old ones (the for-loop splits buckets)
    pending: dict[int, _Pending] = {}
    for call in calls:
        program = _engine.program(call.kind, donate, call.spread, call.mixed_packs)
        new_params, new_states, new_shared = program(*call.args)
        if call.kind == "group":
            new_params, new_states, new_shared = [new_params], [new_states], [new_shared]
        for unit, data, states, shared in zip(call.units, new_params, new_states, new_shared):
            for members, old, entries in zip(unit.buckets, unit.shared, shared):
                entries = stepped.setdefault(id(old), entries)
                # one array per shared entry: the bucket stays one
                _consume(map(dict.update, map(states.__getitem__, members), repeat(entries)))
            if unit.pack is not None:
                _consume(map(setattr, unit.params, repeat("_data"), data))
                unit.pack.updated(data, states, type(opt), (unit.static, _engine._dynamic_structure(unit.dynamic)))
            else:
                store(opt, unit.params, data, states, unit.pending)
                if unit.pending is not None:
                    pending[id(unit.pending)] = unit.pending
    opt.__dict__["_step_plans"] = {plan.key[0]: plan for plan in pending.values() if plan.complete}


def store(opt: Optimizer, params: list, new_params: list, new_states: list, pending: _Pending | None = None) -> None:
    """Puts a program's results in the parameters and ``opt.state`` (a new entry in torch's key order).

    With ``pending``, records what it stored for the next step's plan (see
    :func:`_reuse`): a parameter whose state is as fresh as it was, and only then.
    When every parameter had and keeps state with these entries (the steady
    loop), it all runs as C-level iteration.
    """
    state = opt._state
    if all(new_states):
        entries = list(map(state.__getitem__, params))
        if all(map(operator.le, map(dict.keys, new_states), map(dict.keys, entries))):
            _consume(map(setattr, params, repeat("_data"), new_params))
            _consume(map(dict.update, entries, new_states))  # the values replaced in place, the order kept
            if pending is not None and pending.steady:
                pending.record(params, new_params, entries)
                return
            if pending is None:
                return
    order = _engine.order_keys(type(opt))
    keys = frozenset(order)
    for p, data, new in zip(params, new_params, new_states):
        p.data = data
        entry = state[p] if new else state.get(p)
        grew = bool(new) and not (entry and new.keys() <= entry.keys())
        if grew:  # an entry it lacked (its first state, or one deleted): every entry in torch's order
            merged = {**entry, **new}
            entry.clear()
            entry.update({k: merged[k] for k in order if k in merged})
            entry.update({k: v for k, v in merged.items() if k not in keys})
        elif new:
            entry.update(new)
        if pending is not None:
            i = pending.slot[id(p)]
            kept = entry is not None and not keys.isdisjoint(entry)
            # a parameter that got its first state, or an entry it lacked, plans again
            if pending.fresh[i] is not None and kept != pending.fresh[i] and not grew:
                pending.record([p], [p._data], [entry])
