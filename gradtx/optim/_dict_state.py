"""Per-parameter dicts as torch keeps them, bucketed: the layout of the state the compiled training step passes.

``opt.compile_step`` (:mod:`gradtx.optim._compiled_step`) steps each
parameter's torch-named entries (``opt._state``) in its program, the entries
of a bucket (parameters whose shared entries, the step, are equal) through one
chain state (:func:`gradtx.optim._engine.group_update`). :func:`buckets` finds
the buckets, and :func:`store` puts a program's results back in the dicts.
"""

from __future__ import annotations

import collections
import operator
import weakref
from collections import deque
from itertools import repeat
from typing import Any

import jax
import numpy as np

from gradtx.optim import _engine

__all__ = ["buckets", "store"]

_consume = deque(maxlen=0).extend


def buckets(states: list[dict], fresh: list[bool], names: tuple, bucketable: bool) -> tuple[tuple, list[dict]]:
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
    found = _merge_equal(tuple(tuple(members) for members in groups.values()), states, fresh, names, bucketable)
    shared = [{name: states[members[0]][name] for name in names if name in states[members[0]]} for members in found]
    for state in states:
        for name in names:
            state.pop(name, None)
    return found, shared


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


def store(opt: Any, params: list, new_params: list, new_states: list) -> None:
    """Puts a program's results in the parameters and ``opt._state`` (a new entry in torch's key order).

    When every parameter had and keeps state with these entries (the steady
    loop), it all runs as C-level iteration.
    """
    state = opt._state
    if all(new_states):
        entries = list(map(state.__getitem__, params))
        if all(map(operator.le, map(dict.keys, new_states), map(dict.keys, entries))):
            _consume(map(setattr, params, repeat("_data"), new_params))
            _consume(map(dict.update, entries, new_states))  # the values replaced in place, the order kept
            return
    order = _engine.order_keys(type(opt))
    keys = frozenset(order)
    for p, data, new in zip(params, new_params, new_states):
        p.data = data
        entry = state[p] if new else state.get(p)
        if new and not (entry and new.keys() <= entry.keys()):  # an entry it lacked: all in torch's order
            merged = {**entry, **new}
            entry.clear()
            entry.update({k: merged[k] for k in order if k in merged})
            entry.update({k: v for k, v in merged.items() if k not in keys})
        elif new:
            entry.update(new)
