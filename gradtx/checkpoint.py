"""Saving and restoring functional optimizer state: pickle, numpy ``.npz``, and orbax.

Functional states are pytrees of arrays (nested NamedTuples, tuples and
dicts), so they pickle as they are (after ``jax.device_get``) and orbax saves
them directly. :func:`save_npz` / :func:`load_npz` store them as a flat ``.npz``
keyed by pytree path, readable without gradtx; loading needs a template (the
state of ``tx.init(params)``) for the structure, and checks every key, shape
and dtype before returning anything.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.tree import path_str

__all__ = ["save_npz", "load_npz"]


def _flat(state: Any) -> list[tuple[str, Any]]:
    return [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]]


def save_npz(file: str | os.PathLike | Any, state: Any) -> None:
    """Writes every array of ``state`` to a ``.npz`` file, keyed by its pytree path.

    Example::

        gradtx.save_npz("opt_state.npz", opt_state)
        opt_state = gradtx.load_npz("opt_state.npz", tx.init(params))
    """
    arrays = {}
    for path, leaf in _flat(state):
        array = np.asarray(jax.device_get(leaf))
        if array.dtype == jnp.bfloat16:  # .npz has no bfloat16: keep the bits, record the dtype in the key
            arrays[f"{path}::bfloat16"] = array.view(np.uint16)
        else:
            arrays[path] = array
    np.savez(file, **arrays)


def load_npz(file: str | os.PathLike | Any, like: Any) -> Any:
    """Reads a state saved by :func:`save_npz` into the structure of ``like`` (e.g. ``tx.init(params)``).

    Raises a ``ValueError`` naming the first missing or unexpected key, or the
    first array whose shape or dtype differs from the template; nothing is
    returned partially. Arrays are placed with the template's shardings.
    """
    with np.load(file) as data:
        stored = {}
        for key in data.files:
            if key.endswith("::bfloat16"):
                stored[key.removesuffix("::bfloat16")] = data[key].view(jnp.bfloat16)
            else:
                stored[key] = data[key]
    template = _flat(like)
    expected = [path for path, _ in template]
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in set(expected)]
    if missing or unexpected:
        raise ValueError(f"the saved state does not match the template: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    leaves = []
    for path, ref in template:
        value = stored[path]
        ref_shape, ref_dtype = np.shape(ref), jnp.result_type(ref)
        if value.shape != ref_shape or value.dtype != ref_dtype:
            raise ValueError(f"state at '{path}' was saved as {value.dtype}{list(value.shape)}, "
                             f"the template expects {ref_dtype}{list(ref_shape)}")
        sharding = getattr(ref, "sharding", None)
        leaves.append(jax.device_put(value, sharding) if isinstance(ref, jax.Array) else value)
    return jax.tree.unflatten(jax.tree.structure(like), leaves)
