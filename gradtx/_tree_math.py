"""optax.tree's arithmetic, casting and random helpers under optax's names (re-exported by :mod:`gradtx.tree`).

Kept in their own module because several names (``sum``, ``max``, ``min``) are
Python builtins that :mod:`gradtx.tree`'s other helpers still use. Each function
follows the ``optax.tree`` function of the same name (optax 0.2.8): same
arguments, same results and dtypes.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = [
    "add", "sub", "mul", "div", "scale", "add_scale", "vdot", "sum", "max", "min", "size", "conj", "real",
    "norm", "batch_shape", "zeros_like", "ones_like", "full_like", "clip", "where", "allclose",
    "update_infinity_moment",
    "cast", "cast_like", "dtype", "split_key_like", "random_like", "unwrap_random_key_data",
]

_is_none = lambda x: x is None  # noqa: E731


def add(tree_x: PyTree, tree_y: PyTree, *other_trees: PyTree) -> PyTree:
    """Leafwise sum of two or more trees of the same structure."""
    return jax.tree.map(lambda *leaves: functools.reduce(operator.add, leaves), tree_x, tree_y, *other_trees)


def sub(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``x - y``."""
    return jax.tree.map(operator.sub, tree_x, tree_y)


def mul(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``x * y``."""
    return jax.tree.map(operator.mul, tree_x, tree_y)


def div(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``x / y``."""
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def scale(scalar: Any, tree: PyTree) -> PyTree:
    """Leafwise ``scalar * x`` (dtypes promote as JAX promotes them, as in ``optax.tree.scale``)."""
    return jax.tree.map(lambda x: scalar * x, tree)


def add_scale(tree_x: PyTree, scalar: Any, tree_y: PyTree) -> PyTree:
    """Leafwise ``x + scalar * y``; ``None`` leaves of ``tree_x`` stay ``None``."""
    scalar = jnp.asarray(scalar)
    return jax.tree.map(lambda x, y: None if x is None else x + scalar * y, tree_x, tree_y, is_leaf=_is_none)


def _vdot_leaf(a: Any, b: Any) -> jax.Array:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"vdot: leaves of shapes {a.shape} and {b.shape} differ; give trees of matching shapes.")
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        a = jnp.conj(a)
    return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST)


def vdot(tree_x: PyTree, tree_y: PyTree) -> jax.Array:
    r"""The inner product :math:`\sum_i \langle \bar x_i, y_i \rangle` over all leaves (complex ``x`` is conjugated)."""
    return jax.tree.reduce(operator.add, jax.tree.map(_vdot_leaf, tree_x, tree_y), initializer=0)


def sum(tree: PyTree, associative_reduction: bool = False) -> jax.Array:  # noqa: A001 - optax's name
    """The sum of every element of every leaf.

    Args:
      tree: a pytree of arrays.
      associative_reduction: add the per-leaf sums as a balanced tree (``jax.tree.reduce_associative``)
        instead of left to right.
    """
    sums = jax.tree.map(jnp.sum, tree)
    if associative_reduction:
        return jax.tree.reduce_associative(operator.add, sums, identity=0)
    return jax.tree.reduce(operator.add, sums, initializer=0)


def max(tree: PyTree) -> jax.Array:  # noqa: A001 - optax's name
    """The largest element over all leaves (empty leaves are skipped; ``-inf`` for none)."""
    maxes = jax.tree.map(lambda x: None if jnp.size(x) == 0 else jnp.max(x), tree)
    return jax.tree.reduce(jnp.maximum, maxes, initializer=-float("inf"))


def min(tree: PyTree) -> jax.Array:  # noqa: A001 - optax's name
    """The smallest element over all leaves (empty leaves are skipped; ``inf`` for none)."""
    mins = jax.tree.map(lambda x: None if jnp.size(x) == 0 else jnp.min(x), tree)
    return jax.tree.reduce(jnp.minimum, mins, initializer=float("inf"))


def size(tree: PyTree) -> int:
    """The total number of elements over all leaves."""
    return builtins.sum(jnp.size(leaf) for leaf in jax.tree.leaves(tree))


def conj(tree: PyTree) -> PyTree:
    """Leafwise complex conjugate."""
    return jax.tree.map(jnp.conj, tree)


def real(tree: PyTree) -> PyTree:
    """Leafwise real part."""
    return jax.tree.map(jnp.real, tree)


def _abs_sq(x: Any) -> jax.Array:
    return jnp.square(x.real) + jnp.square(x.imag)


def norm(tree: PyTree, ord: Any = None, squared: bool = False) -> jax.Array:  # noqa: A002 - optax's name
    """The norm of all leaves together, as one flat vector.

    Args:
      tree: a pytree of arrays.
      ord: ``None`` or 2 (Euclidean), 1, or ``jnp.inf`` / ``"inf"`` / ``"infinity"``.
      squared: return the square of the norm.

    Raises:
      ValueError: for another ``ord``.
    """
    if ord is None or ord == 2:
        sqnorm = sum(jax.tree.map(_abs_sq, tree))
        return jnp.array(sqnorm if squared else jnp.sqrt(sqnorm))
    if ord == 1:
        result = sum(jax.tree.map(jnp.abs, tree))
    elif ord == jnp.inf or ord in ("inf", "infinity"):
        result = max(jax.tree.map(jnp.abs, tree))
    else:
        raise ValueError(f"norm: unsupported ord={ord!r}; use None or 2, 1, or jnp.inf.")
    return jnp.array(_abs_sq(result) if squared else result)


def batch_shape(tree: PyTree, shape: tuple[int, ...] = ()) -> PyTree:
    """Each leaf broadcast to ``(*shape, *leaf.shape)``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


def zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros shaped like each leaf (``jnp.zeros_like``)."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def ones_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Ones shaped like each leaf (``jnp.ones_like``)."""
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def full_like(tree: PyTree, fill_value: Any, dtype: Any = None) -> PyTree:
    """``fill_value`` shaped like each leaf (``jnp.full_like``)."""
    return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def clip(tree: PyTree, min_value: Any = None, max_value: Any = None) -> PyTree:
    """Leafwise ``jnp.clip(x, min_value, max_value)``."""
    return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def where(condition: Any, tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``jnp.where(condition, x, y)``."""
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def allclose(a: PyTree, b: PyTree, rtol: Any = 1e-05, atol: Any = 1e-08, equal_nan: bool = False) -> Any:
    """Whether every pair of leaves is ``jnp.allclose``."""
    close = jax.tree.map(lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b)
    return functools.reduce(operator.and_, jax.tree.leaves(close), True)




def update_infinity_moment(updates: PyTree, moments: PyTree, decay: Any, eps: Any) -> PyTree:
    """The infinity-norm moment ``max(|g| + eps, decay * m)`` (Adamax)."""
    return jax.tree.map(lambda g, t: g if g is None else jnp.maximum(jnp.abs(g) + eps, decay * t),
                        updates, moments, is_leaf=_is_none)






def cast(tree: PyTree, dtype: Any) -> PyTree:
    """Every leaf cast to ``dtype``; ``None`` leaves the tree as it is."""
    return tree if dtype is None else jax.tree.map(lambda t: t.astype(dtype), tree)


def cast_like(tree: PyTree, other_tree: PyTree) -> PyTree:
    """Each leaf cast to the dtype of the matching leaf of ``other_tree`` (leaves without a dtype are kept)."""
    return jax.tree.map(lambda t, o: t.astype(o.dtype) if hasattr(o, "dtype") else t, tree, other_tree)


def _lower_dtype(dtype1: Any, dtype2: Any) -> Any:
    promoted = jnp.promote_types(dtype1, dtype2)
    if promoted == dtype1:
        return dtype2
    if promoted == dtype2:
        return dtype1
    raise ValueError(f"dtype: cannot order {dtype1} and {dtype2}: neither promotes to the other; "
                     "use mixed_dtype_handler='promote'.")


def _higher_dtype(dtype1: Any, dtype2: Any) -> Any:
    return dtype2 if _lower_dtype(dtype1, dtype2) == dtype1 else dtype1


_DTYPE_REDUCERS = {"promote": jnp.promote_types, "highest": _higher_dtype, "lowest": _lower_dtype}


def dtype(tree: PyTree, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of a tree's leaves.

    Args:
      tree: a pytree of arrays.
      mixed_dtype_handler: ``None`` (all leaves must share one dtype), ``"promote"``, ``"highest"`` or
        ``"lowest"``: how to combine differing dtypes.

    Raises:
      ValueError: for differing dtypes with ``None`` (naming each differing leaf), or an unknown handler.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(leaves).dtype
    dtypes = [jnp.asarray(x).dtype for x in leaves]
    if mixed_dtype_handler is None:
        first = dtypes[0]
        wrong = [f"Expected dtype={first} for {jax.tree_util.keystr(path)} but got {jnp.asarray(x).dtype}."
                 for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if jnp.asarray(x).dtype != first]
        if wrong:
            raise ValueError("\n".join(wrong))
        return first
    if mixed_dtype_handler not in _DTYPE_REDUCERS:
        raise ValueError(f"Invalid value for mixed_dtype_handler={mixed_dtype_handler!r}, possible values are: "
                         'None, "promote", "highest", "lowest".')
    return functools.reduce(_DTYPE_REDUCERS[mixed_dtype_handler], dtypes)


def split_key_like(rng_key: jax.Array, target_tree: PyTree) -> PyTree:
    """One key per leaf of ``target_tree``, split from ``rng_key``, in a tree of the same structure."""
    treedef = jax.tree.structure(target_tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(rng_key, treedef.num_leaves)))


def random_like(rng_key: jax.Array, target_tree: PyTree, sampler: Callable = jax.random.normal,
                dtype: Any = None) -> PyTree:
    """Random arrays shaped like each leaf, drawn by ``sampler(key, shape, dtype)`` with one key per leaf.

    ``sampler`` may also take ``out_sharding``; it then gets each leaf's sharding.
    """
    keys = split_key_like(rng_key, target_tree)
    takes_sharding = "out_sharding" in inspect.signature(sampler).parameters

    def draw(leaf, key):
        if takes_sharding:
            return sampler(key, leaf.shape, dtype or leaf.dtype, out_sharding=jax.typeof(leaf).sharding)
        return sampler(key, leaf.shape, dtype or leaf.dtype)

    return jax.tree.map(draw, target_tree, keys)


def unwrap_random_key_data(input_tree: PyTree) -> PyTree:
    """Typed PRNG keys in a tree replaced by their raw ``uint32`` data (``jax.random.key_data``)."""
    def unwrap(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(unwrap, input_tree)
