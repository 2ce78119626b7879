"""Per-leaf (per-block) and per-unit rescaling: AGC, per-example clipping, centralisation, block norms, DoG."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import NO_PARAMS_MSG, EmptyState, GradientTransformation, init_empty_state
from gradtx._transforms.adam_variants import _safe_norm
from gradtx._transforms.numerics import _abs_sq

__all__ = [
    "unitwise_norm", "unitwise_clip", "AdaptiveGradClipState", "adaptive_grad_clip",
    "per_example_global_norm_clip", "per_example_layer_norm_clip", "centralize",
    "normalize_by_update_norm", "scale_by_param_block_norm",
    "ScaleByDistanceOverGradientsState", "scale_by_distance_over_gradients",
]

AdaptiveGradClipState = EmptyState  # optax's name for the state of adaptive_grad_clip

# The axes a unit's norm spans, by rank, when no axis is given: inputs of a linear
# layer (IO, or HIO for multi-head), the spatial and input axes of a conv kernel (HWIO, DHWIO).
_UNIT_AXES = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}


def unitwise_norm(x: Any, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """The L2 norm of each unit (output neuron) of ``x``, broadcast back to ``x``'s shape (``optax.unitwise_norm``).

    Scalars and vectors are one unit; a matrix (IO) has one unit per column; a
    conv kernel (HWIO, DHWIO) one per output channel. ``axis`` names the reduced
    axes explicitly (needed for other ranks).
    """
    x = jnp.asarray(x)
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            axis = None
        elif x.ndim in _UNIT_AXES:
            axis = _UNIT_AXES[x.ndim]
        else:
            raise ValueError(f"unitwise_norm: expected a parameter of rank 1 to 5, got shape {x.shape}; "
                             "pass `axis` to name the axes to reduce.")
    return jnp.broadcast_to(jnp.sqrt(jnp.sum(_abs_sq(x), axis=axis, keepdims=True)), x.shape)


def unitwise_clip(g_norm: Any, max_norm: Any, grad: Any, div_eps: Any = 1e-6) -> jax.Array:
    """Rescales ``grad`` where its unit norm ``g_norm`` exceeds ``max_norm`` (``optax.unitwise_clip``).

    All three arrays must have the same shape.
    """
    shapes = {jnp.shape(g_norm), jnp.shape(max_norm), jnp.shape(grad)}
    if len(shapes) != 1:
        raise ValueError(f"unitwise_clip: g_norm, max_norm and grad must have one shape, got "
                         f"{jnp.shape(g_norm)}, {jnp.shape(max_norm)}, {jnp.shape(grad)}")
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(clipping: Any, eps: Any = 1e-3, axis: int | tuple[int, ...] | None = None
                       ) -> GradientTransformation:
    r"""Adaptive gradient clipping (Brock et al., 2021, https://arxiv.org/abs/2102.06171).

    Follows ``optax.adaptive_grad_clip``.

    Each unit's gradient is clipped to ``clipping`` times its parameter's unit norm:

    .. math:: g \leftarrow g \cdot \min\left(1, \lambda \frac{\max(\lVert w \rVert, \epsilon)}{\lVert g \rVert}\right)

    Args:
      clipping: :math:`\lambda`, the largest ratio of gradient norm to parameter norm.
      eps: the smallest parameter norm used, so zero-initialised units still move.
      axis: the axes of a unit's norm; default: by rank (see :func:`unitwise_norm`).
    """

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)

        def clip(u, p):
            max_norm = clipping * jnp.maximum(unitwise_norm(p, axis), eps)
            return unitwise_clip(unitwise_norm(u, axis), max_norm, u)

        return jax.tree.map(clip, updates, params), state

    return GradientTransformation(init_empty_state, update)


def _check_batched(grads: Any, where: str) -> None:
    if not all(jnp.ndim(g) >= 1 for g in jax.tree.leaves(grads)) or not jax.tree.leaves(grads):
        raise ValueError(f"{where} expects per-example gradients with a batch dimension in axis 0; got shapes "
                         f"{jax.tree.map(jnp.shape, grads)}.")


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
    """Clips each example's gradient to global norm ``l2_norm_clip`` and sums over the batch (DP-SGD).

    Follows ``optax.per_example_global_norm_clip`` (Abadi et al., 2016,
    https://arxiv.org/abs/1607.00133). Every leaf of ``grads`` has the batch in
    axis 0. Returns ``(clipped_sum, num_clipped)``.
    """
    _check_batched(grads, "per_example_global_norm_clip")
    norms = jax.vmap(gt.tree_global_norm)(grads)
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    clipped_sum = jax.tree.map(lambda g: jnp.tensordot(multipliers, g, axes=1), grads)
    return clipped_sum, jnp.sum(multipliers < 1.0)


def per_example_layer_norm_clip(grads: Any, global_l2_norm_clip: Any, uniform: bool = True) -> tuple[Any, Any]:
    """Clips each example's gradient leaf by leaf, then sums over the batch (``optax.per_example_layer_norm_clip``).

    Each leaf gets a share of ``global_l2_norm_clip`` so that the clipped
    gradient's global norm stays within it: equal shares (``uniform``) or shares
    proportional to the leaf's size. Returns ``(clipped_sums, num_clipped)``, two
    trees like one example's gradient.
    """
    _check_batched(grads, "per_example_layer_norm_clip")
    leaves = jax.tree.leaves(grads)
    total = sum(g[0].size for g in leaves)
    share = (lambda g: 1.0 / len(leaves)) if uniform else (lambda g: g[0].size / total)
    pairs = jax.tree.map(lambda g: per_example_global_norm_clip(g, global_l2_norm_clip * share(g) ** 0.5), grads)
    return jax.tree.transpose(jax.tree.structure(grads), jax.tree.structure((0, 0)), pairs)


def centralize() -> GradientTransformation:
    """Gradient centralisation (Yong et al., 2020, https://arxiv.org/abs/2004.01461), as ``optax.centralize``.

    Subtracts from each leaf of rank >= 2 its mean over all axes but the first;
    vectors and scalars pass unchanged.
    """

    def center(u):
        return u - u.mean(tuple(range(1, u.ndim)), keepdims=True) if u.ndim > 1 else u

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(center, updates), state

    return GradientTransformation(init_empty_state, update)


def normalize_by_update_norm(scale_factor: Any = 1.0, eps: Any = 1e-6) -> GradientTransformation:
    r"""Divides the updates by their global norm (``optax.normalize_by_update_norm``).

    .. math:: u \leftarrow s \, u / (\lVert u \rVert_2 + \epsilon)
    """

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = (gt.tree_global_norm(updates) + eps) / scale_factor
        return jax.tree.map(lambda u: u / norm, updates), state

    return GradientTransformation(init_empty_state, update)


def scale_by_param_block_norm(min_scale: Any = 1e-3) -> GradientTransformation:
    r"""Multiplies each leaf's update by its parameter's L2 norm (``optax.scale_by_param_block_norm``).

    .. math:: u \leftarrow u \cdot \max(\lVert p \rVert_2, \epsilon_2)

    Adafactor's parameter scaling by block norm (Shazeer & Stern, 2018,
    https://arxiv.org/abs/1804.04235), with :math:`\epsilon_2` = ``min_scale``.
    """

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        return jax.tree.map(lambda u, p: u * _safe_norm(p, min_scale), updates, params), state

    return GradientTransformation(init_empty_state, update)


class ScaleByDistanceOverGradientsState(NamedTuple):
    """State of :func:`scale_by_distance_over_gradients`."""

    max_dist: Any  # like params, scalars: the largest distance from the initial params so far
    grad_sum_of_squares: Any  # like params, shape (1,): the sum of squared gradients so far
    init_params: Any  # like params (in param_dtype): the params at init


def scale_by_distance_over_gradients(reps_rel: Any = 1e-6, eps: Any = 1e-8, param_dtype: Any = jnp.float32,
                                     global_scale: Any = 1.0) -> GradientTransformation:
    r"""Layer-wise DoG, "distance over gradients" (Ivgi et al., 2023, https://arxiv.org/abs/2302.12022).

    Follows ``optax.scale_by_distance_over_gradients``: per leaf,

    .. math::
        \eta_t = s \frac{\max_{i \le t} \lVert x_i - x_0 \rVert}
                        {\sqrt{\sum_{i \le t} \lVert g_i \rVert^2 + \epsilon}}

    with the first distance set to ``reps_rel * (1 + ||x_0||)``. The output is
    :math:`\eta_t g_t`; follow it with a negative scale (``scale(-1.0)``) to descend.

    Args:
      reps_rel: the relative size of the first step.
      eps: added under the square root.
      param_dtype: dtype of the stored initial params.
      global_scale: :math:`s`.
    """

    def distance(x, y=0.0):
        return jnp.sqrt(jnp.square(x - y).sum())

    def init(params):
        return ScaleByDistanceOverGradientsState(
            max_dist=jax.tree.map(lambda x: reps_rel * (1 + distance(x)), params),
            grad_sum_of_squares=jax.tree.map(lambda x: jnp.zeros(1), params),
            init_params=gt.tree_cast(params, param_dtype),
        )

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        max_dist = jax.tree.map(lambda d, x, x0: jnp.maximum(d, distance(x, x0)), state.max_dist, params,
                                state.init_params)
        g_sos = jax.tree.map(lambda s, g: s + jnp.square(g).sum(), state.grad_sum_of_squares, updates)
        out = jax.tree.map(lambda g, d, s: global_scale * (d / jnp.sqrt(s + eps)) * g, updates, max_dist, g_sos)
        return out, ScaleByDistanceOverGradientsState(max_dist, g_sos, state.init_params)

    return GradientTransformation(init, update)
