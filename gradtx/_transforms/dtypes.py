"""Wrappers that change the numbers a transformation sees: complex as real pairs, and state precision."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformation, with_extra_args_support

__all__ = ["ComplexAsRealState", "complex_as_real", "PromoteState", "promote_to"]


class ComplexAsRealState(NamedTuple):
    """State of :func:`complex_as_real`."""

    inner_state: Any  # the inner state, over real views of complex leaves (trailing axis of 2)


def _as_real(x):
    if x is None or not jnp.iscomplexobj(x):
        return x
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def _back(u, like):
    if like is None or not jnp.iscomplexobj(like):
        return u
    return jax.lax.complex(u[..., 0], u[..., 1]).astype(jnp.asarray(like).dtype)


def complex_as_real(inner: Any) -> GradientTransformation:
    """Runs ``inner`` on complex leaves viewed as real pairs, as torch.optim does (``torch.view_as_real``).

    A complex leaf of shape ``s`` is seen by ``inner`` as a real array of shape
    ``s + (2,)`` (real and imaginary parts), so each part gets its own moments,
    exactly torch's treatment of complex parameters in Adam, SGD, RMSprop and the
    rest. optax's default for complex values differs (one real second moment of
    ``|g|^2`` per element); ``optax.contrib.split_real_and_imaginary`` is the
    optax counterpart of this wrapper. Real leaves pass through unchanged.

    Note that for a real loss ``jax.grad`` returns the conjugate of torch's
    gradient of a complex parameter; descend along ``jnp.conj(grad)`` to follow torch.
    """
    inner = with_extra_args_support(inner)

    def init(params):
        return ComplexAsRealState(inner.init(gt.tree_map(_as_real, params)))

    def update(updates, state, params=None, **extra_args):
        real_params = None if params is None else gt.tree_map(_as_real, params)
        new, inner_state = inner.update(gt.tree_map(_as_real, updates), state.inner_state, real_params, **extra_args)
        return gt.tree_map(_back, new, updates), ComplexAsRealState(inner_state)

    return GradientTransformation(init, update)


class PromoteState(NamedTuple):
    """State of :func:`promote_to`."""

    inner_state: Any  # the inner state, held in the promoted dtype


def promote_to(inner: Any, dtype: Any = jnp.float32) -> GradientTransformation:
    """Runs ``inner`` in ``dtype``: bfloat16 parameters with float32 moments.

    Floating updates and params narrower than ``dtype`` are cast up before
    ``inner`` sees them, so every state slot ``inner`` allocates is in ``dtype``;
    its updates are cast back to each update's own dtype. This is the usual
    mixed-precision recipe: the optimizer's arithmetic and memory in float32,
    the model in bfloat16. For one slot only, use the transform's own option
    (e.g. ``scale_by_adam(mu_dtype=...)``).
    """
    inner = with_extra_args_support(inner)
    target = jnp.dtype(dtype)

    def up(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < jnp.finfo(target).bits:
            return x.astype(target)
        return x

    def init(params):
        return PromoteState(inner.init(gt.tree_map(up, params)))

    def update(updates, state, params=None, **extra_args):
        up_params = None if params is None else gt.tree_map(up, params)
        new, inner_state = inner.update(gt.tree_map(up, updates), state.inner_state, up_params, **extra_args)
        return gt.tree_map(lambda n, u: n.astype(u.dtype), new, updates), PromoteState(inner_state)

    return GradientTransformation(init, update)
