r"""GaLore: gradient low-rank projection (Zhao et al., 2024, https://arxiv.org/abs/2403.03507).

A matrix gradient :math:`G \in \mathbb R^{m \times n}` is projected onto the
top-:math:`r` singular vectors of a recent gradient, a base optimizer runs on the
small projected gradient (so its state is :math:`r \times n` or :math:`m \times r`),
and its update is projected back. The projector is recomputed from a fresh SVD
every ``update_proj_gap`` steps.

Two conventions of the same idea live here, sharing the SVD:

- :func:`scale_by_galore` is ``optax.contrib.scale_by_galore``: the projector
  spans the *larger* side (left singular vectors when :math:`m \ge n`), refreshed
  when the steps taken so far are a multiple of the gap, any base transformation.
- :func:`scale_by_galore_projection` is the projection of pytorch-optimizer's
  ``GaLore`` (``GaLoreProjector``): ``projection_type`` chooses the side (``"std"``
  projects the *smaller* side), refreshed at a parameter's first step and at every
  step count that is a multiple of the gap.

Both compute the SVD in float32 whatever the gradient's dtype (as both references
do) and cast the singular vectors back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformation
from gradtx._transforms.moments import scale_by_adam

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "GaLoreProjectionState", "ScaleByStepSizeRatioState",
           "scale_by_galore", "scale_by_galore_projection", "scale_by_step_size_ratio"]


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a weight form the matrix GaLore projects (optax's ``GaLoreDimensionNumbers``).

    The weight is transposed to (reduction axes, output axes) and reshaped to a
    (reduction size, output size) matrix; every axis must be one or the other.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore` (optax's ``GaLoreState``)."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    base_optimizer_state: Any  # the base transformation's state over the projected (low-rank) shapes
    projector: Any  # like params: (m, r) or (n, r) projection matrix per projected leaf, (0, 0) zeros otherwise


class GaLoreProjectionState(NamedTuple):
    """State of :func:`scale_by_galore_projection`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far (0 until the first projector exists)
    base_optimizer_state: Any  # the base transformation's state over the projected shapes
    projector: Any  # like params: the orthogonal factor per projected leaf ((r, n) or (m, r)), None otherwise


_is_dim_nums = lambda x: isinstance(x, GaLoreDimensionNumbers)  # noqa: E731
_is_dim_nums_leaf = lambda x: x is None or _is_dim_nums(x)  # noqa: E731
_is_none = lambda x: x is None  # noqa: E731


def _axes(axis: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    return (axis % ndim,) if isinstance(axis, int) else tuple(a % ndim for a in axis)


def _matrix_view(x: Any, dim_nums: GaLoreDimensionNumbers) -> tuple[Callable, Callable, tuple[int, int]]:
    """``(to_matrix, from_matrix, (m, n))`` for treating ``x`` as the matrix ``dim_nums`` describes."""
    if x.ndim < 2:
        raise ValueError(f"GaLore requires tensors with rank >= 2, got shape {x.shape}")
    reduction, output = _axes(dim_nums.reduction_axis, x.ndim), _axes(dim_nums.output_axis, x.ndim)
    if set(reduction) & set(output):
        raise ValueError(f"Reduction axes {reduction} and output axes {output} must be disjoint. "
                         f"Got dim_nums={dim_nums} for shape {x.shape}")
    if len(set(reduction) | set(output)) != x.ndim:
        raise ValueError(f"All axes must be specified. Got reduction={reduction}, output={output} for tensor "
                         f"with {x.ndim} dimensions")
    order = reduction + output
    inverse = tuple(sorted(range(x.ndim), key=lambda i: order[i]))
    shape = tuple(x.shape[a] for a in order)
    m, n = math.prod(shape[:len(reduction)]), math.prod(shape[len(reduction):])
    return (lambda y: y.transpose(order).reshape(m, n)), (lambda y: y.reshape(shape).transpose(inverse)), (m, n)


def svd_factors(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(U, Vh)`` of the thin SVD of ``matrix``, computed in float32 and cast back to its dtype.

    Both references compute GaLore's SVD in float32 only (optax casts to float32,
    pytorch-optimizer calls ``.float()``), so a float64 run projects with float32
    singular vectors too.
    """
    u, _, vh = jnp.linalg.svd(matrix.astype(jnp.float32), full_matrices=False)
    return u.astype(matrix.dtype), vh.astype(matrix.dtype)


def scale_by_galore(rank: int = 128, update_proj_gap: int = 200, scale: Any = 1.0,
                    base_optimizer: GradientTransformation | None = None,
                    weight_dimension_numbers: Any = None) -> GradientTransformation:
    r"""Runs ``base_optimizer`` on low-rank projections of matrix gradients: ``optax.contrib.scale_by_galore``.

    For a leaf viewed as :math:`G \in \mathbb R^{m\times n}` and
    :math:`r' = \min(r, m, n)`: with :math:`m \ge n`, :math:`P = U_{:, :r'}` and the
    base sees :math:`P^\top G`, its update :math:`R` returns as :math:`s\,P R`;
    otherwise :math:`P = V_{:, :r'}`, the base sees :math:`G P` and :math:`s\,R P^\top`
    returns. :math:`U, V` come from the SVD of the current gradient at steps
    :math:`0, k, 2k, \dots` (``k = update_proj_gap``) and are kept in between.
    Leaves that are not projected go through the base transformation whole.

    Args:
      rank: the projection rank :math:`r` (a positive int).
      update_proj_gap: steps between SVDs :math:`k`.
      scale: :math:`s`, multiplies the projected-back update.
      base_optimizer: a transformation that does not read ``params`` (its state
        has the projected shapes); ``scale_by_adam()`` by default.
      weight_dimension_numbers: None (project the 2-D leaves), one
        :class:`GaLoreDimensionNumbers` for every leaf of rank >= 2, a tree of them
        (None leaves: not projected), or a function ``params -> tree``.

    Returns:
      A GradientTransformation whose state is a :class:`GaLoreState`.
    """
    base = scale_by_adam() if base_optimizer is None else base_optimizer
    if not isinstance(rank, int):
        raise TypeError(f"`rank` must be an int, got {type(rank)}")
    if rank <= 0:
        raise ValueError(f"`rank` must be positive, got {rank}")

    def dim_nums_of(params):
        spec = weight_dimension_numbers
        if spec is None:
            return jax.tree.map(lambda p: GaLoreDimensionNumbers() if p.ndim == 2 else None, params)
        if callable(spec):
            return spec(params)
        if _is_dim_nums(spec):
            return jax.tree.map(lambda p: spec if p.ndim >= 2 else None, params)
        return spec

    def shapes(p, dim_nums):
        if dim_nums is None:
            return jnp.zeros((0, 0), p.dtype), gt.tree_zeros_like(p)
        _, _, (m, n) = _matrix_view(p, dim_nums)
        r = min(rank, m, n)
        left = m >= n
        return jnp.zeros((m if left else n, r), p.dtype), jnp.zeros((r, n) if left else (m, r), p.dtype)

    def transpose_pairs(reference, pairs):
        return jax.tree.transpose(jax.tree.structure(reference), jax.tree.structure((0, 0)), pairs)

    def init(params):
        if not jax.tree.leaves(params):
            return GaLoreState(gt.zero_count(), base.init(params), params)
        pairs = jax.tree.map(shapes, params, dim_nums_of(params), is_leaf=_is_dim_nums_leaf)
        projectors, proxies = transpose_pairs(params, pairs)
        return GaLoreState(gt.zero_count(), base.init(proxies), projectors)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        refresh = state.count % update_proj_gap == 0
        dim_nums = dim_nums_of(updates)

        def project(g, projector, dim_num):
            if dim_num is None:
                return g, projector
            to_matrix, _, (m, n) = _matrix_view(g, dim_num)
            g2 = to_matrix(g)
            r, left = min(rank, m, n), m >= n

            def fresh():
                u, vh = svd_factors(g2)
                return u[:, :r] if left else vh[:r, :].T

            projector = jax.lax.cond(refresh, fresh, lambda: projector)
            return (projector.T @ g2 if left else g2 @ projector), projector

        def back(low, projector, g, dim_num):
            if dim_num is None:
                return low
            _, from_matrix, (m, n) = _matrix_view(g, dim_num)
            full = projector @ low if m >= n else low @ projector.T
            return (scale * from_matrix(full)).astype(g.dtype)

        pairs = jax.tree.map(project, updates, state.projector, dim_nums, is_leaf=_is_dim_nums_leaf)
        low, projectors = transpose_pairs(updates, pairs)
        low_updates, base_state = base.update(low, state.base_optimizer_state, None)
        full = jax.tree.map(back, low_updates, projectors, updates, dim_nums, is_leaf=_is_dim_nums_leaf)
        return full, GaLoreState(gt.safe_increment(state.count), base_state, projectors)

    return GradientTransformation(init, update)


# pytorch-optimizer's projection types -> the side projected when m >= n and when m < n ("random" projects
# as "std" does: GaLore's step never asks for random matrices).
_SIDES = {"std": ("right", "left"), "random": ("right", "left"), "reverse_std": ("left", "right"),
          "right": ("right", "right"), "left": ("left", "left")}


def galore_side(shape: tuple[int, ...], projection_type: str) -> str:
    """The side GaLore projects an (m, n) gradient on, as pytorch-optimizer's ``GaLoreProjector`` picks it.

    Args:
      shape: the gradient's shape ``(m, n)``.
      projection_type: ``"std"`` or ``"random"`` (right when m >= n, else left),
        ``"reverse_std"`` (the opposite), ``"right"`` or ``"left"``.

    Returns:
      ``"left"`` (:math:`P^\\top G`, P of shape (m, r)) or ``"right"`` (:math:`G Q^\\top`, Q of shape (r, n)).

    Raises:
      NotImplementedError: for another ``projection_type`` (``"full"`` included), naming the supported ones.
    """
    if projection_type not in _SIDES:
        raise NotImplementedError(f"projection_type {projection_type!r} is not supported; use one of "
                                  f"{sorted(_SIDES)} ('full' keeps two factors per matrix, which gradtx does not)")
    return _SIDES[projection_type][0 if shape[0] >= shape[1] else 1]


def scale_by_galore_projection(base_optimizer: GradientTransformation, rank: int | None = 128,
                               update_proj_gap: Any = 50, scale: Any = 1.0, projection_type: str = "std",
                               step: Any = None) -> GradientTransformation:
    r"""Runs ``base_optimizer`` on GaLore projections of 2-D leaves, as pytorch-optimizer's ``GaLoreProjector``.

    For a 2-D leaf :math:`G \in \mathbb R^{m\times n}` and :math:`r' = \min(r, m, n)`
    (all singular vectors for ``rank=None``), the side (``projection_type``):
    ``"left"`` projects :math:`P^\top G` with :math:`P = U_{:, :r'}` and returns
    :math:`s\,P R`; ``"right"`` projects :math:`G Q^\top` with :math:`Q = V^\top_{:r', :}`
    and returns :math:`s\,R Q`; ``"std"`` (and ``"random"``) is right when
    :math:`m \ge n` and left otherwise; ``"reverse_std"`` the opposite. The SVD of the
    current gradient is taken at the leaf's first step and whenever ``step`` is a
    multiple of ``update_proj_gap``. Other leaves go through the base whole.

    Args:
      base_optimizer: the transformation run on the projected gradients (it must not read ``params``).
      rank: the projection rank (an int, or None for all singular vectors).
      update_proj_gap: steps between SVDs.
      scale: :math:`s`, multiplies the projected-back update.
      projection_type: ``"std"``, ``"reverse_std"``, ``"right"``, ``"left"`` or ``"random"``.
      step: the step count the gap is measured in (pytorch-optimizer's group ``step``,
        counted from 1 at the first step); None counts this transform's own steps from 1.

    Returns:
      A GradientTransformation whose state is a :class:`GaLoreProjectionState`.
    """

    def plan(p):
        if jnp.ndim(p) != 2:
            return None
        m, n = p.shape
        r = min(m, n) if rank is None else min(rank, m, n)
        return galore_side(p.shape, projection_type), r

    def init(params):
        def shapes(p):
            found = plan(p)
            if found is None:
                return None, gt.tree_zeros_like(p)
            side, r = found
            m, n = p.shape
            return (jnp.zeros((r, n) if side == "right" else (m, r), p.dtype),
                    jnp.zeros((m, r) if side == "right" else (r, n), p.dtype))

        leaves, treedef = jax.tree.flatten(params, is_leaf=_is_none)
        pairs = [(None, None) if p is None else shapes(p) for p in leaves]
        projectors, proxies = (treedef.unflatten([pair[i] for pair in pairs]) for i in (0, 1))
        return GaLoreProjectionState(gt.zero_count(), base_optimizer.init(proxies), projectors)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = gt.safe_increment(state.count)
        now = count if step is None else step
        refresh = (state.count == 0) | (jnp.asarray(now) % update_proj_gap == 0)

        def project(g, projector):
            found = plan(g)
            if found is None:
                return g, projector
            side, r = found

            def fresh():
                u, vh = svd_factors(g)
                return vh[:r, :] if side == "right" else u[:, :r]

            projector = jax.lax.cond(refresh, fresh, lambda: projector)
            return (g @ projector.T if side == "right" else projector.T @ g), projector

        def back(low, projector, g):
            found = plan(g)
            if found is None:
                return low
            full = low @ projector if found[0] == "right" else projector @ low
            return (full * scale).astype(g.dtype)

        leaves, treedef = jax.tree.flatten(updates, is_leaf=_is_none)
        pairs = [(None, None) if g is None else project(g, q)
                 for g, q in zip(leaves, treedef.flatten_up_to(state.projector))]
        low, projectors = (treedef.unflatten([pair[i] for pair in pairs]) for i in (0, 1))
        low_updates, base_state = base_optimizer.update(low, state.base_optimizer_state, None)
        full = treedef.unflatten([None if g is None else back(u, q, g) for g, u, q in zip(
            leaves, treedef.flatten_up_to(low_updates), treedef.flatten_up_to(projectors))])
        return full, GaLoreProjectionState(count, base_state, projectors)

    return GradientTransformation(init, update)


class ScaleByStepSizeRatioState(NamedTuple):
    """State of :func:`scale_by_step_size_ratio`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def scale_by_step_size_ratio(b1: Any = 0.9, b2: Any = 0.999, step: Any = None) -> GradientTransformation:
    r"""Multiplies updates by :math:`\sqrt{1-\beta_2^t}\,/\,(1-\beta_1^t)`: Adam's bias corrections as one step size.

    The form of Adam's step in Kingma & Ba (2015, https://arxiv.org/abs/1412.6980,
    Section 2) that pytorch-optimizer's GaLore uses, with :math:`\epsilon` outside the
    correction. ``step`` is :math:`t` (pytorch-optimizer's group ``step``, counted from
    1); None counts this transform's own steps.
    """

    def init(params):
        del params
        return ScaleByStepSizeRatioState(gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = gt.safe_increment(state.count)
        t = count if step is None else step
        ratio = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        return gt.tree_map(lambda u: (u * ratio).astype(u.dtype), updates), ScaleByStepSizeRatioState(count)

    return GradientTransformation(init, update)
