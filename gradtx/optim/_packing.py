"""Packed state: a layer under the default tier that keeps the state of a group's small parameters flat.

Many small tensors cost per tensor, not per byte: on a CPU each array crossing
a compiled program's boundary costs microseconds, and each parameter's update is
a few kernels of its own (``benchmarks/FINDINGS.md``). So the default tier of an
elementwise optimizer (``Optimizer.elementwise``) keeps the *state* of a group's
small parameters of one dtype *packed*: the chain's own state over the
concatenation of them all, as if it were one parameter (each state entry,
``exp_avg``..., one flat buffer, with one step count). The compiled step
concatenates the parameters and their gradients inside the program, updates the
concatenation with that state (an elementwise chain gives each element the
numbers it would give it in its own tensor; nothing is translated), and returns
each parameter's slice as its new array. Each run of ``PACK_MAX_PARAMS``
same-shape parameters is a pack of its own, and the group's other small
parameters one more; several packs (or one of several shapes) are updated by a
program each, and alike packs share one compiled program.

The parameters stay their own arrays (``p.data`` is read and assigned as for
any parameter); only the state is packed, and nothing a user does releases a
pack by reading:

* ``opt.state`` is a :class:`StateView`: ``opt.state[p]`` of a packed parameter
  is a :class:`StateEntry` whose arrays are cut from the flat buffers when read
  (copies, made once per step, in batches of one shape), under torch's names
  (the chain's state is translated at this boundary only, and never handed out);
* writes go through: ``opt.state[p]["exp_avg"] = x`` is written into the flat
  buffer before the next step (:meth:`Pack.sync`). Only a write the layout
  cannot hold (another shape or dtype, a step count of its own, a whole entry
  replaced or deleted, ``p.data`` of another shape, dtype or device) hands the
  pack back to separate arrays (:meth:`Pack.release`); the next step packs again.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine
from gradtx.optim._parameter import Parameter

__all__ = ["Pack", "StateEntry", "arrays_taken", "StateView", "group_packs", "hold", "pack_of", "packed_at",
           "packs_holding", "release_packs", "sync_packs"]


# Runs of this many same-shape parameters are packs of their own: alike packs share one compiled program, so
# 10,000 small tensors compile in seconds (a pack's program writes each parameter's new array with a loop of its
# own, and XLA:CPU compiles each loop in milliseconds: 128 a pack made the first step over 1,000 tensors of seven
# shapes 2.5x slower than 32), and a step's concatenated gradients are one pack's at a time. A group's other
# packable parameters form one pack.
PACK_MAX_PARAMS = 32
VIEW_BATCH = 32  # state entries of one shape cut by one program (0.4 s to compile per shape; ~7 us per view)

_DATA = operator.attrgetter("_data")
_ALIVE = operator.attrgetter("alive")


@functools.partial(jax.jit, static_argnums=(2, 3))
def _cut_many(flat: jax.Array, offsets: jax.Array, size: int, shape: tuple) -> list[jax.Array]:
    """``len(offsets)`` arrays of ``shape`` cut out of ``flat`` (offsets are an argument: one compile per shape)."""
    return [jax.lax.dynamic_slice_in_dim(flat, offsets[j], size).reshape(shape) for j in range(offsets.shape[0])]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _cut_one(flat: jax.Array, offset: Any, size: int, shape: tuple) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(flat, offset, size).reshape(shape)


@jax.jit
def _concatenate(arrays: list) -> jax.Array:
    return jnp.concatenate([jnp.ravel(a) for a in arrays])


@functools.partial(jax.jit, donate_argnums=0)
def _write(flat: jax.Array, offsets: jax.Array, values: list) -> jax.Array:
    """``flat`` with each of ``values`` written (flattened) at its offset: a flat state entry, updated in place."""
    for j, value in enumerate(values):
        flat = jax.lax.dynamic_update_slice_in_dim(flat, jnp.ravel(value), offsets[j], 0)
    return flat


# a packed (or stored) parameter -> weak references to its packs (or stores), one per optimizer that steps it: the
# optimizer (``opt._packs``) holds them, so an optimizer that is gone frees its state while its parameters live on
_PACK_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Pack:
    """The state of some parameters of one group, dtype and device: the chain's state over their concatenation.

    A step leaves the chain's own state (``chain``, for the chain ``kind`` that
    made it: the group's static options and option structure). Until the first
    step, or after the parameters' entries were packed from ``opt.state``, the
    pack keeps torch-named flat entries instead (``loaded``), which the next
    step translates (:meth:`chain_state`). :meth:`entries` is the state under
    torch's names either way; entries the chain does not keep (``max_exp_avg_sq``
    after ``amsgrad`` was switched off) stay flat beside it (``extra``), as torch
    keeps them, for a later chain that takes them again.

    Args:
      owner_state: the optimizer's per-parameter state dict, where :meth:`release`
        puts each parameter's entries back.
      params: the boxes, in their group's order.
      state: ``{torch name: flat array}``; the entries a chain keeps once for a tree (the step) one for all
        (empty before the first step).
      order: torch's key order of a state entry.
    """

    flat = True  # its state is flat (a store's, gradtx.optim._stores, is the chain's over separate arrays)

    def __init__(self, owner_state: dict, params: list[Parameter], state: dict, order: list[str]) -> None:
        self.owner_state = owner_state
        self.order = order
        self.params = list(params)
        self.shapes = [p.shape for p in params]
        self.mixed = len(set(self.shapes)) > 1  # of several shapes: a program of its own (see _step._calls)
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.size = sum(self.sizes)
        self.offsets = [int(o) for o in np.cumsum([0] + self.sizes[:-1])]
        self.dtype = params[0].dtype
        self.devices = params[0]._data.sharding.device_set
        self.slot = {id(p): i for i, p in enumerate(params)}
        # State entries are cut in batches: VIEW_BATCH parameters of one shape per program, the rest one by one.
        by_shape: dict[tuple, list[int]] = {}
        for i, shape in enumerate(self.shapes):
            by_shape.setdefault(shape, []).append(i)
        self.batches: list[list[int]] = []
        for same in by_shape.values():
            full = len(same) - len(same) % VIEW_BATCH
            self.batches += [same[j:j + VIEW_BATCH] for j in range(0, full, VIEW_BATCH)] + [[i] for i in same[full:]]
        self.batch_of = {i: b for b, batch in enumerate(self.batches) for i in batch}
        self._batch_offsets = [jnp.asarray([self.offsets[i] for i in batch], jnp.int32) if len(batch) > 1
                               else np.int32(self.offsets[batch[0]]) for batch in self.batches]
        self.loaded = state
        self.chain: Any = None  # the chain's state after a step (then ``loaded`` is None)
        self.kind: Any = None  # the chain kind (static options, option structure) ``chain`` is the state of
        self._found: list = []  # ``chain``'s leaves: (torch name or STEP, None for a leaf kept once for all)
        self._decl: Any = None  # the optimizer class whose chain ``chain`` belongs to
        self._flat = jax.ShapeDtypeStruct((self.size,), self.dtype)  # the one parameter the chain updates
        self._entries: dict | None = None  # ``chain`` under torch's names, translated once per step when read
        self.extra: dict = {}  # flat entries beside ``chain`` that it does not keep
        self._staged: tuple = (None, {})  # (kind, extra) of the state :meth:`chain_state` last translated
        # weak references to the parameters' arrays as the last step stored them (a strong one would count as a
        # holder, and the step would copy the arrays before donating them)
        self.refs = list(map(weakref.ref, map(_DATA, params)))
        self.alive = True  # False once :meth:`release` has handed the state back
        self._views: dict[tuple, jax.Array] = {}  # (entry, index) -> cut array
        self._pending: dict[str, dict[int, jax.Array]] = {}  # state writes made through opt.state, not yet synced
        for p in params:
            hold(p, self)

    @classmethod
    def build(cls, owner_state: dict, params: list[Parameter], shared: frozenset, order: list[str]) -> Pack:
        """Packs the entries ``params`` have in ``owner_state`` (equal shared entries, same keys: see
        :meth:`can_pack`)."""
        states = [owner_state.pop(p, {}) for p in params]
        state = {}
        for key in states[0]:
            if key in shared:
                state[key] = jnp.array(states[0][key], copy=True)
            else:
                state[key] = _concatenate([s[key] for s in states])
        return cls(owner_state, params, state, order)

    @staticmethod
    def can_pack(owner_state: dict, params: list[Parameter], shared: frozenset) -> bool:
        """Whether the parameters' existing states line up: the same keys, param-shaped entries, equal shared
        entries (the steps)."""
        states = [owner_state.get(p, {}) for p in params]
        keys = set(states[0])
        if any(set(s) != keys for s in states):
            return False
        for key in keys:
            if key in shared:
                values = {np.asarray(s[key]).tobytes() for s in states}
                if len(values) != 1:
                    return False
            elif (any(tuple(np.shape(s[key])) != p.shape for s, p in zip(states, params))
                  or len({jnp.asarray(s[key]).dtype for s in states}) != 1):
                return False
        return True

    def concatenated(self) -> jax.Array:
        """The parameters' current values as one flat array (what a first step initialises the state from)."""
        return _concatenate(list(map(_DATA, self.params)))

    def _cut(self, flat: jax.Array, b: int) -> list[jax.Array]:
        batch = self.batches[b]
        size, shape = self.sizes[batch[0]], self.shapes[batch[0]]
        if len(batch) == 1:
            return [_cut_one(flat, self._batch_offsets[b], size, shape)]
        return _cut_many(flat, self._batch_offsets[b], size, shape)

    def chain_state(self, decl: Any, static: tuple, dynamic: dict, kind: tuple) -> Any:
        """The chain's state for this step's chain ``kind``: the one a step left, or one translated from
        :meth:`entries` (the initial state for a pack without entries). Nothing is stored: :meth:`updated` keeps
        the state the step returns, so a step that fails changes nothing."""
        if self.chain is not None and self.kind == kind:
            return self.chain
        entries = self.entries()
        state = _engine.stored_chain_state(decl, static, dynamic, [self.concatenated()], [entries], entries)
        kept = {decl.step_name if name is _engine.STEP else name for name, _ in _engine.bucket_layout(decl, state)}
        self._staged = (kind, {key: value for key, value in entries.items() if key not in kept})
        return state

    def entries(self) -> dict:
        """The state under torch's names, each entry flat or (the step) one for all; nothing if never stepped.

        The entries kept once for all (the step) are copies, and the flat ones
        are only ever handed out cut (:meth:`entry`): the chain's own arrays
        never leave the pack, so a step may always donate them.
        """
        if self.chain is None:
            return self.loaded
        if self._entries is None:
            entries = _engine.packed_entries(self._decl, self.chain, self._found, self._flat)
            entries = {**self.extra, **entries}
            self._entries = {key: value if value.shape == (self.size,) else jnp.array(value, copy=True)
                             for key, value in entries.items()}
        return self._entries

    def is_per_element(self, key: str) -> bool:
        """Whether entry ``key`` holds one value per element (else it is kept once for all: the step)."""
        return self.entries()[key].shape == (self.size,)

    def entry(self, key: str, i: int) -> jax.Array:
        """State entry ``key`` of parameter ``i``: its slice (cut with its batch's, once per step), or the one
        array the pack keeps (the step)."""
        if not self.is_per_element(key):
            return self.entries()[key]
        if (key, i) not in self._views:
            b = self.batch_of[i]
            self._views.update({(key, j): v for j, v in zip(self.batches[b], self._cut(self.entries()[key], b))})
            for j in self.batches[b]:  # a write made since the last step wins over the buffer's old value
                if j in self._pending.get(key, {}):
                    self._views[(key, j)] = self._pending[key][j]
        return self._views[(key, i)]

    def entry_keys(self) -> list[str]:
        """The state's keys in torch's order."""
        return sorted(self.entries(), key=lambda k: self.order.index(k) if k in self.order else len(self.order))

    def keys_of(self, i: int) -> list[str]:
        """Parameter ``i``'s state keys (every packed parameter has the same)."""
        return self.entry_keys()

    def write(self, key: str, i: int, value: Any) -> bool:
        """Records ``opt.state[p][key] = value`` for the next :meth:`sync`; False if the layout cannot hold it."""
        value = value if isinstance(value, jax.Array) else jnp.asarray(value)
        if (key not in self.entries() or not self.is_per_element(key) or tuple(value.shape) != self.shapes[i]
                or value.dtype != self.entries()[key].dtype):
            return False
        self._pending.setdefault(key, {})[i] = value
        self._views[(key, i)] = value
        return True

    def sync(self) -> bool:
        """Writes into the flat buffers the state entries assigned since the last step.

        Returns False, changing nothing, when an assigned ``p.data`` has another
        shape, dtype or device than the pack's: the caller then releases the pack.
        """
        refs = arrays_taken(self.params, self.refs, self.shapes, [self.dtype] * len(self.params), self.devices)
        if refs is None:
            return False
        self.refs = refs
        if self._pending and self.chain is None:  # not stepped since it was packed: its torch-named entries
            for key, writes in self._pending.items():
                self.loaded[key] = _write(self.loaded[key], self._offsets(list(writes)), list(writes.values()))
        elif self._pending:  # the chain's leaves (or an entry kept beside them)
            leaves, treedef = jax.tree.flatten(self.chain)
            where = {name: j for j, (name, i) in enumerate(self._found) if i is not None}
            for key, writes in self._pending.items():
                offsets, values = self._offsets(list(writes)), list(writes.values())
                if key in where:
                    leaves[where[key]] = _write(leaves[where[key]], offsets, values)
                else:
                    self.extra[key] = _write(self.extra[key], offsets, values)
            self.chain, self._entries = jax.tree.unflatten(treedef, leaves), None
        # the cut views go too, before the step: a step's peak memory holds no second copy of the state
        # (an array a user still holds stays theirs)
        self._pending, self._views = {}, {}
        return True

    def _offsets(self, indices: list[int]) -> jax.Array:
        return jnp.asarray([self.offsets[i] for i in indices], jnp.int32)

    def updated(self, arrays: list, state: Any, decl: Any, kind: tuple) -> None:
        """Takes the parameters' arrays and the chain state a step returned (the old ones were donated to it)."""
        self.refs, self.chain, self.loaded, self._entries = list(map(weakref.ref, arrays)), state, None, None
        if kind != self.kind:
            self.kind, self._decl, self._found = kind, decl, _engine.bucket_layout(decl, state)
            self.extra = self._staged[1] if self._staged[0] == kind else {}
        self._staged = (None, {})
        self._views.clear()

    def release(self) -> None:
        """Hands every parameter's state back as separate arrays; the pack is empty afterwards.

        State written through ``opt.state`` is kept.
        """
        keys = self.entry_keys()
        shared = {key: jnp.array(self.entries()[key], copy=True) for key in keys if not self.is_per_element(key)}
        for i, p in enumerate(self.params):
            entry = {key: shared[key] if key in shared else self.entry(key, i) for key in keys}
            if entry:
                self.owner_state[p] = entry
            forget(p, self)
        self.params, self.refs, self.loaded, self.chain, self._entries, self.extra = [], [], {}, None, None, {}
        self._views, self._pending = {}, {}
        self.alive = False


def arrays_taken(params: list[Parameter], refs: list, shapes: list, dtypes: list, devices: Any) -> list | None:
    """Weak references to the parameters' arrays, taking any ``p.data`` assigned since ``refs`` were made; None when
    one has another shape, dtype or device (a pack's or a store's layout cannot hold it)."""
    arrays = list(map(_DATA, params))
    if all(map(operator.is_, arrays, map(weakref.ref.__call__, refs))):
        return refs
    changed = [(i, a) for i, (a, old) in enumerate(zip(arrays, refs)) if a is not old()]
    if any(not isinstance(a, jax.Array) or tuple(a.shape) != shapes[i] or a.dtype != dtypes[i]
           or a.sharding.device_set != devices for i, a in changed):
        return None
    return list(map(weakref.ref, arrays))


class StateEntry(MutableMapping):
    """``opt.state[p]`` of a packed or stored parameter: reads cut its slices (a pack's) or return the chain's
    arrays (a store's, :mod:`gradtx.optim._stores`), writes go through.

    A write the pack or store cannot hold (another shape or dtype, a step of
    its own, a new or deleted key) hands its state back to separate arrays
    first; the entry then reads and writes ``p``'s own dict.
    """

    def __init__(self, opt: Any, p: Parameter) -> None:
        self._opt, self._p = opt, p

    def _where(self) -> tuple[Pack | None, int | None]:
        return packed_at(self._opt, self._p)

    def __getitem__(self, key: str) -> Any:
        pack, i = self._where()
        if pack is None:
            return self._opt._state[self._p][key]
        if key not in pack.keys_of(i):
            raise KeyError(key)
        return pack.entry(key, i)

    def __setitem__(self, key: str, value: Any) -> None:
        pack, i = self._where()
        if pack is not None and pack.write(key, i, value):
            return
        if pack is not None:
            pack.release()
        self._opt._state[self._p][key] = value

    def __delitem__(self, key: str) -> None:
        pack, _ = self._where()
        if pack is not None:
            pack.release()
        del self._opt._state[self._p][key]

    def __iter__(self) -> Iterator[str]:
        pack, i = self._where()
        return iter(pack.keys_of(i) if pack is not None else list(self._opt._state.get(self._p, {})))

    def __len__(self) -> int:
        pack, i = self._where()
        return len(pack.keys_of(i)) if pack is not None else len(self._opt._state.get(self._p, {}))

    def __repr__(self) -> str:
        return repr(dict(self))

    def copy(self) -> dict:
        """The entries now, as a plain dict."""
        return {key: self[key] for key in self}

    # views of a snapshot, as a dict's (reversible, printable); writes go through the entry itself
    def keys(self):  # noqa: ANN201 - dict's view types
        return self.copy().keys()

    def items(self):  # noqa: ANN201
        return self.copy().items()

    def values(self):  # noqa: ANN201
        return self.copy().values()


class StateView(MutableMapping):
    """``opt.state``: ``{Parameter: {torch name: array}}``, live over the optimizer's storage.

    A packed or stored parameter maps to a :class:`StateEntry` over its pack or
    store; one whose state was handed back (until the next step stores it) to
    its own dict. Reading never changes the storage.
    Like torch's ``defaultdict(dict)``, ``opt.state[p]`` of a parameter without
    state is an empty dict, added on first access.
    """

    def __init__(self, opt: Any) -> None:
        self._opt = opt

    def __getitem__(self, p: Any) -> Any:
        pack, _ = packed_at(self._opt, p)
        return StateEntry(self._opt, p) if pack is not None else self._opt._state[p]

    def __setitem__(self, p: Any, entry: Any) -> None:
        pack, _ = packed_at(self._opt, p)
        if pack is not None:
            pack.release()
        self._opt._state[p] = entry

    def __delitem__(self, p: Any) -> None:
        pack, _ = packed_at(self._opt, p)
        if pack is not None:
            pack.release()
        del self._opt._state[p]

    def get(self, p: Any, default: Any = None) -> Any:
        """``opt.state[p]`` if ``p`` has state, else ``default`` (adds no entry, as ``dict.get``)."""
        pack, _ = packed_at(self._opt, p)
        return StateEntry(self._opt, p) if pack is not None else self._opt._state.get(p, default)

    def __contains__(self, p: object) -> bool:
        pack, i = packed_at(self._opt, p)
        return bool(pack.keys_of(i)) if pack is not None else p in self._opt._state

    def __iter__(self) -> Iterator[Any]:
        yield from list(self._opt._state)
        for pack in list(self._opt._packs):
            if pack.alive:
                yield from [p for i, p in enumerate(list(pack.params)) if pack.keys_of(i)]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr({p: dict(entry) for p, entry in self.items()})


def packed_at(opt: Any, p: Any) -> tuple[Pack | None, int | None]:
    """The pack of ``opt`` that holds ``p``'s state (and its value, unless ``p.data`` was assigned since the last
    step), and ``p``'s place in it; ``(None, None)`` if none."""
    pack = pack_of(p, opt) if isinstance(p, Parameter) else None
    if pack is not None:
        return pack, pack.slot[id(p)]
    return None, None


# --- which parameters an optimizer packs -------------------------------------------------------------------


def release_packs(opt) -> None:
    """Hands every pack of ``opt`` back to separate arrays (before its state is replaced or stepped otherwise)."""
    packs, opt._packs = opt._packs, []
    for pack in packs:
        pack.release()


def owned_by(opt: Any, pack: Any) -> bool:
    """Whether ``pack`` (a live pack or store) is ``opt``'s: made for its state, and so held in ``opt._packs``."""
    return pack.owner_state is opt._state


def prune(opt: Any) -> None:
    """Drops the packs and stores released since they were listed from ``opt._packs``."""
    if not all(map(_ALIVE, opt._packs)):
        opt._packs = [pack for pack in opt._packs if pack.alive]


def hold(p: Parameter, pack: Any) -> None:
    """Records that ``pack`` (a pack or store) holds ``p``'s state for its optimizer, in place of any other of the
    same optimizer's."""
    refs = [ref for ref in _PACK_OF.get(p, ()) if (held := ref()) is not None and held.alive
            and held.owner_state is not pack.owner_state]
    _PACK_OF[p] = [*refs, weakref.ref(pack)]


def forget(p: Parameter, pack: Any) -> None:
    """Removes ``p``'s entry for ``pack`` (on release): the entries of other packs stay."""
    refs = [ref for ref in _PACK_OF.get(p, ()) if ref() is not pack]
    if refs:
        _PACK_OF[p] = refs
    else:
        _PACK_OF.pop(p, None)


def pack_of(p: Parameter, opt: Any) -> Pack | None:
    """The live pack (or store) of ``opt`` that holds ``p``'s state, or None."""
    for ref in _PACK_OF.get(p, ()):
        pack = ref()
        if pack is not None and pack.alive and owned_by(opt, pack):
            return pack
    return None


def packs_holding(p: Parameter) -> list:
    """The live packs and stores, of every optimizer that steps ``p``, holding ``p``'s state."""
    return [pack for pack in (ref() for ref in _PACK_OF.get(p, ())) if pack is not None and pack.alive]


def _packable(opt, p: Parameter) -> bool:
    """Whether ``p`` may join a pack: small, at least 1-d, real floating point, on one device.

    0-d parameters stay apart: XLA simplifies an all-scalar update differently
    (a last-bit difference), and the tiers agree bit for bit.
    """
    pack = pack_of(p, opt)
    if pack is not None and pack.flat:
        return p.size <= opt.pack_max_numel
    data = p._data
    return (isinstance(data, jax.Array) and jnp.issubdtype(data.dtype, jnp.floating) and data.ndim >= 1
            and data.size <= opt.pack_max_numel and len(data.sharding.device_set) == 1)


def sync_packs(opt) -> None:
    """Writes what users assigned since the last step (``p.data``) into ``opt``'s packs and stores, once per step;
    releases one that cannot take it (another shape, dtype or device)."""
    prune(opt)  # released through opt.state since the last step
    failed = [pack for pack in opt._packs if not pack.sync()]
    for pack in failed:
        pack.release()
    prune(opt)


def group_packs(opt, group: dict[str, Any], work: list[Parameter]) -> list[Pack]:
    """The packs the default tier updates for this group: its small parameters, by dtype and device (runs of
    ``PACK_MAX_PARAMS`` same-shape ones in packs of their own).

    Packing needs an elementwise chain whose state entries all have the
    parameter's shape, every parameter of the group with a gradient (torch
    leaves the others untouched), and states that line up (equal steps).
    Otherwise, and in the other tiers, the group's packs are released and its
    parameters stored (:mod:`gradtx.optim._stores`).
    """
    params = group["params"]
    if opt._tier(group) != "fused":
        for pack in {pack_of(p, opt) for p in params} - {None}:
            if pack.flat:
                pack.release()
        return []
    plan = opt._plans.get(id(group))
    if (plan is not None and len(work) == len(params) and all(map(_ALIVE, plan[1]))
            and plan[0] == (opt.pack_max_numel, *map(id, params))):
        return plan[1]  # the same parameters and packs as at the last step
    packs = _plan_packs(opt, group, work)
    opt._plans[id(group)] = ((opt.pack_max_numel, *map(id, params)), packs)
    return packs


def _plan_packs(opt, group: dict[str, Any], work: list[Parameter]) -> list[Pack]:
    cls = type(opt)
    current = {id(pack): pack for pack in (pack_of(p, opt) for p in group["params"]) if pack is not None and pack.flat}
    wanted: dict[tuple, list[Parameter]] = {}
    if cls.elementwise and len(work) == len(group["params"]):
        for p in group["params"]:
            if _packable(opt, p):
                wanted.setdefault((p.dtype, tuple(p._data.sharding.device_set)), []).append(p)
    order = _engine.order_keys(cls)
    result = []
    for params in [[same[i] for i in indices] for same in wanted.values() for indices in _pack_members(same)]:
        pack = pack_of(params[0], opt)
        if pack is not None and pack.flat and pack.params == params:
            result.append(pack)
            current.pop(id(pack), None)
            continue
        shared = _flat_state_shared(opt, group, params) if len(params) > 1 else None
        if shared is None:
            continue
        for pack in {pack_of(p, opt) for p in params} - {None}:
            pack.release()
        if Pack.can_pack(opt._state, params, shared):
            pack = Pack.build(opt._state, params, shared, order)
            opt._packs.append(pack)
            result.append(pack)
    for pack in current.values():
        pack.release()
    prune(opt)
    return result


def _pack_members(params: list[Parameter]) -> list[list[int]]:
    """The packs of a group's packable parameters (indices): each run of ``PACK_MAX_PARAMS`` of one shape, then
    one pack of the others. Alike packs share one compiled program; a pack of mixed shapes is one program."""
    runs, rest = _engine.alike_runs([p.shape for p in params], PACK_MAX_PARAMS)
    return runs + ([rest] if rest else [])


def _flat_state_shared(opt, group: dict[str, Any], params: list[Parameter]) -> frozenset | None:
    """The entries a pack shares (its step...), or None when some state entry is not elementwise.

    Every entry of the group's chain must have the parameter's shape, or be one
    the chain keeps once for a whole tree (the step, NAdam's ``mu_product``):
    the pack then keeps one of it, as a bucket does.
    """
    cls = type(opt)
    size = sum(p.size for p in params)
    flat = jax.ShapeDtypeStruct((size,), params[0].dtype)
    static, dynamic = _engine.split_options(cls, group)
    shared, bucketable = _engine.shared_entries(cls, static, dynamic, (size,), flat.dtype)
    entries = _engine.state_entries(cls, group, flat)
    if size >= 2**31 or not bucketable:
        return None
    if all(shape == (size,) or key in shared for key, (shape, _) in entries.items()):
        return frozenset(shared)
    return None
