r""":func:`gradtx.prodigy`'s step in programs over runs of parameters, for :class:`gradtx.optim.Prodigy`.

Prodigy's estimate :math:`d` couples every parameter through two sums
(:math:`\langle g, x_0 - x\rangle` and :math:`\lVert s\rVert_1`), so its update
is one transform of the whole tree. One program over thousands of parameters
compiles for minutes; here the step runs as three kinds of programs: the
moments and each parameter's two terms over runs of alike parameters (compiled
once per run shape), the sums in parameter order and the new :math:`d`, then
the parameters' updates over the same runs. The numbers are the transform's
(its per-leaf steps are the functions it is written with, and the sums add the
terms in the same order whatever the runs).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import ProdigyState
from gradtx import _tree as gt
from gradtx._transforms.prodigy import (
    prodigy_beta3, prodigy_direction, prodigy_estimate, prodigy_gradient, prodigy_moments, prodigy_rate,
)
from gradtx.optim._engine import alike_runs

__all__ = ["prodigy_step"]

# Options a Prodigy step takes as numbers (traced: editing them does not recompile) and as structure.
_NUMBERS = ("lr", "betas", "eps", "weight_decay", "d0", "d_coef")
_FLAGS = ("use_bias_correction", "decouple", "safeguard_warmup")


@functools.partial(jax.jit, static_argnames=("bias_correction",))
def _rate(d: Any, count: Any, numbers: dict, *, bias_correction: bool) -> tuple:
    count_inc = gt.safe_increment(count)
    return count_inc, prodigy_rate(d, numbers["lr"], count_inc, numbers["betas"], bias_correction)


def _moments(params: list, grads: list, params0: list, exp_avg: list, exp_avg_sq: list, grad_sum: list, d: Any,
             dlr: Any, numbers: dict, beta3: Any, *, decouple: bool, safeguard_warmup: bool) -> tuple:
    r"""Some parameters' new moments, and each one's two terms of the sums.

    ``grad_sum`` and ``params0`` come as prodigyopt keeps them (flattened, a
    one-element ``params0`` for every element); the new ``grad_sum`` goes back
    flattened in the parameter's dtype. The terms: :math:`\langle g, x_0 - x\rangle`
    and :math:`\lVert s\rVert_1`, one per parameter.
    """
    m, v, s, vdots, norms = [], [], [], [], []
    for p, g, p0, mi, vi, si in zip(params, grads, params0, exp_avg, exp_avg_sq, grad_sum):
        si = si.reshape(p.shape)
        p0 = p0.reshape(p.shape) if p0.size == p.size else jnp.broadcast_to(p0.reshape(()), p.shape)
        if not decouple:
            g = prodigy_gradient(g, p, numbers["weight_decay"])
        vdots.append(gt.tree_vdot(g, p0 - p))  # the transform's numerator term, for this leaf
        mi, vi, si = prodigy_moments(g, mi, vi, si, d, dlr, numbers["betas"], prodigy_beta3(numbers["betas"], beta3),
                                     numbers["d0"], safeguard_warmup)
        m.append(mi), v.append(vi), s.append(si.reshape(-1).astype(p.dtype))
        norms.append(jnp.sum(jnp.abs(si)))
    return m, v, s, jnp.stack(vdots), jnp.stack(norms)


# Each program twice: as it is, and reusing (donating) the buffers of the state or the parameters it replaces.
_MOMENTS = {donate: jax.jit(_moments, static_argnames=("decouple", "safeguard_warmup"),
                            donate_argnames=("exp_avg", "exp_avg_sq", "grad_sum") if donate else ())
            for donate in (False, True)}


def _in_order(terms: jax.Array) -> jax.Array:
    """``terms[0] + terms[1] + ...`` added one after another (the order of the transform's sums)."""
    return jax.lax.scan(lambda total, x: (total + x, None), terms[0], terms[1:])[0]


@jax.jit
def _estimate(vdots: list, norms: list, order: jax.Array, d: Any, dlr: Any, numerator_weighted: Any, numbers: dict,
              beta3: Any) -> tuple:
    """The new estimate from every run's terms, summed in parameter order: ``(numerator, d, d_denom, d_hat)``."""
    vdot = _in_order(jnp.concatenate(vdots)[order])
    denominator = _in_order(jnp.concatenate(norms)[order])
    numerator, estim_lr = prodigy_estimate(d, dlr, numerator_weighted, vdot, denominator,
                                           prodigy_beta3(numbers["betas"], beta3), numbers["d0"], numbers["d_coef"])
    return numerator, estim_lr, denominator, numbers["d_coef"] * numerator / denominator


def _apply(params: list, exp_avg: list, exp_avg_sq: list, dlr: Any, estim_lr: Any, numbers: dict, *,
           decouple: bool) -> list:
    decay = numbers["weight_decay"] if decouple else 0.0
    return [(p + prodigy_direction(m, v, p, dlr, estim_lr, numbers["eps"], decay)).astype(p.dtype)
            for p, m, v in zip(params, exp_avg, exp_avg_sq)]


_APPLY = {donate: jax.jit(_apply, static_argnames=("decouple",), donate_argnames=("params",) if donate else ())
          for donate in (False, True)}


def prodigy_step(group: dict, params: list, grads: list, state: ProdigyState, limit: float, *,
                 donate_state: bool = False, donate_params: bool = False) -> tuple:
    """One Prodigy step over ``params``: ``(new params, new state, d_denom, d_hat)``.

    ``state.grad_sum`` and ``state.params0`` are prodigyopt's flattened entries
    (see :func:`_moments`); the new ``grad_sum`` is flattened too. With
    ``donate_state`` (``donate_params``), the programs reuse the buffers of the
    moments and sums (of the parameters) they replace: pass only arrays nobody
    else holds, and, for the state, moments of the dtype the step computes in.

    Runs of ``limit`` parameters of one shape and dtype are programs of their
    own (compiled once for all alike runs), the other parameters one program.
    """
    numbers = {k: group[k] for k in _NUMBERS}
    beta3 = group["beta3"]
    flags = {k: bool(group[k]) for k in _FLAGS}
    count, dlr = _rate(state.estim_lr, state.count, numbers, bias_correction=flags["use_bias_correction"])
    runs, rest = alike_runs([(x.shape, x.dtype) for x in params], limit)
    runs = runs + ([rest] if rest else [])
    m, v, s = list(state.exp_avg), list(state.exp_avg_sq), list(state.grad_sum)
    vdots, norms = [], []
    for run in runs:
        pick = lambda xs: [xs[i] for i in run]  # noqa: E731
        out = _MOMENTS[donate_state](pick(params), pick(grads), pick(state.params0), pick(m), pick(v), pick(s),
                                     state.estim_lr, dlr, numbers, beta3, decouple=flags["decouple"],
                                     safeguard_warmup=flags["safeguard_warmup"])
        for i, mi, vi, si in zip(run, *out[:3]):
            m[i], v[i], s[i] = mi, vi, si
        vdots.append(out[3])
        norms.append(out[4])
    order = np.argsort(np.concatenate(runs), kind="stable").astype(np.int32)
    numerator, estim_lr, d_denom, d_hat = _estimate(vdots, norms, order, state.estim_lr, dlr,
                                                    state.numerator_weighted, numbers, beta3)
    new_params = list(params)
    for run in runs:
        for i, p in zip(run, _APPLY[donate_params]([params[i] for i in run], [m[i] for i in run],
                                                   [v[i] for i in run], dlr, estim_lr, numbers,
                                                   decouple=flags["decouple"])):
            new_params[i] = p
    new_state = ProdigyState(exp_avg=m, exp_avg_sq=v, grad_sum=s, params0=list(state.params0), estim_lr=estim_lr,
                             numerator_weighted=numerator, count=count)
    return new_params, new_state, d_denom, d_hat
