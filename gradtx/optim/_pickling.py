"""An optimizer's arrays as NumPy in its pickle, so that the pickle names no private jax function.

A ``jax.Array`` pickles through ``jax._src.array._reconstruct_array``: a private
name that a later jax may move, which would make old checkpoints unloadable.
``Optimizer.__getstate__`` passes everything it pickles through :func:`to_host`,
which replaces each jax array (in the per-parameter state, the param groups'
options, the defaults and the parameter trees' other leaves) by a
:class:`HostArray` holding a NumPy copy; ``__setstate__`` turns them back into
jax arrays with :func:`from_host`. NumPy arrays given by the user stay NumPy
arrays. Parameter boxes are left to their own pickling.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _packing
from gradtx.optim._parameter import Parameter
from gradtx.optim._required import required

__all__ = ["HostArray", "from_host", "optimizer_state", "restore_optimizer", "to_host"]


class HostArray:
    """A jax array's value, kept as NumPy in a pickle (made a jax array again on unpickling); not a pytree node."""

    __slots__ = ("value", "weak")

    def __init__(self, array: jax.Array) -> None:
        self.value = np.asarray(jax.device_get(array))  # the array's contents, same shape and dtype
        self.weak = bool(getattr(array, "weak_type", False))  # a weakly typed scalar (jnp.asarray(0.1)) stays weak

    def restore(self) -> jax.Array:
        if self.weak and self.value.ndim == 0:  # a Python scalar gives the weak type back, in the same dtype
            return jnp.asarray(self.value.item())
        return jnp.asarray(self.value)


def _is_box(x: Any) -> bool:
    return isinstance(x, Parameter)


def to_host(value: Any) -> Any:
    """``value`` with every jax array inside (lists, tuples, dicts, pytrees) as a :class:`HostArray`."""
    if isinstance(value, jax.Array):
        return HostArray(value)
    if type(value) in (list, tuple):
        return type(value)(to_host(v) for v in value)
    if type(value) is dict:
        return {k: to_host(v) for k, v in value.items()}
    if value is None or _is_box(value) or not jax.tree.leaves(value, is_leaf=_is_box):
        return value
    try:  # a pytree node (flax, equinox): rebuilt with its leaves converted
        return jax.tree.map(lambda x: HostArray(x) if isinstance(x, jax.Array) else x,
                            value, is_leaf=_is_box)
    except Exception:  # noqa: BLE001 - an object jax cannot rebuild is pickled as it is
        return value


def from_host(value: Any) -> Any:
    """The inverse of :func:`to_host`: every :class:`HostArray` a jax array again."""
    if isinstance(value, HostArray):
        return value.restore()
    if type(value) in (list, tuple):
        return type(value)(from_host(v) for v in value)
    if type(value) is dict:
        return {k: from_host(v) for k, v in value.items()}
    if isinstance(value, defaultdict):  # per-parameter state handed over by load_state_dict: keys are boxes
        return defaultdict(value.default_factory, {k: from_host(v) for k, v in value.items()})
    if value is None or _is_box(value):
        return value
    try:
        if any(isinstance(x, HostArray) for x in jax.tree.leaves(value, is_leaf=_is_host_or_box)):
            return jax.tree.map(lambda x: x.restore() if isinstance(x, HostArray) else x, value,
                                is_leaf=_is_host_or_box)
    except TypeError:  # not a pytree jax can walk (unsortable keys): nothing of ours inside
        pass
    return value


def _is_host_or_box(x: Any) -> bool:
    return isinstance(x, HostArray) or _is_box(x)


def optimizer_state(opt: Any) -> dict[str, Any]:
    """What pickling an optimizer keeps (``Optimizer.__getstate__``): options, state and trees, arrays on the host."""
    return to_host({
        "defaults": opt.defaults, "state": {p: dict(entry) for p, entry in opt.state.items()},
        "param_groups": opt.param_groups, "_trees": opt._trees, "_single": opt._single,
        "_whole_tree": opt._whole_tree, "_step_count": opt._step_count, "_opt_called": opt._opt_called,
        "donate_params": opt.donate_params, "skip_nonfinite": opt.skip_nonfinite,
        "skipped_steps": opt.skipped_steps, "pack_max_numel": opt.pack_max_numel,
        "program_max_params": opt.program_max_params,
        "_added_defaults": opt.__dict__.get("_added_defaults", ())})


def restore_optimizer(opt: Any, state: dict[str, Any]) -> None:
    """``Optimizer.__setstate__``: unpickling, and ``load_state_dict``'s last step (the checked new state).

    As torch's ``__setstate__``, ``differentiable`` is added to the defaults
    (only there: a later load must not copy it into the groups), and options
    declared since the pickle was made are filled into every group.
    """
    state = from_host(dict(state))
    per_param = state.pop("state", {})
    if opt.__dict__.get("_packs"):  # loading into a live optimizer: packed parameters get their arrays back
        _packing.release_packs(opt)
    opt.__dict__.update(state)
    opt._init_attributes()
    opt._state = per_param if isinstance(per_param, defaultdict) else defaultdict(dict, per_param)
    declared = set(opt.defaults) - set(opt.__dict__.get("_added_defaults", ()))
    if "differentiable" not in opt.defaults:
        opt.defaults["differentiable"] = False
        opt._added_defaults = ("differentiable",)
    for group in opt.param_groups:
        for name, default in opt.defaults.items():
            if default is not required and name in declared:
                group.setdefault(name, default)
