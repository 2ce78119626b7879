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

from gradtx.optim.parameter import Parameter

__all__ = ["Pack"]


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
      state: ``{torch name: flat array}``, the step a scalar shared by all (empty before the first step).
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
    def build(cls, owner_state: dict, params: list[Parameter], step_names: frozenset, order: list[str]) -> Pack:
        """Packs ``params`` and the entries they have in ``owner_state`` (equal steps, same keys: see :meth:`can_pack`)."""
        states = [owner_state.pop(p, {}) for p in params]
        flat = _concatenate([p.data for p in params])
        state = {}
        for key in states[0]:
            if key in step_names:
                state[key] = jnp.array(states[0][key], copy=True)
            else:
                state[key] = _concatenate([s[key] for s in states])
        return cls(owner_state, params, flat, state, order)

    @staticmethod
    def can_pack(owner_state: dict, params: list[Parameter], step_names: frozenset) -> bool:
        """Whether the parameters' existing states line up: the same keys, param-shaped entries, equal steps."""
        states = [owner_state.get(p, {}) for p in params]
        keys = set(states[0])
        if any(set(s) != keys for s in states):
            return False
        for key in keys:
            if key in step_names:
                steps = {float(np.asarray(s[key])) for s in states}
                if len(steps) != 1:
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
        for b, batch in enumerate(self.batches):
            data = self._cut(self.flat, b)
            cut = {key: self._cut(self.state[key], b) for key in keys if self.state[key].ndim}
            for j, i in enumerate(batch):
                p = params[i]
                p._data = self._views.get(i, data[j])
                p._pack = None
                entry = {key: cut[key][j] if key in cut else jnp.array(self.state[key], copy=True) for key in keys}
                if entry:
                    self.owner_state[p] = entry
        self.flat, self.state, self._views = None, {}, {}
