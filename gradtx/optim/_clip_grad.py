"""``torch.nn.utils``' gradient clipping over the ``.grad`` of :class:`~gradtx.optim.Parameter` boxes.

The same functions, arguments, numbers, return values and errors as
``torch.nn.utils.clip_grad_norm_``, ``clip_grad_value_``, ``get_total_norm`` and
``clip_grads_with_norm_``; "in place" means each box's ``.grad`` gets the clipped
array. Parameters whose ``.grad`` is ``None`` are skipped, as in torch. One
compiled program computes the norm and the clipped gradients of all boxes.

For a tree of gradients (``opt.step(grads)`` with a pytree), use the functional
forms :func:`gradtx.clip_grad_norm` / :func:`gradtx.clip_grad_value`, which
return the clipped tree.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.optim._parameter import Parameter
from gradtx import clip_grad_norm, clip_grad_value, total_norm

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _boxes(parameters: Any, where: str) -> list[Parameter]:
    """``parameters`` as a list of boxes (a single box, or any iterable of boxes)."""
    if isinstance(parameters, Parameter):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    boxes = list(parameters)
    if is_generator and not boxes:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    for i, p in enumerate(boxes):
        if not isinstance(p, Parameter):
            raise TypeError(
                f"{where}: parameters[{i}] is a {type(p).__name__}, not a gradtx.optim.Parameter; it has no .grad "
                "to clip. For a tree of gradient arrays use gradtx.clip_grad_norm(grads, max_norm) or "
                "gradtx.clip_grad_value(grads, clip_value), which return the clipped tree."
            )
    return boxes


def _with_grads(parameters: Any, where: str) -> list[Parameter]:
    return [p for p in _boxes(parameters, where) if p.grad is not None]


_clip_norm = jax.jit(clip_grad_norm, static_argnames="norm_type")
_clip_value = jax.jit(clip_grad_value)
_total_norm = jax.jit(total_norm, static_argnames="norm_type")


@jax.jit
def _scale(grads: list, max_norm: Any, total: jax.Array) -> list:
    coef = jnp.minimum(max_norm / (total + 1e-6), 1.0)
    return [g * coef.astype(g.dtype) for g in grads]


def _check_finite(total: jax.Array, norm_type: float) -> None:
    if not bool(jnp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )


def get_total_norm(tensors: Any, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach: bool | None = None) -> jax.Array:
    """The norm of arrays (or of boxes' ``.grad``) viewed as one vector (``torch.nn.utils.get_total_norm``).

    Args:
      tensors: an array, a :class:`Parameter` (its ``.grad`` is used; ``None`` grads are skipped) or an
        iterable of either.
      norm_type: the order of the norm (``float("inf")`` / ``"inf"`` for the largest absolute value).
      error_if_nonfinite: raise ``RuntimeError`` when the norm is nan or inf.
      foreach: accepted for torch compatibility; every path here is one compiled program.

    Returns:
      the total norm, a scalar array (``0.0`` when there is nothing to measure).
    """
    del foreach
    norm_type = float(norm_type)
    items = [tensors] if isinstance(tensors, (jax.Array, Parameter)) else list(tensors)
    arrays = [t.grad if isinstance(t, Parameter) else jnp.asarray(t) for t in items]
    total = _total_norm([a for a in arrays if a is not None], norm_type=norm_type)
    if error_if_nonfinite:
        _check_finite(total, norm_type)
    return total


def clip_grads_with_norm_(parameters: Any, max_norm: float, total_norm: Any, foreach: bool | None = None) -> None:
    """Scales each ``.grad`` by ``min(max_norm / (total_norm + 1e-6), 1)`` (``torch.nn.utils.clip_grads_with_norm_``).

    Args:
      parameters: a :class:`Parameter` or an iterable of them.
      max_norm: the largest total norm.
      total_norm: a norm computed before, e.g. by :func:`get_total_norm`.
      foreach: accepted for torch compatibility.
    """
    del foreach
    boxes = _with_grads(parameters, "clip_grads_with_norm_")
    if not boxes:
        return
    for p, g in zip(boxes, _scale([p.grad for p in boxes], float(max_norm), jnp.asarray(total_norm))):
        p.grad = g


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> jax.Array:
    r"""Clips the gradients' total norm to ``max_norm`` (``torch.nn.utils.clip_grad_norm_``).

    .. math:: g \leftarrow g \cdot \min\left(1, \frac{\text{max\_norm}}{\lVert g \rVert_p + 10^{-6}}\right)

    The norm spans all gradients together (see :func:`gradtx.total_norm`); every
    ``.grad`` that is not ``None`` is replaced by its scaled copy.

    Example::

        loss, grads = jax.value_and_grad(loss_fn)([p.data for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        norm = gradtx.optim.clip_grad_norm_(params, max_norm=1.0)
        opt.step()

    Args:
      parameters: a :class:`Parameter` or an iterable of them (e.g. ``opt.param_groups[0]["params"]``).
      max_norm: the largest total norm.
      norm_type: the order of the norm (default 2; ``float("inf")`` or ``"inf"`` for the max norm).
      error_if_nonfinite: raise ``RuntimeError`` (and leave the gradients as they are) when the total norm is
        nan or inf; otherwise the gradients are scaled by the non-finite norm, as torch does.
      foreach: accepted for torch compatibility; one compiled program does every tier's work.

    Returns:
      the total norm of the gradients before clipping (a scalar array; float32 ``0.0`` without gradients).
    """
    del foreach
    norm_type = float(norm_type)
    boxes = _with_grads(parameters, "clip_grad_norm_")
    clipped, total = _clip_norm([p.grad for p in boxes], float(max_norm), norm_type=norm_type)
    if error_if_nonfinite:
        _check_finite(total, norm_type)
    for p, g in zip(boxes, clipped):
        p.grad = g
    return total


def clip_grad_value_(parameters: Any, clip_value: float, foreach: bool | None = None) -> None:
    """Clamps every gradient element to ``[-clip_value, clip_value]`` (``torch.nn.utils.clip_grad_value_``).

    Args:
      parameters: a :class:`Parameter` or an iterable of them.
      clip_value: the largest absolute value kept.
      foreach: accepted for torch compatibility.
    """
    del foreach
    boxes = _with_grads(parameters, "clip_grad_value_")
    for p, g in zip(boxes, _clip_value([p.grad for p in boxes], float(clip_value))):
        p.grad = g
