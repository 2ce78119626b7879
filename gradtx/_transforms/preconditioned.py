r"""Shampoo, SOAP (Adam run in the eigenbasis of Shampoo's preconditioner), and the decay that follows SOAP's step.

Gupta et al., 2018, *Shampoo: Preconditioned Stochastic Tensor Optimization*, https://arxiv.org/abs/1802.09568.
Vyas et al., 2024, *SOAP: Improving and Stabilizing Shampoo using Adam*, https://arxiv.org/abs/2409.11321
(optax#1580 asks for it). The numbers follow ``pytorch_optimizer``'s ``Shampoo`` and ``SOAP`` (4.1.0).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation
from gradtx._transforms.scion import torch_lerp

__all__ = ["ScaleBySoapState", "ScaleByShampooState", "DecayAfterStepState", "scale_by_soap", "scale_by_shampoo",
           "decay_after_step", "soap_merged_shape"]


class ScaleBySoapState(NamedTuple):
    """State of :func:`scale_by_soap`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far (the first one only gathers statistics)
    mu: Any  # like params: first moment of the raw gradient, pytorch_optimizer's exp_avg
    nu: Any  # like params: second moment in the eigenbasis, exp_avg_sq
    GG: Any  # per leaf, a tuple over the (merged) axes: (d, d) gradient statistics, or None for an unrotated axis
    Q: Any  # per leaf, like GG: (d, d) eigenbasis of GG (eigenvectors by decreasing eigenvalue), or None


class ScaleByShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    momentum_buffer: Any  # like params: the previous preconditioned step, pytorch_optimizer's momentum_buffer
    preconditioners: Any  # per leaf, a tuple over its axes of (d, d) statistics, pre_cond_<axis>
    inverse_roots: Any  # per leaf, like preconditioners: their inverse 2k-th roots, inv_pre_cond_<axis>


class DecayAfterStepState(NamedTuple):
    """State of :func:`decay_after_step`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def soap_merged_shape(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """Merges neighbouring axes while their product stays at most ``max_dim`` (pytorch_optimizer's merge_small_dims).

    ``(1, 2, 512, 1, 2048, 1, 3, 4)`` with ``max_dim=1024`` gives ``(1024, 2048, 12)``. A shape that
    merges into one axis gives ``(1,)``, as the reference does.
    """
    merged, product = [], 1
    for dim in shape:
        product *= dim
        if product > max_dim:
            merged.append(product // dim)
            product = dim
    merged.append(product)
    return tuple(merged) if len(merged) > 1 else (1,)


class _Layout(NamedTuple):
    """How one leaf is seen by the preconditioner: the axes it rotates and the reshapes around them."""

    shape: tuple  # the leaf's shape
    merged: tuple  # the shape the rotations act on
    channels_last: bool  # a 4-D leaf read as NHWC: permuted to NCHW before merging
    rotated: tuple  # per merged axis: whether it has a preconditioner

    def to_merged(self, x: jax.Array) -> jax.Array:
        if self.channels_last:
            x = jnp.transpose(x, (0, 3, 1, 2))
        return x.reshape(self.merged)

    def from_merged(self, x: jax.Array) -> jax.Array:
        if self.channels_last:
            n, h, w, c = self.shape
            return jnp.transpose(x.reshape((n, c, h, w)), (0, 2, 3, 1))
        return x.reshape(self.shape)


def _layout(shape: tuple, max_dim: int, merge_dims: bool, precondition_1d: bool, channels_last: bool) -> _Layout:
    if len(shape) == 1:  # never merged: the reference's reshape of a vector to a merged shape fails
        return _Layout(shape, shape, False, (precondition_1d and shape[0] <= max_dim,))
    permute = merge_dims and channels_last and len(shape) == 4
    source = (shape[0], shape[3], shape[1], shape[2]) if permute else shape
    merged = soap_merged_shape(source, max_dim) if merge_dims else shape
    if merge_dims and math.prod(merged) != math.prod(shape):
        raise ValueError(f"scale_by_soap: merge_dims=True cannot reshape a parameter of shape {shape} to {merged} "
                         f"(max_precondition_dim={max_dim}); lower max_precondition_dim or set merge_dims=False")
    return _Layout(shape, merged, permute, tuple(d <= max_dim for d in merged))


def _project(x: jax.Array, bases: tuple, forward: bool) -> jax.Array:
    """Rotates every axis of ``x`` by its basis (``Q^T x`` forward, ``Q x`` back); axes without one cycle through."""
    for q in bases:
        if q is None:
            x = jnp.moveaxis(x, 0, -1)
        else:
            x = jnp.tensordot(x, q, axes=([0], [0 if forward else 1]))
    return x


def _statistics(g: jax.Array, layout: _Layout) -> tuple:
    """Per rotated axis, ``g g^T`` contracted over the other axes."""
    out = []
    for axis, rotated in enumerate(layout.rotated):
        if not rotated:
            out.append(None)
            continue
        others = [i for i in range(g.ndim) if i != axis]
        out.append(jnp.tensordot(g, g, axes=(others, others)))
    return tuple(out)


def _eigenbasis(m: jax.Array) -> jax.Array:
    _, q = jnp.linalg.eigh(m + 1e-30 * jnp.eye(m.shape[0], dtype=m.dtype))
    return jnp.flip(q, axis=1)


def _power_iteration(gg: tuple, bases: tuple, nu: jax.Array) -> tuple[tuple, jax.Array]:
    """One power-iteration step and a QR per basis; ``nu`` (merged) is permuted to the re-sorted eigenvalues.

    The QR is computed in float32, as the reference does for every dtype.
    """
    out = []
    for axis, (m, q) in enumerate(zip(gg, bases)):
        if m is None:
            out.append(None)
            continue
        product = m @ q
        estimate = jnp.sum(q * product, axis=0)
        order = jnp.argsort(estimate, descending=True)
        nu = jnp.take(nu, order, axis=axis)
        new_q, _ = jnp.linalg.qr(product[:, order].astype(jnp.float32))
        out.append(new_q.astype(product.dtype))
    return tuple(out), nu


def scale_by_soap(b1: Any = 0.95, b2: Any = 0.95, shampoo_beta: Any = None, eps: Any = 1e-8,
                  precondition_frequency: Any = 10, max_precondition_dim: int = 10000, merge_dims: bool = False,
                  precondition_1d: bool = False, correct_bias: bool = True, normalize_gradient: bool = False,
                  data_format: str = "channels_first", step: Any = None) -> GradientTransformation:
    r"""SOAP's direction: Adam in the eigenbasis of Shampoo's statistics (https://arxiv.org/abs/2409.11321).

    Per leaf and per axis :math:`i` (with at most ``max_precondition_dim`` entries) the transform keeps
    :math:`L_i \leftarrow \beta_s L_i + (1-\beta_s)\, G_{(i)} G_{(i)}^T` and its eigenbasis :math:`Q_i`:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) (Q^T g_t)^2, \quad
        u_t = \frac{\sqrt{1-\beta_2^{t-1}}}{1-\beta_1^{t-1}}\; Q\,\frac{Q^T m_t}{\sqrt{v_t} + \epsilon}

    where :math:`Q^T x` rotates every axis of :math:`x` by its basis. The first step only gathers
    :math:`L_i` and takes :math:`Q_i` from an eigendecomposition (its update is zero); afterwards
    :math:`L_i` is updated after each step and, every ``precondition_frequency`` steps, :math:`Q_i` is
    refreshed by one power iteration and a QR decomposition (in float32), re-sorting :math:`v`. The
    numbers are ``pytorch_optimizer.SOAP``'s (its step size and bias correction count the first step as
    step 0). 1-D leaves are rotated only with ``precondition_1d``; 0-D leaves and axes longer than
    ``max_precondition_dim`` are not rotated.

    Args:
      b1: decay of the first moment :math:`\beta_1`.
      b2: decay of the second moment :math:`\beta_2`.
      shampoo_beta: decay :math:`\beta_s` of the statistics; ``None`` takes ``b2``.
      eps: added to :math:`\sqrt{v_t}`.
      precondition_frequency: steps between eigenbasis refreshes.
      max_precondition_dim: longest axis that gets a preconditioner (static: it shapes the state).
      merge_dims: reshape each leaf of rank != 1 by merging neighbouring axes up to ``max_precondition_dim``.
      precondition_1d: also rotate 1-D leaves.
      correct_bias: apply the bias corrections above.
      normalize_gradient: divide the direction by its RMS plus ``eps``.
      data_format: ``"channels_last"`` reads 4-D leaves as NHWC before merging (with ``merge_dims``).
      step: the steps taken before this one, from outside the state (a param group's counter, as
        ``pytorch_optimizer`` keeps it); default: the state's count. A state that has not stepped yet (count 0)
        then first gathers its statistics and eigenbasis from the gradient, and at a ``step`` above 0 goes on
        to the update in the same call, as the reference does for a parameter whose first gradient comes late.

    Returns:
      A ``GradientTransformation`` whose state is :class:`ScaleBySoapState`.
    """
    check_range("b1", b1, 0.0, 1.0, high_open=True, where="scale_by_soap")
    check_range("b2", b2, 0.0, 1.0, high_open=True, where="scale_by_soap")
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"scale_by_soap: data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
    channels_last = data_format == "channels_last"

    def layout_of(x):
        return _layout(tuple(x.shape), max_precondition_dim, merge_dims, precondition_1d, channels_last)

    def init(params):
        def squares(p):
            layout = layout_of(p)
            return tuple(jnp.zeros((d, d), p.dtype) if r else None for d, r in zip(layout.merged, layout.rotated))

        zeros = gt.tree_map(jnp.zeros_like, params)
        stats = gt.tree_map(squares, params)
        return ScaleBySoapState(gt.zero_count(), zeros, gt.tree_map(jnp.zeros_like, params), stats, stats)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        fresh = state.count == 0
        count = gt.steps_before(state.count, step)
        beta1, beta2 = value_at(b1, count), value_at(b2, count)
        beta_s = beta2 if shampoo_beta is None else value_at(shampoo_beta, count)
        frequency = value_at(precondition_frequency, count)
        epsilon = value_at(eps, count)
        t = count.astype(jnp.result_type(float))  # the reference's step: 0 at the first (statistics-only) step
        if correct_bias:
            factor = jnp.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        else:
            factor = 1.0

        def leaf(g, mu, nu, gg, q):
            layout = layout_of(g)
            rotated = any(layout.rotated)

            def gather(gg, q):
                stats = _statistics(layout.to_merged(g), layout)
                return tuple(None if s is None else m + (1.0 - beta_s) * (s.astype(m.dtype) - m)
                             for m, s in zip(gg, stats))

            def refresh_if_due(gg, q, nu):
                if not rotated:
                    return q, nu

                def refresh(operands):
                    q, nu = operands
                    q, nu = _power_iteration(gg, q, layout.to_merged(nu))
                    return q, layout.from_merged(nu)

                refreshing = jnp.logical_and(count > 0, count % frequency == 0)
                return jax.lax.cond(refreshing, refresh, lambda operands: operands, (q, nu))

            def gather_first(mu, nu, gg, q):
                gg = gather(gg, q)
                q = tuple(None if m is None else _eigenbasis(m) for m in gg)
                if step is not None:  # at a due step the reference refreshes a late parameter's new basis at once
                    q, nu = refresh_if_due(gg, q, nu)
                return mu, nu, gg, q

            def first(operands):
                return jnp.zeros_like(g), *gather_first(*operands)

            def later(operands):
                mu, nu, gg, q = operands
                projected = layout.from_merged(_project(layout.to_merged(g), q, True))
                mu = mu + (1.0 - beta1) * (g - mu)
                nu = nu + (1.0 - beta2) * (projected * projected - nu)
                rotated_mu = _project(layout.to_merged(mu), q, True)
                direction = _project(rotated_mu / (jnp.sqrt(layout.to_merged(nu)) + epsilon), q, False)
                direction = layout.from_merged(direction)
                if normalize_gradient:
                    direction = direction / (jnp.sqrt(jnp.mean(direction * direction)) + epsilon)
                gg = gather(gg, q)
                q, nu = refresh_if_due(gg, q, nu)
                return (factor * direction).astype(g.dtype), mu, nu, gg, q

            if step is None:
                return jax.lax.cond(count == 0, first, later, (mu, nu, gg, q))

            def late_first(operands):
                return later(gather_first(*operands))

            return jax.lax.switch(jnp.where(count == 0, 0, jnp.where(fresh, 1, 2)), (first, late_first, later),
                                  (mu, nu, gg, q))

        treedef = jax.tree.structure(updates)
        gs = treedef.flatten_up_to(updates)
        results = [leaf(g, mu, nu, gg, q) for g, mu, nu, gg, q in zip(
            gs, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu),
            treedef.flatten_up_to(state.GG), treedef.flatten_up_to(state.Q))]
        fields = [treedef.unflatten([r[i] for r in results]) for i in range(5)]
        return fields[0], ScaleBySoapState(gt.safe_increment(count), *fields[1:])

    return GradientTransformation(init, update)


def decay_after_step(weight_decay: Any, learning_rate: Any = 1.0, *, skip_first: bool = False,
                     step: Any = None) -> GradientTransformation:
    r"""Shrinks the parameters *after* the step: :math:`\theta \leftarrow (\theta + u)(1 - \eta\lambda)`.

    Place it last, after the learning-rate scaling: the decay then multiplies the already updated
    parameter, as ``pytorch_optimizer`` does where it calls ``apply_weight_decay`` after ``p.add_``
    (SOAP, LaProp). With ``skip_first`` the first step leaves the parameter unchanged (SOAP's first
    step only gathers statistics).

    Args:
      weight_decay: :math:`\lambda` (a number, array or schedule).
      learning_rate: :math:`\eta` (a number, array or schedule).
      skip_first: no decay at the first step.
      step: the steps taken before this one, from outside the state (a param group's counter); default: the
        state's count.

    Returns:
      A ``GradientTransformation`` that needs ``params``; its state is :class:`DecayAfterStepState`.
    """
    def init(params):
        del params
        return DecayAfterStepState(gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("decay_after_step needs the parameters: call update(updates, state, params)")
        before = gt.steps_before(state.count, step)
        shrink = 1.0 - value_at(learning_rate, before) * value_at(weight_decay, before)
        if skip_first:
            shrink = jnp.where(before == 0, 1.0, shrink)
        new = gt.tree_map(lambda u, p: ((p + u) * shrink - p).astype(u.dtype), updates, params)
        return new, DecayAfterStepState(gt.safe_increment(state.count))

    return GradientTransformation(init, update)


def _inverse_root(m: jax.Array, power: int) -> jax.Array:
    """``m^(-1/power)`` by SVD, in float64 for float64 and in float32 otherwise (pytorch_optimizer's compute_power_svd)."""
    work = jnp.float64 if m.dtype == jnp.float64 else jnp.float32
    u, s, vh = jnp.linalg.svd(m.astype(work), full_matrices=False)
    return ((u * (s ** (-1.0 / power))[None, :]) @ vh).astype(m.dtype)


def scale_by_shampoo(momentum: Any = 0.0, matrix_eps: Any = 1e-6, preconditioning_compute_steps: Any = 1,
                     coupled_weight_decay: Any = 0.0, *, maximize: bool = False,
                     step: Any = None) -> GradientTransformation:
    r"""Shampoo's preconditioned step (https://arxiv.org/abs/1802.09568), as ``pytorch_optimizer.Shampoo``.

    For a leaf of order :math:`k`, with :math:`\tilde g_t = g_t + \mu (u_{t-1} - g_t)` (:math:`u_0 = g_1`) plus
    ``coupled_weight_decay`` times the parameter, each axis :math:`i` keeps
    :math:`H_i \leftarrow H_i + \tilde G_{(i)} \tilde G_{(i)}^T` (from :math:`\epsilon I`) and, every
    ``preconditioning_compute_steps`` steps (counted from 1), its inverse root :math:`H_i^{-1/2k}` by SVD (zero
    before the first refresh). The step :math:`u_t` multiplies :math:`\tilde g_t` by the roots axis by axis with the
    reference's transpositions and reshapes (for order >= 3 the result is laid out as the reference lays it out,
    not transposed back). 0-D leaves are not preconditioned.

    Args:
      momentum: :math:`\mu`, the previous step's weight.
      matrix_eps: :math:`\epsilon`, the statistics' initial diagonal (a number: ``init`` has no step count).
      preconditioning_compute_steps: steps between inverse-root refreshes.
      coupled_weight_decay: :math:`\lambda`, adds :math:`\lambda\theta` to :math:`\tilde g_t` (needs ``params``).
      maximize: negate the gradient; the first step's buffer :math:`u_0` is still the gradient before the
        negation, as in the reference (which copies it before negating).
      step: the steps taken before this one, from outside the state (a param group's counter, as
        ``pytorch_optimizer`` keeps it), which times the refreshes; default: the state's count. :math:`u_0` is
        still taken where the state has not stepped yet (count 0).

    Returns:
      A ``GradientTransformation`` whose state is :class:`ScaleByShampooState`.
    """

    def init(params):
        def eyes(p):
            return tuple(jnp.eye(d, dtype=p.dtype) * matrix_eps for d in p.shape)

        def zeros(p):
            return tuple(jnp.zeros((d, d), p.dtype) for d in p.shape)

        return ScaleByShampooState(gt.zero_count(), gt.tree_map(jnp.zeros_like, params),
                                   gt.tree_map(eyes, params), gt.tree_map(zeros, params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        before = gt.steps_before(state.count, step)
        refresh = (before + 1) % value_at(preconditioning_compute_steps, before) == 0
        mu, decay = value_at(momentum, before), value_at(coupled_weight_decay, before)

        def leaf(g, buf, pre, inv, p):
            buf = jnp.where(state.count == 0, g, buf)
            g = torch_lerp(-g if maximize else g, buf, mu)
            if p is not None:
                g = g + decay * p
            stats, shape, order = g, g.shape, g.ndim
            new_pre, new_inv = [], []
            for axis, dim in enumerate(shape):
                unfolded = jnp.moveaxis(stats, axis, 0).reshape(dim, -1)
                h = pre[axis] + unfolded @ unfolded.T
                g = jnp.swapaxes(g, 0, axis)
                transposed = g.shape
                g = g.reshape(dim, -1)
                root = jax.lax.cond(refresh, lambda: _inverse_root(h, 2 * order), lambda: inv[axis])
                g = (g.T @ root).reshape(shape) if axis == order - 1 else (root @ g).reshape(transposed)
                new_pre.append(h)
                new_inv.append(root)
            return g.astype(buf.dtype), tuple(new_pre), tuple(new_inv)

        treedef = jax.tree.structure(updates)
        needs_params = params is not None
        results = [leaf(*args) for args in zip(
            treedef.flatten_up_to(updates), treedef.flatten_up_to(state.momentum_buffer),
            treedef.flatten_up_to(state.preconditioners), treedef.flatten_up_to(state.inverse_roots),
            treedef.flatten_up_to(params) if needs_params else [None] * treedef.num_leaves)]
        out, pre, inv = (treedef.unflatten([r[i] for r in results]) for i in range(3))
        return out, ScaleByShampooState(gt.safe_increment(state.count), out, pre, inv)

    return GradientTransformation(init, update)
