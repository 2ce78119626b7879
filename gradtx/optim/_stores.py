"""Stored state: every tier keeps a group's (other) parameters' state as the chain's own state over them.

Parameters whose states line up (the same entries, one step count: a
bucket) step as optax steps a tree: one chain state over all of them. So the
tiers keep exactly that state between steps, a *store* (:class:`Store`): the
default tier one per program (the chain's state over each run of
``opt.program_max_params`` parameters of one shape and dtype, and over the
bucket's other parameters; the packed small ones aside:
:mod:`gradtx.optim._packing`), ``foreach`` the same stores in one program per
group, the for-loop tier one per parameter. A chain that cannot step several
parameters through one state keeps a store per parameter. A step passes a
store's state to its program and keeps what the program returns; nothing is
translated.

torch's per-parameter dicts are a view (``opt.state[p]`` is a
:class:`~gradtx.optim._packing.StateEntry`): reading an entry returns the
chain's array for it (the step as a float32 scalar, one array for the
bucket), and a step copies an array someone still holds before donating it,
so what a user reads keeps its value. Writes go through: ``opt.state[p]["exp_avg"] = x``
replaces the chain's array at once. A parameter without a gradient hands its
store back (torch leaves its state and step as they are) and the others are
stored again, so it steps in a store of its own from then on. Anything else
the store cannot hold (another shape or dtype, a step of its own, an entry
added or deleted, a ``p.data`` of another shape, dtype or device, another
tier) hands the state back to per-parameter dicts (:meth:`Store.release`), and
the next step stores it again, by bucket. Every parameter is stored, on one
device or sharded over several, stepped by this optimizer alone or by others
too (each optimizer finds its own store of it,
:func:`gradtx.optim._packing.pack_of`); a complex parameter's entries are
shown, and written, as torch keeps them (complex), the chain's real view of
them converted.

A dict of ``opt.state`` held from before the state was stored (the raw dict
of a parameter whose state was handed back) is not updated by later steps;
read ``opt.state[p]`` again, as for a packed parameter.
"""

from __future__ import annotations

import operator
import sys
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine
from gradtx.optim._packing import _ALIVE, arrays_taken, forget, hold, pack_of, prune
from gradtx.optim._parameter import Parameter

__all__ = ["Store", "group_stores"]

_DATA = operator.attrgetter("_data")


def _calibrate() -> int:
    """The references ``sys.getrefcount`` sees for a leaf only a chain state holds, as :func:`owned_state` counts."""
    state = {"mu": _engine.Bucket([object()])}
    return max(map(sys.getrefcount, jax.tree.leaves(state)))


_OWN_REFERENCES = _calibrate()


def owned_state(state: Any) -> Any:
    """``state`` with each leaf someone else holds too (read through ``opt.state``) replaced by a copy.

    A program may then donate every buffer of the state, and an array a user
    still holds keeps its value (the test :func:`gradtx.optim._step.owned` makes
    for parameters). In the ordinary loop nothing is held and nothing is copied.
    """
    leaves, treedef = jax.tree.flatten(state)
    if max(map(sys.getrefcount, leaves), default=0) <= _OWN_REFERENCES:
        return state
    counts = list(map(sys.getrefcount, leaves))
    leaves = [jnp.array(leaf, copy=True) if count > _OWN_REFERENCES else leaf for leaf, count in zip(leaves, counts)]
    return jax.tree.unflatten(treedef, leaves)


class Store:
    """The state of some parameters of one group and device: the chain's own state over them.

    Until its first step (or after its parameters' entries were stored from
    ``opt.state``) a store keeps torch-named entries per parameter
    (``loaded``), which the step translates (:meth:`chain_state`); afterwards
    the chain's state (``chain``, for the chain ``kind`` that made it). Entries
    the chain does not keep (``max_exp_avg_sq`` after ``amsgrad`` was switched
    off) stay beside it (``extra``), as torch keeps them.

    Args:
      owner_state: the optimizer's per-parameter state dict, where :meth:`release` puts each parameter's entries.
      params: the boxes, in their group's order.
      states: each parameter's torch-named entries (empty before its first step).
      order: torch's key order of a state entry.
      alike: a run of parameters of one shape and dtype (a program of its own, compiled once for alike stores).
    """

    flat = False  # a pack's state is flat (gradtx.optim._packing.Pack); a store's is the chain's over the arrays
    mixed = False
    made_for: tuple = ()  # (tier, parameters per program) it was planned for

    def __init__(self, owner_state: dict, params: list[Parameter], states: list[dict], order: list[str],
                 alike: bool) -> None:
        self.owner_state, self.order, self.alike = owner_state, order, alike
        self.params = list(params)
        self.slot = {id(p): i for i, p in enumerate(params)}
        self.shapes = [p.shape for p in params]
        self.dtypes = [p.dtype for p in params]
        self.devices = params[0]._data.sharding.device_set
        self.complex = any(map(jnp.iscomplexobj, map(_DATA, params)))  # entries are viewed as torch keeps them
        self.loaded: list[dict] | None = states
        self.chain: Any = None
        self.kind: Any = None
        self.extra: list[dict] = [{} for _ in params]
        self._decl: Any = None
        self._where: dict = {}  # (torch name, parameter index or None) -> the chain leaf's position
        self._keys: list[list[str]] = []  # each parameter's keys in the chain, in torch's order
        self._staged: tuple = (None, None)  # (kind, extra) of the state chain_state last translated
        self._leaves: list | None = None  # the chain's leaves, while opt.state is read between two steps
        # the step as torch keeps it (float32), made once when read: one array for the group's stores, which
        # step together (so a group handed back to per-parameter dicts is stored again as one bucket)
        self.step_cell: dict = {}
        self.refs = list(map(weakref.ref, map(_DATA, params)))
        self.alive = True
        for p in params:
            hold(p, self)

    # --- the view ---------------------------------------------------------------------------------------

    def keys_of(self, i: int) -> list[str]:
        """Parameter ``i``'s state keys, in torch's order."""
        if self.chain is None:
            return list(self.loaded[i])
        keys = self._keys[i] + [key for key in self.extra[i] if key not in self._keys[i]]
        return sorted(keys, key=lambda k: self.order.index(k) if k in self.order else len(self.order))

    def entry(self, key: str, i: int) -> Any:
        """Parameter ``i``'s entry ``key``: the chain's array (the step as float32)."""
        if self.chain is None:
            return self.loaded[i][key]
        if key in self.extra[i] and key not in self._keys[i]:
            return self.extra[i][key]
        if key == self._decl.step_name and (key, None) not in self._where and (_engine.STEP, None) in self._where:
            if "step" not in self.step_cell:
                self.step_cell["step"] = jnp.asarray(self._leaf(_engine.STEP, None), jnp.float32)
            return self.step_cell["step"]
        place = (key, i) if (key, i) in self._where else (key, None)
        if place not in self._where:
            raise KeyError(key)
        leaf = self._leaf(*place)
        return _engine.out_of_chain(leaf, self.params[i]._data) if self.complex else leaf

    def _leaf(self, name: Any, i: int | None) -> Any:
        if self._leaves is None:
            self._leaves = jax.tree.leaves(self.chain)
        return self._leaves[self._where[(name, i)]]

    def write(self, key: str, i: int, value: Any) -> bool:
        """``opt.state[p][key] = value``, put in the state now (the old array is no longer held); False if the
        store cannot hold it (another shape or dtype, a new key, an entry the parameters share: the step)."""
        if self.chain is None or key not in self.keys_of(i) or ((key, i) not in self._where
                                                                and key not in self.extra[i]):
            return False
        value = value if isinstance(value, jax.Array) else jnp.asarray(value)
        old = self.entry(key, i)
        if tuple(value.shape) != tuple(old.shape) or value.dtype != old.dtype:
            return False
        del old
        if (key, i) not in self._where:
            self.extra[i][key] = value
            return True
        leaves, treedef = jax.tree.flatten(self.chain)
        j = self._where[(key, i)]
        leaves[j] = _engine.into_chain(value, leaves[j], self.params[i]._data, key) if self.complex else value
        self.chain, self._leaves = jax.tree.unflatten(treedef, leaves), None
        return True

    # --- the step ---------------------------------------------------------------------------------------

    def sync(self) -> bool:
        """Takes the parameters' arrays assigned since the last step; False (nothing changed) when one has
        another shape, dtype or device: the caller then releases the store."""
        refs = arrays_taken(self.params, self.refs, self.shapes, self.dtypes, self.devices)
        if refs is None:
            return False
        self.refs = refs
        self._leaves = None  # what the view cached goes before the step (a leaf the store alone holds is donated)
        return True

    def chain_state(self, decl: Any, static: tuple, dynamic: dict, kind: tuple) -> Any:
        """The chain's state for this step's chain ``kind``, each array someone else holds copied: the one the
        last step left, or one translated from each parameter's entries (the initial state for parameters
        without). Nothing is stored: :meth:`updated` keeps what the step returns, so a failed step changes
        nothing."""
        if self.chain is not None and self.kind == kind:
            return owned_state(self.chain)
        entries = [{key: self.entry(key, i) for key in self.keys_of(i)} for i in range(len(self.params))]
        known = [{key: value for key, value in entry.items() if key in self.order} for entry in entries]
        state = _engine.stored_chain_state(decl, static, dynamic, list(map(_DATA, self.params)), known,
                                           known[0] if known else {})
        layout = _engine.bucket_layout(decl, state)
        kept = [{decl.step_name if name is _engine.STEP else name for name, at in layout if at in (i, None)}
                for i in range(len(self.params))]
        self._staged = (kind, [{k: v for k, v in e.items() if k not in keep} for e, keep in zip(entries, kept)])
        return owned_state(state)

    def updated(self, arrays: list, state: Any, decl: Any, kind: tuple) -> None:
        """Takes the parameters' arrays and the chain state a step returned (the old ones were donated to it)."""
        self.refs, self.chain, self.loaded, self._leaves = list(map(weakref.ref, arrays)), state, None, None
        self.step_cell.clear()
        if kind != self.kind:
            self.kind, self._decl = kind, decl
            layout = _engine.bucket_layout(decl, state)
            self._where = {(name, at): j for j, (name, at) in enumerate(layout)}
            names = [[decl.step_name if name is _engine.STEP else name for name, at in layout if at in (i, None)
                      and not (name is _engine.STEP and decl.step_name is None)] for i in range(len(self.params))]
            self._keys = [[key for key in _engine.order_keys(decl) if key in set(n)] for n in names]
            self.extra = self._staged[1] if self._staged[0] == kind else [{} for _ in self.params]
        self._staged = (None, None)

    def release(self) -> None:
        """Hands every parameter's state back to its own dict; the store is empty afterwards.

        The parameters of one store share one step array in their dicts, so the
        next step stores them in one bucket again.
        """
        for i, p in enumerate(self.params):
            entry = {key: self.entry(key, i) for key in self.keys_of(i)}
            if entry:
                self.owner_state[p] = entry
            forget(p, self)
        self.params, self.refs, self.loaded, self.chain, self.extra, self._leaves = [], [], [], None, [], None
        self.alive = False


def group_stores(opt: Any, group: dict[str, Any], tier: str, work: list[Parameter], static: tuple,
                 dynamic: dict) -> list[Store]:
    """The stores of a group's parameters with a gradient that are not packed (``work``).

    Parameters whose states line up (the same entries, one step count) share
    stores: in the default tier one per run of ``opt.program_max_params``
    alike parameters and one for the rest (a parameter alone where the chain
    cannot step several through one state), one parameter per store in the
    for-loop tier. A store whose parameters all have a gradient is kept; one
    with a parameter left out (torch leaves its state and step as they are)
    is handed back, and its other parameters stored anew: the one left out
    steps apart from then on, with a step count of its own. The same
    parameters and stores as at the last step are kept without a look.
    """
    key = ("stores", id(group))
    plan = opt._plans.get(key)
    made = (tier, opt.program_max_params, *map(id, work))
    if plan is not None and plan[0] == made and all(map(_ALIVE, plan[1])):
        return plan[1]
    stores = _plan_stores(opt, group, tier, work, static, dynamic)
    opt._plans[key] = (made, stores)
    return stores


def _plan_stores(opt: Any, group: dict[str, Any], tier: str, work: list[Parameter], static: tuple,
                 dynamic: dict) -> list[Store]:
    """Keeps the group's stores made for this tier whose parameters all have a gradient, hands back the others,
    and stores the parameters not in a kept store anew (see :func:`group_stores`)."""
    limit = 1 if tier == "for-loop" else float("inf") if opt.program_max_params is None else opt.program_max_params
    working, kept = set(map(id, work)), []
    for store in dict.fromkeys(s for s in (pack_of(p, opt) for p in group["params"]) if s is not None and not s.flat):
        if store.made_for == (tier, limit) and working.issuperset(map(id, store.params)):
            kept.append(store)
        else:
            store.release()
    prune(opt)
    held = {id(p) for store in kept for p in store.params}
    # the step array a kept store shows is in the dicts of the parameters handed back beside it: on its device,
    # they share its cell
    cells = {(id(store.step_cell["step"]), frozenset(store.devices)): store.step_cell
             for store in kept if "step" in store.step_cell}
    stores = _new_stores(opt, tier, limit, [p for p in work if id(p) not in held], static, dynamic, cells)
    opt._packs.extend(stores)
    return kept + stores


def _new_stores(opt: Any, tier: str, limit: float, params: list[Parameter], static: tuple, dynamic: dict,
                cells: dict) -> list[Store]:
    """Stores of ``params`` (taking their dicts): a set per bucket of equal states, each by device, then runs of
    ``limit`` alike parameters (a program of their own) and the rest. A bucket's stores on one device share one
    step array, the one a kept store on that device shows when it is the bucket's step (``cells``, by its id and
    devices): a step on another device would commit the parameters' next programs there."""
    if not params:
        return []
    cls = type(opt)
    names, bucketable = _engine.shared_entries(cls, static, dynamic, tuple(params[0].shape), params[0].dtype)
    order, stores = _engine.order_keys(cls), []
    buckets = _step_buckets(opt._state, params, names, order) if bucketable else [[p] for p in params]
    for bucket in buckets:
        step = opt._state.get(bucket[0], {}).get(cls.step_name)
        by_device: dict[frozenset, list[Parameter]] = {}
        for p in bucket:
            by_device.setdefault(frozenset(p._data.sharding.device_set), []).append(p)
        for devices, same in by_device.items():
            cell: dict = cells.get((id(step), devices), {}) if step is not None else {}
            runs, others = _engine.alike_runs([(str(p.dtype), tuple(p.shape)) for p in same], limit)
            for indices, alike in [(run, True) for run in runs] + ([(others, False)] if others else []):
                members = [same[i] for i in indices]
                store = Store(opt._state, members, [opt._state.pop(p, {}) for p in members], order, alike)
                store.made_for, store.step_cell = (tier, limit), cell
                stores.append(store)
    return stores


def _step_buckets(states: dict, params: list[Parameter], names: tuple, order: list[str]) -> list[list[Parameter]]:
    """``params`` by bucket: the same chain entries (``order``: the others stay beside the chain's state) and equal
    shared ones (the step), read in one transfer for the parameters whose entries are not one array already; each
    bucket in the parameters' order."""
    by_identity: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        state = states.get(p, {})
        keys = frozenset(key for key in state if key in order)
        by_identity.setdefault((keys, *(id(state.get(name)) for name in names)), []).append(i)
    firsts = [states.get(params[members[0]], {}) for members in by_identity.values()]
    values = jax.device_get([[state[name] for name in names if name in state] for state in firsts])
    buckets: dict[tuple, list[int]] = {}
    for (keys, *_), members, shared in zip(by_identity, by_identity.values(), values):
        same = tuple((np.asarray(v).dtype.str, np.asarray(v).tobytes()) for v in shared)
        buckets.setdefault((keys, same), []).extend(members)
    return [[params[i] for i in sorted(members)] for members in buckets.values()]
