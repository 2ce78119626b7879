r"""SCION: steps given by a linear minimization oracle (LMO) of a norm chosen per layer.

Pethick et al., 2025, *Training Deep Learning Models with Norm-Constrained LMOs*,
https://arxiv.org/abs/2502.07529. The oracles and their numbers follow ``pytorch_optimizer.SCION``
(4.1.0): the spectral ones orthogonalize by Newton–Schulz in bfloat16 with torch's roundings.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import EmptyState, GradientTransformation
from gradtx._transforms.muon import orthogonalize_via_newton_schulz

__all__ = ["LMO_NORMS", "ScaleByLmoMomentumState", "lmo_direction", "scale_by_lmo", "scale_by_lmo_momentum", "torch_lerp"]

# pytorch_optimizer's LMONorm values, by name.
LMO_NORMS = {"none": 0, "auto": 1, "spectral": 2, "spectral_conv": 3, "sign": 4, "bias": 5, "col": 6, "row": 7}
_TORCH_NS = dict(ns_coeffs=(3.4445, -4.7750, 2.0315), eps=1e-7, compute_dtype=jnp.bfloat16, eps_mode="clamp")
_EPS = 1e-8


class ScaleByLmoMomentumState(NamedTuple):
    """State of :func:`scale_by_lmo_momentum`."""

    d: Any  # like params: the averaged gradient the oracle is applied to, pytorch_optimizer's d


def _bf16_times(x: jax.Array, factor: Any) -> jax.Array:
    """``x * factor`` as torch's ``_foreach_mul_`` computes it for a bfloat16 ``x`` (the reference's Newton-Schulz
    result, scaled on its default batched path): the factor rounded to bfloat16, the product in float32 rounded to
    bfloat16; returned in ``x``'s float dtype."""
    factor = jnp.asarray(factor, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)
    product = x.astype(jnp.float32) * factor
    return product.astype(jnp.bfloat16).astype(x.dtype)


def _newton_schulz(g: jax.Array, num_steps: int) -> jax.Array:
    flat = g.reshape(g.shape[0], -1)
    return orthogonalize_via_newton_schulz(flat, ns_steps=num_steps, **_TORCH_NS).reshape(g.shape)


def _spectral(g, max_scale=False, normalize=True, num_steps=5):
    d_out, d_in = g.shape
    scale = math.sqrt(d_out / d_in) if normalize else math.sqrt(d_out)
    return _bf16_times(_newton_schulz(g, num_steps), max(1.0, scale) if max_scale else scale)


def _spectral_conv(g, num_steps=5):
    d_out, d_in, *kernel = g.shape
    return _bf16_times(_newton_schulz(g, num_steps), math.sqrt(d_out / d_in) / math.prod(kernel))


def _sign(g, zero_init=False, normalize=True):
    del zero_init  # an initialisation option of the reference's norm; the oracle ignores it
    return jnp.sign(g) / g.shape[1] if normalize else jnp.sign(g)


def _bias(g):
    axis = 0 if g.ndim else None  # torch reduces a 0-d tensor over its "dimension 0"
    return g / (jnp.sqrt(jnp.mean(g * g, axis=axis, keepdims=True)) + _EPS)


def _col(g, normalized=False, transpose=False):
    g = g.T if transpose else g
    d_in, d_out = g.shape
    rms = jnp.sqrt(jnp.sum(g * g, axis=0, keepdims=True)) / math.sqrt(d_in)
    if normalized:
        rms = rms * d_out
    g = g / (rms + _EPS)
    return g.T if transpose else g


def _row(g, normalized=True, transpose=False):
    g = g.T if transpose else g
    rms = jnp.sqrt(jnp.sum(g * g, axis=-1, keepdims=True))
    if normalized:
        rms = rms * math.sqrt(g.shape[-1])
    g = g / (rms + _EPS)
    return g.T if transpose else g


def _auto(g):
    if g.ndim in (0, 1):
        return _bias(g)
    if g.ndim == 2:
        return _spectral(g)
    if g.ndim in (3, 4):
        return _spectral_conv(g)
    raise NotImplementedError(f"lmo_direction: norm 'auto' has no oracle for a {g.ndim}-D array (shape {g.shape}); "
                              "choose a norm for it explicitly")


_ORACLES = {0: lambda g: g, 1: _auto, 2: _spectral, 3: _spectral_conv, 4: _sign, 5: _bias, 6: _col, 7: _row}


def _kind(norm: str | int) -> int:
    kind = LMO_NORMS[norm] if isinstance(norm, str) and norm in LMO_NORMS else norm
    if kind not in _ORACLES:
        raise ValueError(f"unknown LMO norm {norm!r}; choose one of {sorted(LMO_NORMS)} or their values 0-7")
    return int(kind)


def _is_spectral(kind: int, ndim: int) -> bool:
    return kind in (2, 3) or (kind == 1 and ndim >= 2)


def lmo_direction(g: jax.Array, norm: str | int = "auto", **norm_kwargs: Any) -> jax.Array:
    r"""The oracle's direction for one array: ``g`` rescaled to the unit ball of the chosen norm's dual.

    ``norm`` is a name of :data:`LMO_NORMS` or pytorch_optimizer's ``LMONorm`` value:

    * ``"spectral"`` (2-D): :math:`\sqrt{d_{out}/d_{in}}\,\mathrm{NS}(g)` (``normalize=False``:
      :math:`\sqrt{d_{out}}`; ``max_scale``: at least 1), Newton–Schulz in bfloat16 (``num_steps``);
    * ``"spectral_conv"`` (3-D/4-D): the same on ``g`` flattened to ``(d_out, -1)``, scaled by
      :math:`\sqrt{d_{out}/d_{in}} / \text{kernel size}`;
    * ``"sign"`` (2-D): :math:`\operatorname{sign}(g)/d_{in}` (``normalize=False``: no division);
    * ``"bias"``: :math:`g / (\mathrm{RMS}_0(g) + 10^{-8})`, the RMS over the first axis;
    * ``"col"`` / ``"row"`` (2-D): each column / row divided by its RMS (options ``normalized``,
      ``transpose``, as the reference's ``Col`` and ``Row``);
    * ``"auto"``: ``bias`` for 0-D/1-D, ``spectral`` for 2-D, ``spectral_conv`` for 3-D/4-D;
    * ``"none"``: ``g`` itself.
    """
    return _ORACLES[_kind(norm)](g, **norm_kwargs).astype(g.dtype)


def scale_by_lmo(norm: str | int = "auto", radius: Any = 1.0, **norm_kwargs: Any) -> GradientTransformation:
    """Replaces every update by ``radius`` times :func:`lmo_direction` of it (stateless; one norm for every leaf).

    Spectral directions are bfloat16 values, and their product with ``radius`` is rounded to bfloat16 too,
    as in pytorch_optimizer (whose Newton–Schulz returns a bfloat16 tensor scaled in place).

    Args:
      norm: the norm's name (:data:`LMO_NORMS`) or pytorch_optimizer's ``LMONorm`` value.
      radius: the factor (pytorch_optimizer's ``scale``), a number or an array.
      **norm_kwargs: the norm's options (see :func:`lmo_direction`).

    Returns:
      A ``GradientTransformation`` whose state is ``EmptyState``.
    """

    kind = _kind(norm)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args

        def one(g):
            u = lmo_direction(g, kind, **norm_kwargs)
            return (_bf16_times(u, radius) if _is_spectral(kind, g.ndim) else u * radius).astype(g.dtype)

        return gt.tree_map(one, updates), state

    return GradientTransformation(init, update)


def torch_lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """torch's ``lerp``: ``start + w (end - start)`` for ``w < 0.5``, else ``end - (end - start)(1 - w)``."""
    return jnp.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1.0 - weight))


def scale_by_lmo_momentum(momentum: Any = 0.1) -> GradientTransformation:
    r"""SCION's average :math:`d_t = (1-\alpha) d_{t-1} + \alpha g_t` (``momentum`` is :math:`\alpha`, the new
    gradient's weight, as in pytorch_optimizer's SCION), computed as torch's ``lerp``; the update is :math:`d_t`.

    Args:
      momentum: :math:`\alpha` in (0, 1] (a number or array: the transform keeps no step count).

    Returns:
      A ``GradientTransformation`` whose state is :class:`ScaleByLmoMomentumState`.
    """

    def init(params):
        return ScaleByLmoMomentumState(gt.tree_map(jnp.zeros_like, params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        d = gt.tree_map(lambda d_, g: torch_lerp(d_, g, momentum).astype(d_.dtype), state.d, updates)
        return d, ScaleByLmoMomentumState(d)

    return GradientTransformation(init, update)
