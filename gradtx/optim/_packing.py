"""Packed storage: a param group's small parameters, and their state, held in one flat buffer each.

Many small tensors cost per tensor, not per byte: on a CPU each array crossing
a compiled program's boundary costs microseconds, and each parameter's update is
a few kernels of its own (``benchmarks/FINDINGS.md``). So the default tier of an
elementwise optimizer (``Optimizer.elementwise``) keeps a group's small
parameters of one dtype *packed*: the parameters concatenated into one flat
buffer, and each state entry (``exp_avg``...) into one flat buffer too, with
one step count. The compiled step then updates the pack as if it were one
parameter (an elementwise chain gives each element the numbers it would give it
in its own tensor), concatenating the gradients inside the program.

What users see does not change: ``p.data`` returns the parameter's slice (a
copy, made once per step and cached), ``p.shape`` and ``p.dtype`` read the
layout, and assigning ``p.data`` or reading ``opt.state`` first hands the pack
back to separate arrays (:meth:`Pack.release`); the next step packs again.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine
from gradtx.optim._parameter import Parameter

__all__ = ["Pack", "group_packs", "release_packs"]


VIEW_BATCH = 32  # parameters of one shape cut by one program (0.4 s to compile per shape; ~7 us per view)


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


class Pack:
    """Parameters of one group and dtype in one flat buffer, with their state flat under torch's names.

    Args:
      owner_state: the optimizer's per-parameter state dict, where :meth:`release`
        puts each parameter's entries back.
      params: the boxes, in their group's order.
      flat: the concatenated parameters.
      state: ``{torch name: flat array}``; the entries a chain keeps once for a tree (the step) one for all
        (empty before the first step).
      order: torch's key order of a state entry.
    """

    def __init__(self, owner_state: dict, params: list[Parameter], flat: jax.Array, state: dict,
                 order: list[str]) -> None:
        self.owner_state = owner_state
        self.order = order
        self.params = list(params)
        self.shapes = [p.shape for p in params]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = [int(o) for o in np.cumsum([0] + self.sizes[:-1])]
        self.dtype = flat.dtype
        self.slot = {id(p): i for i, p in enumerate(params)}
        # Views are cut in batches: VIEW_BATCH parameters of one shape per program, the rest one by one.
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
        self.flat = flat
        self.state = state
        self._views: dict[int, jax.Array] = {}
        for p in params:
            p._data = None
            p._pack = self

    @classmethod
    def build(cls, owner_state: dict, params: list[Parameter], shared: frozenset, order: list[str]) -> Pack:
        """Packs ``params`` and the entries they have in ``owner_state`` (equal shared entries, same keys: see
        :meth:`can_pack`)."""
        states = [owner_state.pop(p, {}) for p in params]
        flat = _concatenate([p.data for p in params])
        state = {}
        for key in states[0]:
            if key in shared:
                state[key] = jnp.array(states[0][key], copy=True)
            else:
                state[key] = _concatenate([s[key] for s in states])
        return cls(owner_state, params, flat, state, order)

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
            elif any(tuple(np.shape(s[key])) != p.shape for s, p in zip(states, params)):
                return False
        return True

    @property
    def alive(self) -> bool:
        """False once :meth:`release` has handed the parameters back."""
        return self.flat is not None

    def shape_of(self, p: Parameter) -> tuple[int, ...]:
        return self.shapes[self.slot[id(p)]]

    def _cut(self, flat: jax.Array, b: int) -> list[jax.Array]:
        batch = self.batches[b]
        size, shape = self.sizes[batch[0]], self.shapes[batch[0]]
        if len(batch) == 1:
            return [_cut_one(flat, self._batch_offsets[b], size, shape)]
        return _cut_many(flat, self._batch_offsets[b], size, shape)

    def view(self, p: Parameter) -> jax.Array:
        """``p``'s current value: its slice of the flat buffer (cut with its batch's, once per step)."""
        i = self.slot[id(p)]
        if i not in self._views:
            b = self.batch_of[i]
            self._views.update(zip(self.batches[b], self._cut(self.flat, b)))
        return self._views[i]

    def updated(self, flat: jax.Array, state: dict) -> None:
        """Takes the buffers a step returned (the old ones were donated to it)."""
        self.flat, self.state = flat, state
        self._views.clear()

    def release(self) -> None:
        """Hands every parameter and its state back as separate arrays; the pack is empty afterwards."""
        params, self.params = self.params, []
        keys = sorted(self.state, key=lambda k: self.order.index(k) if k in self.order else len(self.order))
        per_element = [key for key in keys if self.state[key].shape == self.flat.shape]
        # one array for an entry the parameters share (the step), as a bucket keeps it
        shared = {key: jnp.array(self.state[key], copy=True) for key in keys if key not in per_element}
        for b, batch in enumerate(self.batches):
            data = self._cut(self.flat, b)
            cut = {key: self._cut(self.state[key], b) for key in per_element}
            for j, i in enumerate(batch):
                p = params[i]
                p._data = self._views.get(i, data[j])
                p._pack = None
                entry = {key: cut[key][j] if key in cut else shared[key] for key in keys}
                if entry:
                    self.owner_state[p] = entry
        self.flat, self.state, self._views = None, {}, {}


# --- which parameters an optimizer packs -------------------------------------------------------------------


def release_packs(opt) -> None:
    """Hands every pack of ``opt`` back to separate arrays (before ``opt.state`` is read or replaced)."""
    packs, opt._packs = opt._packs, []
    for pack in packs:
        pack.release()


def _packable(opt, p: Parameter) -> bool:
    """Whether ``p`` may join a pack: small, at least 1-d, real floating point, on one device.

    0-d parameters stay apart: XLA simplifies an all-scalar update differently
    (a last-bit difference), and the tiers agree bit for bit.
    """
    if len(p._owners) > 1:  # another optimizer steps it too: each keeps its own state, apart
        return False
    if p._pack is not None:
        return p._pack in opt._packs and p.size <= opt.pack_max_numel
    data = p._data
    return (isinstance(data, jax.Array) and jnp.issubdtype(data.dtype, jnp.floating) and data.ndim >= 1
            and data.size <= opt.pack_max_numel and len(data.sharding.device_set) == 1)


def group_packs(opt, group: dict[str, Any], work: list[Parameter]) -> list[Pack]:
    """The packs the default tier updates for this group: its small parameters, by dtype and device.

    Packing needs an elementwise chain whose state entries all have the
    parameter's shape, every parameter of the group with a gradient (torch
    leaves the others untouched), and states that line up (equal steps).
    Otherwise the group's packs are released and its parameters stepped one by one.
    """
    params = group["params"]
    opt._packs = [pack for pack in opt._packs if pack.alive]  # a p.data assignment released its pack
    plan = opt._plans.get(id(group))
    if (plan is not None and len(work) == len(params) and all(pack in opt._packs for pack in plan[1])
            and plan[0] == (opt.pack_max_numel, *map(id, params))):
        return plan[1]  # the same parameters and packs as at the last step
    packs = _plan_packs(opt, group, work)
    opt._plans[id(group)] = ((opt.pack_max_numel, *map(id, params)), packs)
    return packs


def _plan_packs(opt, group: dict[str, Any], work: list[Parameter]) -> list[Pack]:
    cls = type(opt)
    mine = [p._pack for p in group["params"] if p._pack is not None]
    for pack in set(mine):
        if pack not in opt._packs:  # a pack of another optimizer (or orphaned): hand it back first
            pack.release()
    current = {id(pack): pack for pack in mine if pack in opt._packs}
    wanted: dict[tuple, list[Parameter]] = {}
    if cls.elementwise and len(work) == len(group["params"]):
        for p in group["params"]:
            if _packable(opt, p):
                data = p._pack.flat if p._pack is not None else p._data
                wanted.setdefault((p.dtype, tuple(data.sharding.device_set)), []).append(p)
    order = _engine.order_keys(cls)
    result = []
    for params in wanted.values():
        pack = params[0]._pack
        if pack is not None and pack.params == params:
            result.append(pack)
            current.pop(id(pack), None)
            continue
        shared = _flat_state_shared(opt, group, params) if len(params) > 1 else None
        if shared is None:
            continue
        for p in params:
            if p._pack is not None:
                p._pack.release()
        if Pack.can_pack(opt._state, params, shared):
            pack = Pack.build(opt._state, params, shared, order)
            opt._packs.append(pack)
            result.append(pack)
    for pack in current.values():
        pack.release()
    opt._packs = [pack for pack in opt._packs if pack.alive]
    return result


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
