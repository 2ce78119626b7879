"""Functions of whole pytrees, as ``optax.tree``: every public function of ``optax.tree`` under its name.

``gradtx.tree.norm``, ``gradtx.tree.get``, ``gradtx.tree.map_params``, ... take
optax 0.2.8's arguments and give its numbers. ``update_moment``,
``update_moment_per_elem_norm``, ``bias_correction`` and ``update_infinity_moment``
are also at the top level (``gradtx.update_moment``), as in optax. Beyond
optax's: :func:`all_finite`, :func:`path_str`, :func:`tree_paths` and
:func:`check_matching_trees` (the error naming the first path where two trees
differ).
"""

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.tree.<name>

from gradtx._tree import (
    bias_correction, update_moment, update_moment_per_elem_norm, all_finite, check_matching_trees, path_str,
    tree_paths,
)
from gradtx._tree_math import (
    add, add_scale, allclose, batch_shape, cast, cast_like, clip, conj, div, dtype, full_like, max, min, mul, norm,
    ones_like, random_like, real, scale, size, split_key_like, sub, sum, unwrap_random_key_data,
    update_infinity_moment, vdot, where, zeros_like,
)
from gradtx._tree_state import (
    NamedTupleKey, get, get_all_with_path, map_params, set,
)

__all__ = [
    "bias_correction", "update_moment", "update_moment_per_elem_norm", "all_finite", "check_matching_trees",
    "path_str", "tree_paths", "add", "add_scale", "allclose", "batch_shape", "cast", "cast_like", "clip", "conj",
    "div", "dtype", "full_like", "max", "min", "mul", "norm", "ones_like", "random_like", "real", "scale", "size",
    "split_key_like", "sub", "sum", "unwrap_random_key_data", "update_infinity_moment", "vdot", "where",
    "zeros_like", "NamedTupleKey", "get", "get_all_with_path", "map_params", "set",
]
