"""Per-slot state dtypes: a slot's zeros in its own dtype, and the arithmetic of its update in the wider dtype.

A slot (a moment, an accumulator) may be stored in another dtype than the
parameters: float32 moments for bfloat16 parameters, or bfloat16 moments for
float32 parameters to halve the state. Either way a transform computes the new
slot value in the wider of the gradient's and the slot's dtype (complex
gradients stay complex, real slots stay real) and stores it rounded to the slot's
dtype; the update it returns is computed from the unrounded value and cast to the
gradient's dtype. When the dtypes are equal (the default) nothing is cast.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradtx import _tree as gt


def slot_zeros(params: Any, dtype: Any = None, *, real: bool = False) -> Any:
    """Zeros like ``params`` in ``dtype``; ``None`` keeps each leaf's dtype (its real dtype when ``real``)."""
    if dtype is None and real:
        return gt.tree_real_zeros_like(params)
    return gt.tree_zeros_like(params, dtype)


def _common_real(g: Any, s: Any) -> Any:
    return jnp.promote_types(gt.real_dtype(g), gt.real_dtype(s))


def widen_updates(updates: Any, slots: Any) -> Any:
    """Each gradient leaf in the wider precision of itself and its slot (complex stays complex)."""
    return gt.tree_map(lambda g, s: g.astype(jnp.promote_types(g.dtype, _common_real(g, s))), updates, slots,
                       names=("the gradients", gt.STATE_ROLE))


def widen_slots(slots: Any, updates: Any) -> Any:
    """Each slot leaf in the wider precision of itself and its gradient (a real slot stays real)."""
    return gt.tree_map(lambda s, g: s.astype(jnp.promote_types(s.dtype, _common_real(g, s))), slots, updates,
                       names=(gt.STATE_ROLE, "the gradients"))
