"""Shared pieces of the schedules: the result dtype, counts as floats, interpolations.

A schedule returns float32 unless one of its inputs (a hyperparameter or the
count) is a float64 array: Python numbers are weakly typed and never force
float64, so a float32 model under ``jax_enable_x64`` keeps float32 values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def result_dtype(*values: Any) -> Any:
    """float64 when a value is a (strongly typed) array or numpy scalar of a 64-bit float dtype, else float32."""
    for value in values:
        if callable(value) or value is None or type(value) in (bool, int, float, complex):
            continue  # Python numbers are weakly typed (numpy's float64 subclasses float but is not)
        if getattr(getattr(value, "aval", value), "weak_type", False):
            continue  # an array made from a Python number (e.g. a float passed to jit) is weak too
        dtype = getattr(value, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize == 8:
            return jnp.dtype(jnp.float64) if jax.config.jax_enable_x64 else jnp.dtype(jnp.float32)
    return jnp.dtype(jnp.float32)


def as_float(x: Any, dtype: Any) -> Array:
    """``x`` (a number, array, count or tracer) as an array of ``dtype``."""
    return jnp.asarray(x).astype(dtype)


def interpolate_linear(start: Any, end: Any, pct: Any) -> Array:
    """``start`` to ``end`` along a straight line: ``(end - start) * pct + start``."""
    return (end - start) * pct + start


def interpolate_cosine(start: Any, end: Any, pct: Any) -> Array:
    """``start`` to ``end`` along half a cosine: ``end + (start - end) / 2 * (cos(pi * pct) + 1)``."""
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


INTERPOLATIONS = {"linear": interpolate_linear, "cos": interpolate_cosine, "cosine": interpolate_cosine}


def interpolation(kind: str, where: str) -> Any:
    """The interpolation named ``kind`` ('linear', 'cos' or 'cosine'), or a ``ValueError`` naming ``where``."""
    if kind not in INTERPOLATIONS:
        raise ValueError(f"{where}: the interpolation must be 'linear' or 'cos'/'cosine', got {kind!r}")
    return INTERPOLATIONS[kind]
