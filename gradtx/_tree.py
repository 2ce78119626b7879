"""Pytree helpers shared by every transform.

The helpers treat ``None`` leaves as absent (they stay ``None``) so that
parameter trees with holes (frozen or missing entries) pass through.
"""

from __future__ import annotations

import builtins
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any  # a nest of arrays

_is_none = lambda x: x is None  # noqa: E731


def is_array_like(x: Any) -> bool:
    """Whether a leaf is numeric data a transform acts on: arrays, tracers and Python numbers (not bools).

    Other leaves of real model trees (``None``, functions, strings, activation
    objects in equinox modules) are passed over by every transform.
    """
    if isinstance(x, (jax.Array, np.ndarray, np.generic, jax.core.Tracer, jax.ShapeDtypeStruct)):
        return True
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def tree_map(f, tree: PyTree, *rest: PyTree, names: tuple[str, ...] | None = None) -> PyTree:
    """``jax.tree.map`` over the array leaves of ``tree``; ``None`` and non-array leaves are kept as they are.

    When the trees differ in structure or shape, or ``f`` fails at a leaf, the
    error names the tree path, calling the trees by ``names`` (e.g. ``("the
    state's moments", "the gradients")``) where given.
    """
    def apply(x, *r):
        if not is_array_like(x):
            return x
        return f(*(jnp.asarray(a) if isinstance(a, (int, float, complex)) else a for a in (x, *r)))

    try:
        return jax.tree.map(apply, tree, *rest, is_leaf=_is_none)
    except (TypeError, ValueError) as error:
        _explain_mismatch(error, apply, (tree, *rest), names or tuple(f"tree {i + 1}" for i in range(len(rest) + 1)))
        raise


def _explain_mismatch(error: Exception, apply: Any, trees: tuple, names: tuple[str, ...]) -> None:
    """Raises ``error`` again with the tree path where the trees of one ``tree_map`` disagree, or where it failed.

    Without this, a gradient tree of another structure or shape than the state's
    moments surfaces as jax's "pytree structure error" or an unlocated broadcasting
    error.
    """
    tree = trees[0]
    for other, name in zip(trees[1:], names[1:]):
        if jax.tree.structure(tree, is_leaf=_is_none) != jax.tree.structure(other, is_leaf=_is_none):
            check_matching_trees(tree, other, what=name, against=names[0], check_shapes=False)
    flat = [jax.tree_util.tree_flatten_with_path(t, is_leaf=_is_none)[0] for t in trees]
    for leaves in zip(*flat):
        values = [leaf for _, leaf in leaves]
        shapes = {name: np.shape(v) for name, v in zip(names, values) if is_array_like(v)}
        place = f"at '{path_str(leaves[0][0])}' (shapes: " + ", ".join(f"{k} {v}" for k, v in shapes.items()) + ")"
        if len(builtins.set(shapes.values())) > 1:  # `set` is the tree function below
            raise type(error)(f"{error} The trees disagree {place}") from error
        try:
            apply(*values)
        except (TypeError, ValueError):
            raise type(error)(f"{error} It failed {place}; a hyperparameter given as an array must be a scalar "
                              "or have every parameter's shape") from error


def array_leaves(tree: PyTree) -> list:
    """The array leaves of ``tree`` (non-array leaves such as functions are left out)."""
    return [x for x in jax.tree.leaves(tree) if is_array_like(x)]


def all_finite(tree: PyTree) -> jax.Array:
    """A boolean scalar: whether every element of every array leaf of ``tree`` is finite (True for no arrays)."""
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in array_leaves(tree)] or [True]))


def _zeros_keeping_sharding(x: Any, dtype: Any) -> jax.Array:
    """Zeros shaped like ``x`` on ``x``'s sharding, outside jit and under it.

    Outside jit the sharding is read off the array. Under jit a tracer has no
    sharding to read, and zeros that depend on nothing would be placed on one
    device; making them depend (trivially, NaN-safely) on ``x`` lets XLA's
    sharding propagation give them ``x``'s sharding.
    """
    if isinstance(x, jax.core.Tracer):
        dtype = x.dtype if dtype is None else dtype
        return jnp.where(jnp.isnan(x), 0, 0).astype(dtype)
    dtype = jnp.asarray(x).dtype if dtype is None else dtype
    sharding = getattr(x, "sharding", None)
    # Only an array pinned to its placement (committed) pins its zeros; an uncommitted one leaves XLA free.
    if isinstance(x, jax.Array) and sharding is not None and getattr(x, "committed", False):
        return jnp.zeros(jnp.shape(x), dtype, device=sharding)
    return jnp.zeros(jnp.shape(x), dtype)


def tree_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros shaped like each leaf, in the leaf's dtype (or ``dtype``) and on its sharding."""
    return tree_map(lambda x: _zeros_keeping_sharding(x, dtype), tree)


def tree_copy(tree: PyTree) -> PyTree:
    """A copy of each array leaf: a state entry that starts as the parameters gets buffers of its own, so that a
    jitted step may donate both the parameters and the state (XLA refuses a buffer donated twice)."""
    return tree_map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


def real_dtype(x: Any) -> Any:
    """The real dtype matching ``x``'s (``float32`` for ``complex64``)."""
    return jnp.finfo(jnp.asarray(x).dtype).dtype if jnp.iscomplexobj(x) else jnp.asarray(x).dtype


def tree_real_zeros_like(tree: PyTree) -> PyTree:
    """Zeros like each leaf in its real dtype: the shape of a second moment of complex values."""
    return tree_map(lambda x: _zeros_keeping_sharding(x, real_dtype(x)), tree)


def tree_full_like(tree: PyTree, value: Any, dtype: Any = None) -> PyTree:
    """Arrays filled with ``value``, shaped like each leaf, keeping dtype and sharding."""
    return tree_map(lambda x: _zeros_keeping_sharding(x, dtype) + jnp.asarray(value, dtype or jnp.asarray(x).dtype), tree)


def tree_cast(tree: PyTree, dtype: Any) -> PyTree:
    """Casts every leaf to ``dtype``; ``dtype=None`` leaves the tree as it is."""
    if dtype is None:
        return tree
    return tree_map(lambda x: jnp.asarray(x).astype(dtype), tree)


def tree_cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return tree_map(lambda x, y: jnp.asarray(x).astype(jnp.asarray(y).dtype), tree, like)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a + b``."""
    return tree_map(jnp.add, a, b)


def tree_scale(scalar: Any, tree: PyTree) -> PyTree:
    """Leafwise ``scalar * x``, keeping each leaf's dtype."""
    return tree_map(lambda x: (scalar * x).astype(x.dtype), tree)


def _sum_scalars(values: list) -> jax.Array:
    """Sum of scalars in their own promoted dtype (a float32 tree gives a float32 sum, even with x64 on)."""
    if not values:
        return jnp.zeros([], jnp.float32)
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """The real inner product ``sum(real(conj(a) * b))`` over all leaves."""
    leaves = array_leaves(tree_map(lambda x, y: jnp.sum(jnp.real(jnp.conj(x) * y)), a, b))
    return _sum_scalars(leaves)


def tree_sum_of_squares(tree: PyTree) -> jax.Array:
    """``sum(|x|^2)`` over every element of every leaf."""
    leaves = [jnp.sum(jnp.abs(x) ** 2) for x in array_leaves(tree)]
    return _sum_scalars(leaves)


def tree_global_norm(tree: PyTree) -> jax.Array:
    """The Euclidean norm of all leaves together (``optax.global_norm``)."""
    return jnp.sqrt(tree_sum_of_squares(tree))


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` that saturates at the dtype's maximum instead of overflowing."""
    count = jnp.asarray(count)
    limit = jnp.iinfo(count.dtype).max if jnp.issubdtype(count.dtype, jnp.integer) else jnp.finfo(count.dtype).max
    return jnp.where(count < limit, count + 1, limit).astype(count.dtype)


def steps_before(count: jax.Array, step: Any) -> jax.Array:
    """The steps taken before this update: ``step`` where one comes from outside the state (a param group's
    counter, as pytorch_optimizer keeps it), in the dtype of the state's ``count``; otherwise ``count``."""
    return count if step is None else jnp.asarray(step).astype(count.dtype)


def zero_count() -> jax.Array:
    """A fresh int32 step counter."""
    return jnp.zeros([], jnp.int32)


# Names of the trees of a transform's tree_map, for its error messages.
STATE_ROLE = "the state (built by init for other params?)"
_MOMENT_ROLES = (STATE_ROLE, "the gradients")


def update_moment(updates: PyTree, moments: PyTree, decay: Any, order: int) -> PyTree:
    """The exponential moving average ``decay * m + (1 - decay) * g**order``."""
    return tree_map(lambda m, g: decay * m + (1 - decay) * (g**order), moments, updates, names=_MOMENT_ROLES)


def update_moment_per_elem_norm(updates: PyTree, moments: PyTree, decay: Any, order: int) -> PyTree:
    """``decay * m + (1 - decay) * |g|**order``; for complex ``g`` the moment is real."""

    def norm(g):
        if jnp.iscomplexobj(g):
            return jnp.abs(g) ** order if order != 2 else jnp.real(g * jnp.conj(g))
        return g**order

    return tree_map(lambda m, g: decay * m + (1 - decay) * norm(g), moments, updates, names=_MOMENT_ROLES)


def bias_correction(moments: PyTree, decay: Any, count: jax.Array, *, reciprocal: bool = False) -> PyTree:
    """Divides a moment estimate by ``1 - decay**count`` (Kingma & Ba, 2015).

    ``reciprocal=True`` multiplies by ``1 / (1 - decay**count)`` instead (a
    scalar, computed once): what XLA's algebraic simplifier makes of the
    division under a user's ``jax.jit`` (within an ulp of it), written out for
    the facade's programs, which compile without that simplifier to keep their
    tiers bit for bit equal (``gradtx.optim._engine``): one division per element
    fewer, about a tenth of an Adam step on the CPU. Use it only where the
    product feeds no addition (a division, a square root): XLA's fused
    multiply-adds could round it differently from one program to another.
    """
    correction = 1 - decay ** jnp.asarray(count)
    if reciprocal:
        return tree_map(lambda m: (m * (1 / correction.astype(m.dtype))).astype(m.dtype), moments)
    return tree_map(lambda m: (m / correction.astype(m.dtype)).astype(m.dtype), moments)


def path_str(path: tuple) -> str:
    """A readable name for a pytree key path, e.g. ``encoder/layers/0/w``."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(str(key.name))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return "/".join(parts) if parts else "<root>"


def tree_paths(tree: PyTree) -> list[str]:
    """The path names of a tree's leaves, in flattening order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_matching_trees(reference: PyTree, other: PyTree, *, what: str = "updates", against: str = "params",
                         check_shapes: bool = True, check_dtypes: bool = False) -> None:
    """Raises a ``ValueError`` naming the first path where two trees disagree.

    Compares structure, and optionally the shape and dtype of each leaf.
    """
    ref_leaves, ref_def = jax.tree_util.tree_flatten_with_path(reference)
    oth_leaves, oth_def = jax.tree_util.tree_flatten_with_path(other)
    if ref_def != oth_def:
        ref_paths = {path_str(p) for p, _ in ref_leaves}
        oth_paths = {path_str(p) for p, _ in oth_leaves}
        missing = sorted(ref_paths - oth_paths)
        extra = sorted(oth_paths - ref_paths)
        detail = []
        if missing:
            detail.append(f"missing from {what}: {missing[:5]}")
        if extra:
            detail.append(f"not in {against}: {extra[:5]}")
        if not detail:
            detail.append(f"{what} structure {oth_def} differs from {against} structure {ref_def}")
        raise ValueError(f"{what} do not match the structure of {against}: " + "; ".join(detail))
    for (path, ref), (_, oth) in zip(ref_leaves, oth_leaves):
        if check_shapes and np.shape(ref) != np.shape(oth):
            raise ValueError(
                f"{what} at '{path_str(path)}' has shape {np.shape(oth)}, but {against} there has shape {np.shape(ref)}"
            )
        if check_dtypes and jnp.result_type(ref) != jnp.result_type(oth):
            raise ValueError(
                f"{what} at '{path_str(path)}' has dtype {jnp.result_type(oth)}, "
                f"but {against} there has dtype {jnp.result_type(ref)}"
            )


# optax.tree's public functions under optax's names. update_moment, update_moment_per_elem_norm and
# bias_correction above already take optax's arguments and give its numbers, so they are kept.
# From here on sum, max, min and set name the tree functions, not the builtins: code above this line must
# not call those builtins at run time (use builtins.sum etc.).
from gradtx._tree_math import (  # noqa: E402
    add, add_scale, allclose, batch_shape, cast, cast_like, clip, conj, div, dtype, full_like, max, min, mul,
    norm, ones_like, random_like, real, scale, size, split_key_like, sub, sum, unwrap_random_key_data,
    update_infinity_moment, vdot, where, zeros_like,
)
from gradtx._tree_state import NamedTupleKey, get, get_all_with_path, map_params, set  # noqa: E402
