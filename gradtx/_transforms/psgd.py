r"""PSGD Kron: preconditioned SGD with Kronecker-factored preconditioners (Li, 2015,
https://arxiv.org/abs/1512.04202; Li, 2018, https://arxiv.org/abs/1809.10232), as pytorch-optimizer's ``Kron``.

For a leaf of shape :math:`(n_1, \dots, n_k)` the preconditioner is
:math:`P = Q^H Q` with :math:`Q = Q_1 \otimes \dots \otimes Q_k`, each factor an
upper-triangular matrix (or a diagonal, kept as a vector, for large, unit or
chosen dimensions). With probability ``p`` per step, the factors take one step
of the PSGD fit on a Gaussian probe :math:`v` and the (momentum) gradient
:math:`g`: with :math:`a = Q g` and :math:`b = Q^{-H} v`, factor :math:`i` moves by
:math:`-\eta\, \mathrm{triu}(A_i - B_i) / \|A_i + B_i\|\; Q_i`, where :math:`A_i, B_i`
contract :math:`a a^H`, :math:`b b^H` over every axis but :math:`i`. The step is the
bias-corrected momentum preconditioned by :math:`P`, scaled down to an RMS of at most 1.1.

The leaf-level functions mirror pytorch-optimizer's (``initialize_q_expressions``,
``update_precondition``, ``get_precondition_grad``, ``balance_q``), so that given
the same probe they compute the same numbers; their triangular solve runs in
float32, as the reference's does.
"""

from __future__ import annotations

import math
from string import ascii_lowercase, ascii_uppercase
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree as gt
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation

__all__ = ["KronState", "scale_by_kron", "kron_update_probability", "init_kron_factors", "update_kron_factors",
           "kron_precondition", "balance_kron_factors"]

_LETTERS = ascii_lowercase + ascii_uppercase
EPS = float(jnp.finfo(jnp.bfloat16).tiny)  # the factor update's floor, as the reference's


class KronState(NamedTuple):
    """State of :func:`scale_by_kron`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    mu: Any  # like params (in mu_dtype): the momentum buffer
    qs: Any  # per leaf: a list of factors, (n_i, n_i) upper-triangular or (n_i,) diagonal, in precondition_dtype
    update_counter: jax.Array  # shape=(), dtype=int32: steps since the factors last moved
    key: jax.Array  # raw uint32 PRNG key: probes and the balancing draw


def kron_update_probability(step: Any, max_prob: float = 1.0, min_prob: float = 0.03, decay: float = 0.001,
                            flat_start: int = 500) -> jax.Array:
    """The default probability of moving the factors at ``step``: flat, then decaying (computed in float32)."""
    prob = max_prob * jnp.exp(-decay * (jnp.asarray(step, jnp.float32) - flat_start))
    return jnp.clip(prob, min_prob, max_prob).astype(jnp.float32)


def _diagonal_dims(shape: tuple, max_size: int, min_ndim_triangular: int, memory_save_mode: str | None) -> list:
    if memory_save_mode is None:
        diag = [False] * len(shape)
    elif memory_save_mode == "one_diag":
        diag = [False] * len(shape)
        diag[np.argsort(shape)[::-1][0]] = True
    elif memory_save_mode == "smart_one_diag":
        diag = [False] * len(shape)
        ordered = sorted(shape)
        if len(shape) >= 2 and ordered[-1] > ordered[-2]:
            diag[np.argsort(shape)[::-1][0]] = True
    elif memory_save_mode == "all_diag":
        diag = [True] * len(shape)
    else:
        raise NotImplementedError(f"invalid memory_save_mode {memory_save_mode}. it must be one of "
                                  "[None, `one_diag`, `smart_one_diag`, `all_diag`]")
    return [d or size == 1 or size > max_size or len(shape) < min_ndim_triangular for size, d in zip(shape, diag)]


def init_kron_factors(shape: tuple, scale: float = 1.0, max_size: int = 8192, min_ndim_triangular: int = 2,
                      memory_save_mode: str | None = None, dtype: Any = jnp.float32) -> tuple[list, tuple]:
    """``(factors, expressions)`` for a leaf of ``shape``: pytorch-optimizer's ``initialize_q_expressions``.

    Factors start as ``scale ** (1/k)`` times the identity (or ones); the einsum
    expressions are the reference's strings ``(expr_a, [expr_g per factor], expr_r)``.
    """
    shape = tuple(shape)
    if not shape:
        return [scale * jnp.ones((), dtype)], (",->", [",->"], ",,->")
    if len(shape) > 13:
        raise ValueError(f"got tensor with dim {len(shape)}. Einstein runs out of letters!")
    scale = math.pow(scale, 1.0 / len(shape))
    qs, expr_g = [], []
    a1, a2, a3, p1, p2, p3, p4 = [], "", "", [], [], "", ""
    for i, (size, diagonal) in enumerate(zip(shape, _diagonal_dims(shape, max_size, min_ndim_triangular,
                                                                     memory_save_mode))):
        lhs = "".join(_LETTERS[i + 13] if j == i else _LETTERS[j] for j in range(len(shape)))
        if diagonal:
            qs.append(scale * jnp.ones(size, dtype))
            a1.append(_LETTERS[i])
            a2 += _LETTERS[i]
            a3 += _LETTERS[i]
            expr_g.append(f"{lhs},{lhs}->{_LETTERS[i + 13]}")
            p1.append(_LETTERS[i + 13])
            p2.append(_LETTERS[i + 13])
            p3 += _LETTERS[i + 13]
            p4 += _LETTERS[i + 13]
        else:
            qs.append(scale * jnp.eye(size, dtype=dtype))
            a1.append(_LETTERS[i] + _LETTERS[i + 13])
            a2 += _LETTERS[i + 13]
            a3 += _LETTERS[i]
            rhs = "".join(_LETTERS[i + 26] if j == i else _LETTERS[j] for j in range(len(shape)))
            expr_g.append(f"{lhs},{rhs}->{_LETTERS[i + 13]}{_LETTERS[i + 26]}")
            a, b, c = _LETTERS[i], _LETTERS[i + 13], _LETTERS[i + 26]
            p1.append(a + b)
            p2.append(a + c)
            p3 += c
            p4 += b
    expr_a = ",".join(a1) + f",{a2}->{a3}"
    expr_r = ",".join(p1) + "," + ",".join(p2) + f",{p3}->{p4}"
    return qs, (expr_a, expr_g, expr_r)


def balance_kron_factors(qs: list) -> list:
    """Rescales the factors to equal infinity norms, keeping their Kronecker product (the reference's ``balance_q``)."""
    norms = jnp.stack([jnp.max(jnp.abs(q)) for q in qs])
    mean = jnp.prod(norms) ** (1 / len(qs))
    return [q * (mean / n) for q, n in zip(qs, norms)]


def _solve_triangular_right(x: jax.Array, a: jax.Array) -> jax.Array:
    """``x @ inv(a)`` for upper-triangular ``a``, in float32 as the reference computes it."""
    x32, a32 = x.astype(jnp.float32), a.astype(jnp.float32)
    flat = x32.reshape(-1, x32.shape[-1])
    out = jax.scipy.linalg.solve_triangular(a32, flat.T, trans="T", lower=False).T
    return out.reshape(x.shape).astype(x.dtype)


def _norm_lower_bound(a: jax.Array) -> jax.Array:
    """A lower bound of the spectral norm of ``a`` (the reference's ``norm_lower_bound``); the norm for vectors."""
    if a.ndim < 2:
        return jnp.linalg.norm(a)
    max_abs = jnp.max(jnp.abs(a))
    tiny = jnp.finfo(a.dtype).tiny
    a = a / jnp.where(max_abs > 0, max_abs, 1.0)
    aa = a * a
    col, row = jnp.sum(aa, axis=0), jnp.sum(aa, axis=1)
    i, j = jnp.argmax(col), jnp.argmax(row)
    x0 = a[:, i] @ a
    bound0 = jnp.linalg.norm((x0 / jnp.maximum(jnp.linalg.norm(x0), tiny)) @ a.T)
    x1 = a @ a[j, :]
    bound1 = jnp.linalg.norm(a.T @ (x1 / jnp.maximum(jnp.linalg.norm(x1), tiny)))
    return max_abs * jnp.where(col[i] > row[j], bound0, bound1)


def update_kron_factors(qs: list, expressions: tuple, probe: jax.Array, grad: jax.Array, lr: Any,
                        eps: float = EPS) -> list:
    """One PSGD step of the factors on ``(probe, grad)``: the reference's ``update_precondition``."""
    expr_a, expr_gs, _ = expressions
    a = jnp.einsum(expr_a, *qs, grad)
    order = grad.ndim
    axes = list(range(order))
    conj_b = jnp.transpose(probe, axes[1:] + axes[:1])
    for i, q in enumerate(qs):
        conj_b = conj_b / q if q.ndim < 2 else _solve_triangular_right(conj_b, q)
        if i < order - 1:
            conj_b = jnp.swapaxes(conj_b, i, order - 1)
    new = []
    for q, expr_g in zip(qs, expr_gs):
        term1, term2 = jnp.einsum(expr_g, a, a), jnp.einsum(expr_g, conj_b, conj_b)
        step = (term1 - term2) * lr
        if q.ndim < 2:
            step = step * q / (jnp.max(jnp.abs(term1 + term2)) + eps)
        else:
            step = jnp.triu(step) / (_norm_lower_bound(term1 + term2) + eps) @ q
        new.append(q - step)
    return new


def kron_precondition(qs: list, expressions: tuple, grad: jax.Array) -> jax.Array:
    """:math:`Q^H Q g`: the reference's ``get_precondition_grad``."""
    return jnp.einsum(expressions[-1], *qs, *qs, grad)


def kron_leaf_step(mu: jax.Array, qs: list, grad: jax.Array, probe: jax.Array, do_update: Any, balance: Any,
                   bias_correction: Any, *, b1: Any, expressions: tuple, precondition_lr: Any,
                   momentum_into_precondition_update: bool, precondition_dtype: Any) -> tuple:
    """One leaf's Kron step (pytorch-optimizer's ``Kron`` for one parameter), before ``-lr`` and weight decay.

    The step of :func:`scale_by_kron` for one array, with the probe and the
    decisions to move and to rebalance the factors given, for a caller that draws
    them itself (``gradtx.optim.Kron`` draws them as pytorch-optimizer does).

    Args:
      mu: the momentum, the leaf's shape.
      qs: the leaf's factors (:func:`init_kron_factors`).
      grad: the gradient.
      probe: the Gaussian probe, the leaf's shape, in ``precondition_dtype``.
      do_update: a (traced) bool: move the factors this step.
      balance: a (traced) bool: rebalance the factors first (leaves of 2 or more dimensions).
      bias_correction: ``1 - b1**t`` at step ``t`` (from 1).
      b1: the momentum's decay.
      expressions: the leaf's einsum expressions (:func:`init_kron_factors`).
      precondition_lr: the factors' step size.
      momentum_into_precondition_update: fit the factors to the momentum (else the gradient).
      precondition_dtype: the factors' dtype.

    Returns:
      ``(direction, mu, qs)``: the preconditioned direction (RMS clipped to 1.1),
      the new momentum and the new factors.
    """
    mu = (mu * b1 + grad * (1 - b1)).astype(mu.dtype)
    debiased = (mu / bias_correction).astype(precondition_dtype)
    if grad.ndim > 1:
        qs = jax.lax.cond(balance, balance_kron_factors, lambda q: q, qs)
    target = debiased if momentum_into_precondition_update else grad
    qs = jax.lax.cond(do_update, lambda q: update_kron_factors(q, expressions, probe, target, precondition_lr),
                      lambda q: q, qs)
    direction = kron_precondition(qs, expressions, debiased).astype(grad.dtype)
    direction = direction * jnp.minimum(1.1 / (jnp.sqrt(jnp.mean(direction**2)) + 1e-6), 1.0)
    return direction, mu, qs


def scale_by_kron(b1: Any = 0.9, preconditioner_update_probability: Any = None, max_size_triangular: int = 8192,
                  min_ndim_triangular: int = 2, memory_save_mode: str | None = None,
                  momentum_into_precondition_update: bool = True, precondition_lr: Any = 0.1,
                  precondition_init_scale: float = 1.0, mu_dtype: Any = None, precondition_dtype: Any = jnp.float32,
                  balance_prob: Any = 0.01, key: Any = 0) -> GradientTransformation:
    r"""PSGD Kron's preconditioned direction (pytorch-optimizer's ``Kron`` step, before ``-lr`` and weight decay).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad \hat m_t = m_t / (1 - \beta_1^t), \quad
        u_t = \min\Bigl(1, \frac{1.1}{\mathrm{rms}(P \hat m_t) + 10^{-6}}\Bigr) P \hat m_t, \quad P = Q^H Q

    The factors :math:`Q` move (see the module docstring) when the steps since the
    last move reach :math:`1/p`, where :math:`p` is ``preconditioner_update_probability``
    (a number or a schedule of the step; None: :func:`kron_update_probability`),
    and are rebalanced with probability ``balance_prob`` when they move. The probes
    and the balancing draw come from ``key`` (an int seed or a raw PRNG key), one
    split per step, one probe key per leaf.

    Args:
      b1: the momentum.
      preconditioner_update_probability: :math:`p` (number, schedule or None).
      max_size_triangular: dimensions above this keep a diagonal factor.
      min_ndim_triangular: leaves of fewer dimensions keep diagonal factors.
      memory_save_mode: None, ``"one_diag"``, ``"smart_one_diag"`` or ``"all_diag"``.
      momentum_into_precondition_update: fit the factors to the momentum (else the raw gradient).
      precondition_lr: the factors' step size.
      precondition_init_scale: the initial scale of :math:`Q`.
      mu_dtype: the momentum's dtype (None: the parameters').
      precondition_dtype: the factors' dtype (float32 by default, as the reference).
      balance_prob: the probability of rebalancing when the factors move.
      key: the PRNG seed or key.

    Returns:
      A GradientTransformation whose state is a :class:`KronState`.
    """
    precondition_dtype = jnp.dtype(precondition_dtype)

    def expressions_of(x):
        return init_kron_factors(jnp.shape(x), precondition_init_scale, max_size_triangular, min_ndim_triangular,
                                 memory_save_mode, precondition_dtype)

    def init(params):
        raw = jax.random.PRNGKey(key) if isinstance(key, int) else key
        return KronState(count=gt.zero_count(), mu=gt.tree_zeros_like(params, mu_dtype),
                         qs=gt.tree_map(lambda x: expressions_of(x)[0], params),
                         update_counter=gt.zero_count(), key=raw)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        prob = (kron_update_probability(state.count) if preconditioner_update_probability is None
                else jnp.asarray(value_at(preconditioner_update_probability, state.count), jnp.float32))
        counter = state.update_counter + 1
        do_update = (prob > 0) & (counter.astype(jnp.float32) >= 1 / prob)
        key, balance_key, probe_key = jax.random.split(state.key, 3)
        balance = (jax.random.uniform(balance_key) < balance_prob) & do_update
        count = gt.safe_increment(state.count)
        bias_correction = 1 - b1**count
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(probe_key, max(len(leaves), 1))
        results = []
        for g, m, qs, k in zip(leaves, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.qs), keys):
            probe = jax.random.normal(k, jnp.shape(g), precondition_dtype)
            results.append(kron_leaf_step(
                m, qs, g, probe, do_update, balance, bias_correction, b1=b1, expressions=expressions_of(g)[1],
                precondition_lr=precondition_lr, momentum_into_precondition_update=momentum_into_precondition_update,
                precondition_dtype=precondition_dtype))
        out, mu, qs = (treedef.unflatten([r[i] for r in results]) for i in range(3))
        return out, KronState(count, mu, qs, jnp.where(do_update, 0, counter).astype(jnp.int32), key)

    return GradientTransformation(init, update)
