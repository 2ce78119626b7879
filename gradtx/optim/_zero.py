"""``ZeroRedundancyOptimizer``: any facade optimizer with its state sharded along a data-parallel mesh axis (ZeRO-1).

torch's :class:`torch.distributed.optim.ZeroRedundancyOptimizer` wraps an
optimizer class so that each of the N data-parallel ranks keeps the state of
1/N of the parameters (ZeRO stage 1, Rajbhandari et al., 2020,
https://arxiv.org/abs/1910.02054). Here every process sees the whole
``jax.sharding.Mesh``, so the split is per array instead of per parameter: each
state array is sharded along the mesh axis (see
:func:`gradtx.state_sharding`), XLA inserts the collectives, and the
optimizer is in every other respect ``optimizer_class(params, **defaults)``.

The optimizer is a subclass of ``optimizer_class`` made once per
``(optimizer_class, mesh, axis)``: its declaration's chain is the original one
wrapped in :func:`gradtx.zero_redundancy`, so the state names, the
``state_dict`` layout, the param groups and the hooks are the original class's.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradtx.optim._optimizer import Optimizer
from gradtx import state_sharding, zero_redundancy

__all__ = ["ZeroRedundancyOptimizer"]


def _replicate_off_mesh(p: Any, mesh: Mesh) -> None:
    """Places a parameter that is not on the mesh's devices replicated over them (each rank holds the model)."""
    if p.data.sharding.device_set != set(mesh.devices.flat):
        # From a copy: the shard on the array's own device would share its buffer, which a user may still hold
        # (and the donating step would then delete it).
        p.data = jax.device_put(jnp.array(p.data, copy=True), NamedSharding(mesh, PartitionSpec()))


class ZeroRedundancyOptimizer(Optimizer):
    """torch's ``ZeroRedundancyOptimizer``: ``optimizer_class(params, **defaults)`` with its state sharded (ZeRO-1).

    In data parallelism every device holds the whole model and, with a plain
    optimizer, the whole optimizer state (two moments per parameter for Adam:
    twice the model). ZeRO stage 1 (Rajbhandari et al., 2020,
    https://arxiv.org/abs/1910.02054) splits that state across the data-parallel
    devices, so each keeps ``1/mesh.shape[axis]`` of it. Here every state array
    is split along its first dimension divisible by the axis size
    (:func:`gradtx.state_sharding`; a scalar step count, or an array
    without such a dimension, stays replicated). The parameters are not split:
    they keep their sharding across steps, replicated over ``axis`` as data
    parallelism has them. The numbers are those of ``optimizer_class``, bit for
    bit: XLA gathers what each update needs and reorders no arithmetic, except
    in a reduction over a split dimension (Adafactor's factored moments are
    means over rows and columns), which sums the shards' partial sums and so
    agrees to float rounding.

    The returned object is an instance of ``optimizer_class`` (a subclass of it
    made once per ``(optimizer_class, mesh, axis)``) and of this class: same
    ``param_groups``, ``state`` names, ``step``, hooks, ``state_dict()`` in torch's
    layout and learning-rate schedulers as ``optimizer_class(params, **defaults)``.
    ``load_state_dict`` places the loaded state sharded again.

    torch's ``consolidate_state_dict(to=rank)`` has no counterpart: torch needs it
    because each rank holds only its shard, whereas here ``state_dict()`` already
    gathers every array to host NumPy arrays (one global view of the mesh per
    process). Across hosts, gather with a checkpointing library such as orbax,
    which writes each shard from the process that holds it.

    Parameters on other devices than the mesh's (an unplaced ``jnp`` array, say)
    are placed replicated over the mesh when they join a param group, as each
    data-parallel rank holds the parameters in torch.

    Example::

        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
        opt = gradtx.optim.ZeroRedundancyOptimizer(params, gradtx.optim.AdamW, mesh=mesh, lr=1e-3)

    Args:
      params: parameters or param groups, as ``optimizer_class`` takes them.
      optimizer_class: a facade optimizer class (:class:`gradtx.optim.Adam`, ...)
        whose step is a per-parameter chain (not :class:`gradtx.optim.LBFGS`).
      mesh: the ``jax.sharding.Mesh`` of the devices the state is split over.
      axis: the data-parallel axis of ``mesh`` the state is split along (torch's
        process group).
      **defaults: ``optimizer_class``'s arguments (``lr=...``, ``betas=...``).
    """

    optimizer_class: type[Optimizer]  # the wrapped class, on each made subclass
    mesh: Mesh
    axis: str

    def __new__(cls, params: Any = None, optimizer_class: Any = None, *args: Any, mesh: Mesh | None = None,
                axis: str = "data", **defaults: Any) -> Any:
        if cls is not ZeroRedundancyOptimizer:  # a made subclass (unpickling, copying)
            return super().__new__(cls)
        if args:
            raise TypeError("ZeroRedundancyOptimizer takes the optimizer's options as keywords (lr=..., betas=...)")
        if mesh is None:
            raise TypeError("ZeroRedundancyOptimizer needs mesh=jax.sharding.Mesh(...) (the data-parallel devices)")
        return super().__new__(_zero_class(optimizer_class, mesh, axis))

    def __init__(self, params: Any, optimizer_class: type[Optimizer], *, mesh: Mesh, axis: str = "data",
                 **defaults: Any) -> None:
        optimizer_class.__init__(self, params, **defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group as ``optimizer_class`` does; parameters off the mesh are placed replicated on it."""
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            _replicate_off_mesh(p, self.mesh)
            if not p.data.sharding.is_fully_replicated:
                raise ValueError(
                    f"ZeroRedundancyOptimizer: a parameter of shape {p.shape} is sharded as {p.data.sharding}; "
                    "ZeRO-1 shards the state of parameters replicated over the mesh (data parallelism). The state "
                    "of a sharded parameter is already sharded like it: use the plain optimizer class for it")

    def load_state_dict(self, state_dict: dict[str, Any], match: str = "position", strict: bool = True) -> Any:
        """Loads as ``optimizer_class`` does (arguments and result alike), then shards the loaded state again.

        torch's ``ZeroRedundancyOptimizer.load_state_dict`` takes a consolidated
        state dict and keeps each rank's shard; here every state array is put
        back with :func:`gradtx.state_sharding` along ``axis``.
        """
        result = super().load_state_dict(state_dict, match=match, strict=strict)
        self._zero_shard_state()
        return result

    def _zero_shard_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                entry = self.state.get(p)
                if entry:
                    self.state[p] = {k: _placed(v, self.mesh, self.axis) for k, v in entry.items()}

    def __reduce__(self) -> tuple:
        # The made class is rebuilt from its key; the mesh travels as device ids (devices do not pickle).
        devices = np.vectorize(lambda d: d.id, otypes=[int])(self.mesh.devices).tolist()
        return _remake, (self.optimizer_class, devices, tuple(self.mesh.axis_names), self.axis), self.__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Unpickled arrays come back unsharded: replicate the parameters over the mesh and shard the state again.
        for group in self.param_groups:
            for p in group["params"]:
                _replicate_off_mesh(p, self.mesh)
        self._zero_shard_state()


def _placed(value: Any, mesh: Mesh, axis: str) -> Any:
    if not isinstance(value, jax.Array):
        return value
    return jax.device_put(value, state_sharding(value.shape, mesh, axis))


def _remake(optimizer_class: type[Optimizer], device_ids: list, axis_names: tuple, axis: str) -> Any:
    by_id = {d.id: d for d in jax.devices()}
    mesh = Mesh(np.vectorize(by_id.__getitem__, otypes=[object])(np.array(device_ids)), axis_names)
    return Optimizer.__new__(_zero_class(optimizer_class, mesh, axis))


@functools.cache
def _zero_class(optimizer_class: type[Optimizer], mesh: Mesh, axis: str) -> type:
    """The subclass of ``optimizer_class`` whose chain is wrapped in ``zero_redundancy(., mesh, axis)``."""
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
        raise TypeError(f"optimizer_class must be a gradtx.optim optimizer class, got {optimizer_class!r}")
    if issubclass(optimizer_class, ZeroRedundancyOptimizer):
        raise TypeError("optimizer_class is already a ZeroRedundancyOptimizer")
    if optimizer_class.chain_builder is None:
        raise TypeError(f"ZeroRedundancyOptimizer shards the state of a per-parameter chain; "
                        f"{optimizer_class.__name__} is not one")
    if axis not in mesh.shape:
        raise ValueError(f"ZeroRedundancyOptimizer: the mesh has axes {tuple(mesh.shape)}, not {axis!r}")
    builder = optimizer_class.chain_builder

    @functools.wraps(builder)
    def chain_builder(*args: Any, **options: Any) -> Any:
        return zero_redundancy(builder(*args, **options), mesh, axis)

    namespace = {"chain_builder": staticmethod(chain_builder), "optimizer_class": optimizer_class, "mesh": mesh,
                 "axis": axis, "__module__": __name__, "__doc__": optimizer_class.__doc__,
                 "__qualname__": f"ZeroRedundancyOptimizer[{optimizer_class.__name__}]"}
    return type("ZeroRedundancyOptimizer", (ZeroRedundancyOptimizer, optimizer_class), namespace)
