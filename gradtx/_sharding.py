"""Sharded optimizer state with JAX's own SPMD machinery: no communication layer of gradtx's own.

Optimizer state is created on each parameter's sharding by every transform
(``tree_zeros_like`` keeps it, under jit too), so a model sharded over a
``jax.sharding.Mesh`` steps with its state sharded the same way.
:func:`zero_redundancy` goes further, ZeRO stage 1 (Rajbhandari et al., 2020,
https://arxiv.org/abs/1910.02054): it shards the state of *replicated*
parameters along a data-parallel mesh axis, so each device holds 1/N of it;
XLA inserts the gathers, and the numbers are those of the unsharded step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradtx._base import GradientTransformation, with_extra_args_support

__all__ = ["ZeroRedundancyState", "state_sharding", "zero_redundancy"]


class ZeroRedundancyState(NamedTuple):
    """State of :func:`zero_redundancy`."""

    inner_state: Any  # the inner state, each array sharded along the data-parallel axis where it divides


def state_sharding(shape: tuple[int, ...], mesh: Mesh, axis: str) -> NamedSharding:
    """The sharding :func:`zero_redundancy` gives an array of ``shape``.

    The first dimension divisible by the size of ``axis`` is split along it; an
    array with no such dimension (a scalar count, an odd-sized vector) stays
    replicated.
    """
    size = mesh.shape[axis]
    spec = [None] * len(shape)
    for i, n in enumerate(shape):
        if n % size == 0 and n >= size:
            spec[i] = axis
            break
    return NamedSharding(mesh, PartitionSpec(*spec))


def _place(tree: Any, mesh: Mesh, axis: str) -> Any:
    def place(x):
        sharding = state_sharding(x.shape, mesh, axis)
        if isinstance(x, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(x, sharding)
        return jax.device_put(x, sharding)

    return jax.tree.map(place, tree)


def _replicate(tree: Any, mesh: Mesh) -> Any:
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(x):
        if isinstance(x, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(x, replicated)
        return jax.device_put(x, replicated)

    return jax.tree.map(place, tree)


def zero_redundancy(inner: Any, mesh: Mesh, axis: str = "data", *,
                    replicate_updates: bool = True) -> GradientTransformation:
    """Shards ``inner``'s state along the mesh axis ``axis`` (ZeRO-1); torch's ``ZeroRedundancyOptimizer``.

    Use it with parameters replicated over ``axis`` (data parallelism): each
    device then keeps and updates ``1/mesh.shape[axis]`` of every state array
    whose leading divisible dimension allows it. The updates are the unsharded
    step's, bit for bit up to XLA's reduction order. Works under ``jax.jit`` and
    outside it.

    As in ZeRO stage 1 (Rajbhandari et al., 2020, section 5.1), where each rank
    updates its partition and the updated parameters are then all-gathered,
    the updates are constrained to be replicated over ``mesh``: replicated
    parameters stay replicated after ``apply_updates``, instead of XLA's
    sharding propagation carrying the state's split onto them.

    Args:
      inner: the transformation whose state is sharded.
      mesh: the devices.
      axis: the data-parallel axis of ``mesh`` the state is split along.
      replicate_updates: constrain the updates to be replicated over ``mesh``
        (the default, for replicated parameters); ``False`` leaves their
        sharding to XLA, for parameters sharded along other axes of ``mesh``.

    Example::

        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
        tx = gradtx.zero_redundancy(gradtx.adam(1e-3), mesh, "data")
    """
    inner = with_extra_args_support(inner)
    if axis not in mesh.shape:
        raise ValueError(f"zero_redundancy: the mesh has axes {tuple(mesh.shape)}, not {axis!r}")

    def init(params):
        return ZeroRedundancyState(_place(inner.init(params), mesh, axis))

    def update(updates, state, params=None, **extra_args):
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        if replicate_updates:
            updates = _replicate(updates, mesh)
        return updates, ZeroRedundancyState(_place(inner_state, mesh, axis))

    return GradientTransformation(init, update)
