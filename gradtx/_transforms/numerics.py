"""optax's numerical helpers at the top level: safe norms, moment updates, gradient scaling, cached value and grad."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._tree import safe_increment, update_moment, update_moment_per_elem_norm

__all__ = [
    "safe_norm", "safe_root_mean_squares", "safe_int32_increment", "update_infinity_moment", "bias_correction",
    "update_moment", "update_moment_per_elem_norm", "scale_gradient", "value_and_grad_from_state",
]

safe_int32_increment = safe_increment  # optax's name: count + 1, saturating at the int32 maximum


def bias_correction(moment: Any, decay: Any, count: Any) -> Any:
    """Divides a moment estimate by ``1 - decay**count`` (``optax.bias_correction``; Kingma & Ba, 2015)."""
    return gt.bias_correction(moment, decay, count)


def _abs_sq(x: jax.Array) -> jax.Array:
    return jnp.real(x * jnp.conj(x)) if jnp.iscomplexobj(x) else x * x


def safe_norm(x: Any, min_norm: Any, ord: int | float | str | None = None,  # noqa: A002 - numpy's name
              axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> jax.Array:
    """``max(norm(x), min_norm)`` with a finite gradient where the norm is below ``min_norm`` (``optax.safe_norm``).

    Arguments as ``jnp.linalg.norm``. Where the norm is at most ``min_norm`` the
    norm is computed on ones instead, so its gradient is never ``0/0``.
    """
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    small = norm <= min_norm
    safe_x = jnp.where(small, jnp.ones_like(x), x)
    small = small if keepdims else jnp.squeeze(small, axis=axis)
    return jnp.where(small, min_norm, jnp.linalg.norm(safe_x, ord=ord, axis=axis, keepdims=keepdims))


def safe_root_mean_squares(x: Any, min_rms: Any) -> jax.Array:
    """``max(rms(x), min_rms)`` with a finite gradient at small values (``optax.safe_root_mean_squares``)."""
    rms = jnp.sqrt(jnp.mean(_abs_sq(x)))
    small = rms <= min_rms
    return jnp.where(small, min_rms, jnp.sqrt(jnp.mean(_abs_sq(jnp.where(small, jnp.ones_like(x), x)))))


def update_infinity_moment(updates: Any, moments: Any, decay: Any, eps: Any) -> Any:
    """``max(|g| + eps, decay * m)`` leaf by leaf: Adamax's moment (``optax.update_infinity_moment``)."""
    return jax.tree.map(lambda g, m: None if g is None else jnp.maximum(jnp.abs(g) + eps, decay * m),
                        updates, moments, is_leaf=lambda x: x is None)


@jax.custom_vjp
def _scaled_identity(inputs, scale):
    return inputs


def _scaled_identity_fwd(inputs, scale):
    return inputs, scale


def _scaled_identity_bwd(scale, cotangent):
    return jax.tree.map(lambda g: g * scale, cotangent), None


_scaled_identity.defvjp(_scaled_identity_fwd, _scaled_identity_bwd)


def scale_gradient(inputs: Any, scale: Any) -> Any:
    """The identity on ``inputs`` whose gradient is multiplied by ``scale`` (``optax.scale_gradient``).

    ``scale=0`` is ``jax.lax.stop_gradient``; ``scale=1`` returns ``inputs``.
    """
    if isinstance(scale, (int, float)) and scale == 1.0:
        return inputs
    if isinstance(scale, (int, float)) and scale == 0.0:
        return jax.lax.stop_gradient(inputs)
    return _scaled_identity(inputs, scale)


def _find_value_and_grad(state: Any) -> tuple[Any, Any] | None:
    if hasattr(state, "_fields") and "value" in state._fields and "grad" in state._fields:
        return state.value, state.grad
    children = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for child in children:
        found = _find_value_and_grad(child)
        if found is not None:
            return found
    return None


def value_and_grad_from_state(value_fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    """``jax.value_and_grad(value_fn)``, reusing the value and gradient a line search stored in the state.

    Follows ``optax.value_and_grad_from_state``: call the result as
    ``value_and_grad(params, *args, state=opt_state, **kwargs)``. If the state's
    line search (:func:`gradtx.scale_by_zoom_linesearch`, or the backtracking
    one with ``store_grad=True``) holds a finite value, it and its gradient are
    returned without evaluating ``value_fn``; otherwise (the first step) they are computed.
    """

    def value_and_grad(params, *fn_args, state, **fn_kwargs):
        found = _find_value_and_grad(state)
        if found is None or found[1] is None:
            raise ValueError("value_and_grad_from_state: no line-search state with `value` and `grad` in the "
                             "optimizer state; use a line search that stores them (scale_by_zoom_linesearch, or "
                             "scale_by_backtracking_linesearch(store_grad=True)).")
        value, grad = found
        return jax.lax.cond(
            jnp.isfinite(value),
            lambda p, a, kw: (value, grad),
            lambda p, a, kw: jax.value_and_grad(value_fn)(p, *a, **kw),
            params, fn_args, fn_kwargs,
        )

    return value_and_grad
