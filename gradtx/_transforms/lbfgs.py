r"""L-BFGS: optax's ``scale_by_lbfgs`` transform and torch.optim.LBFGS's whole step as a functional driver.

Both compute the L-BFGS direction with the same two-loop recursion
(:func:`lbfgs_two_loop`, Nocedal & Wright, Algorithm 7.4) over a ring buffer of
the last ``m`` pairs :math:`s_k = w_{k+1} - w_k`, :math:`y_k = g_{k+1} - g_k`.
They differ in the rest: optax's transform computes one direction per ``update``
and leaves the step size to a line search chained after it; torch's ``step``
runs up to ``max_iter`` iterations, each evaluating the objective, with its own
first-step rule, curvature test (:math:`y^\top s > 10^{-10}`), stopping tests and
optional strong-Wolfe search (:func:`gradtx.strong_wolfe_search`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformation
from gradtx._transforms.linesearch import add_scale, real_vdot, strong_wolfe_search

__all__ = [
    "ScaleByLBFGSState",
    "LBFGSTorchState",
    "lbfgs_two_loop",
    "scale_by_lbfgs",
    "lbfgs_torch_init",
    "lbfgs_torch_step",
]


def lbfgs_two_loop(vector: Any, s_memory: Any, y_memory: Any, rho: jax.Array, gamma: Any,
                   order: jax.Array) -> Any:
    r"""Multiplies ``vector`` by the L-BFGS inverse-Hessian approximation (two-loop recursion).

    .. math::
        H = V_{k-1}^\top \cdots V_{k-m}^\top (\gamma I) V_{k-m} \cdots V_{k-1}
            + \textstyle\sum_j \rho_j\, (\ldots)\, s_j s_j^\top (\ldots), \qquad
        V_j = I - \rho_j y_j s_j^\top,\ \rho_j = 1 / y_j^\top s_j

    (Algorithm 7.4 of Nocedal & Wright, *Numerical Optimization*, 1999).

    Args:
      vector: a pytree (a flat vector is one) to precondition.
      s_memory, y_memory: pytrees like ``vector`` with a leading memory axis of size ``m``.
      rho: shape ``(m,)``; a slot with ``rho == 0`` (and zero or finite vectors) leaves the result
        exactly unchanged, so unused slots need no masking.
      gamma: the scale of the initial approximation :math:`\gamma I`.
      order: shape ``(m,)``, the slots from the oldest pair to the newest.
    """
    dtype = rho.dtype
    pick = lambda memory, i: gt.tree_map(lambda x: x[i], memory)  # noqa: E731

    def newest_first(v, i):
        alpha = rho[i] * real_vdot(pick(s_memory, i), v, dtype)
        return add_scale(v, -alpha, pick(y_memory, i)), alpha

    vector, alphas = jax.lax.scan(newest_first, vector, order, reverse=True)
    vector = gt.tree_scale(gamma, vector)

    def oldest_first(v, i_alpha):
        i, alpha = i_alpha
        beta = rho[i] * real_vdot(pick(y_memory, i), v, dtype)
        return add_scale(v, alpha - beta, pick(s_memory, i)), None

    vector, _ = jax.lax.scan(oldest_first, vector, (order, alphas))
    return vector


def _ring_order(next_slot: jax.Array, memory_size: int) -> jax.Array:
    """Slots from the oldest pair to the newest when ``next_slot`` is the one written next."""
    return (next_slot + jnp.arange(memory_size)) % memory_size


# ----------------------------------------------------------------------------- optax's transform


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs` (field names as ``optax.ScaleByLBFGSState``)."""

    count: jax.Array  # shape=(), int32: updates so far
    params: Any  # like params: the params of the previous update
    updates: Any  # like params: the incoming updates (gradients) of the previous update
    diff_params_memory: Any  # like params with a leading (memory_size,) axis: s_k, a ring buffer
    diff_updates_memory: Any  # like params with a leading (memory_size,) axis: y_k, a ring buffer
    weights_memory: jax.Array  # shape=(memory_size,), real dtype of params: rho_k = 1 / y_k^T s_k


def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True) -> GradientTransformation:
    r"""Preconditions the updates by L-BFGS's inverse-Hessian approximation (``optax.scale_by_lbfgs``).

    Each update first stores :math:`s = w_k - w_{k-1}`, :math:`y = u_k - u_{k-1}` and
    :math:`\rho = 1/(y^\top s)` (0 when :math:`y^\top s = 0`), then returns
    :math:`P_k u_k` by :func:`lbfgs_two_loop` with

    .. math::
        \gamma_k = \begin{cases} \min(1, 1/\|u_0\|) & k = 0 \\
        s^\top y / y^\top y & k > 0,\ \texttt{scale\_init\_precond} \\ 1 & \text{otherwise.} \end{cases}

    The output is a *preconditioned gradient* (an ascent direction): chain it with
    ``scale(-1)`` or a learning rate and a line search, as :func:`gradtx.lbfgs` does.
    References: Nocedal & Wright, Algorithms 7.4 and 7.5; Liu & Nocedal, 1989
    (https://doi.org/10.1007/BF01589116).

    Args:
      memory_size: the number of pairs kept (static; it shapes the state).
      scale_init_precond: scale the initial approximation by :math:`\gamma_k` as above.
    """
    if memory_size < 1:
        raise ValueError(f"scale_by_lbfgs: memory_size must be >= 1, got {memory_size}")

    def init(params):
        def stacked():  # a memory of its own for each (a step donates each)
            return gt.tree_map(lambda x: jnp.zeros((memory_size,) + jnp.shape(x), jnp.asarray(x).dtype), params)

        dtype = gt.real_dtype(jax.tree.leaves(params)[0])
        return ScaleByLBFGSState(count=gt.zero_count(), params=gt.tree_zeros_like(params),
                                 updates=gt.tree_zeros_like(params), diff_params_memory=stacked(),
                                 diff_updates_memory=stacked(), weights_memory=jnp.zeros([memory_size], dtype))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_lbfgs needs the current parameters: call `update(updates, state, params)`.")
        dtype = state.weights_memory.dtype
        started = state.count > 0
        diff_params = gt.tree_map(lambda p, q: jnp.where(started, p - q, 0).astype(q.dtype), params, state.params)
        diff_updates = gt.tree_map(lambda u, v: jnp.where(started, u - v, 0).astype(v.dtype), updates, state.updates)
        curvature = real_vdot(diff_updates, diff_params, dtype)
        weight = jnp.where(started & (curvature != 0.0), 1.0 / curvature, 0.0).astype(dtype)
        slot = (state.count - 1) % memory_size
        write = lambda memory, new: gt.tree_map(lambda m, x: m.at[slot].set(x), memory, new)  # noqa: E731
        s_memory = write(state.diff_params_memory, diff_params)
        y_memory = write(state.diff_updates_memory, diff_updates)
        weights = state.weights_memory.at[slot].set(weight)

        if scale_init_precond:
            y_norm_sq = gt.tree_sum_of_squares(diff_updates).astype(dtype)
            gamma = jnp.where(y_norm_sq > 0.0, curvature / y_norm_sq, 1.0)
            # First step: no pairs yet, so keep the first move within a ball of radius 1.
            first = jnp.minimum(1.0, 1.0 / gt.tree_global_norm(jax.lax.stop_gradient(updates)).astype(dtype))
            gamma = jnp.where(started, gamma, first).astype(dtype)
        else:
            gamma = jnp.ones([], dtype)

        order = _ring_order(state.count % memory_size, memory_size)
        directions = lbfgs_two_loop(updates, s_memory, y_memory, weights, gamma, order)
        return directions, ScaleByLBFGSState(count=gt.safe_increment(state.count), params=params, updates=updates,
                                             diff_params_memory=s_memory, diff_updates_memory=y_memory,
                                             weights_memory=weights)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- torch's LBFGS.step


class LBFGSTorchState(NamedTuple):
    """State of :func:`lbfgs_torch_step`, with torch.optim.LBFGS's state names.

    torch keeps ``old_dirs``/``old_stps``/``ro`` as lists of at most
    ``history_size`` entries, oldest first; here they are ring buffers of that
    capacity and ``history_count`` says where they stand: torch's entry ``i`` is
    slot ``(history_count - len + i) % history_size`` with
    ``len = min(history_count, history_size)``.
    """

    d: jax.Array  # (n,): the last search direction
    t: jax.Array  # (): the last step length
    old_dirs: jax.Array  # (history_size, n): gradient differences y
    old_stps: jax.Array  # (history_size, n): steps s = t * d
    ro: jax.Array  # (history_size,): 1 / (y^T s); 0 in unused slots
    H_diag: jax.Array  # (): scale of the initial inverse Hessian, y^T s / y^T y of the newest pair
    prev_flat_grad: jax.Array  # (n,): the gradient at the start of the last iteration
    prev_loss: jax.Array  # (): the loss at the start of the last iteration
    n_iter: jax.Array  # (), int32: inner iterations over all steps
    func_evals: jax.Array  # (), int32: objective evaluations over all steps
    history_count: jax.Array  # (), int32: pairs stored so far (not in torch's state)


def lbfgs_torch_init(params: jax.Array, history_size: int = 100) -> LBFGSTorchState:
    """A fresh :class:`LBFGSTorchState` for a flat parameter vector ``params``."""
    params = jnp.asarray(params)
    if params.ndim != 1:
        raise ValueError(f"lbfgs_torch_init: params must be a flat vector, got shape {params.shape}; flatten a "
                         "pytree with jax.flatten_util.ravel_pytree (torch flattens its parameters the same way).")
    if history_size < 1:
        raise ValueError(f"lbfgs_torch_init: history_size must be >= 1, got {history_size}")
    n, dtype = params.shape[0], params.dtype
    zero_vector, zero, count = jnp.zeros([n], dtype), jnp.zeros([], dtype), gt.zero_count()
    return LBFGSTorchState(d=zero_vector, t=zero, old_dirs=jnp.zeros([history_size, n], dtype),
                           old_stps=jnp.zeros([history_size, n], dtype), ro=jnp.zeros([history_size], dtype),
                           H_diag=jnp.ones([], dtype), prev_flat_grad=zero_vector, prev_loss=zero, n_iter=count,
                           func_evals=count, history_count=count)


class _Iterate(NamedTuple):
    x: jax.Array
    loss: jax.Array
    grad: jax.Array
    state: LBFGSTorchState
    n: jax.Array  # iterations in this step
    evals: jax.Array  # evaluations in this step
    optimal: jax.Array  # max |grad| <= tolerance_grad
    stop: jax.Array


def _torch_direction(state: LBFGSTorchState, grad: jax.Array) -> LBFGSTorchState:
    """Stores the newest pair if it has enough curvature, then sets ``d = -H grad``."""
    history_size = state.ro.shape[0]
    y = grad - state.prev_flat_grad
    s = state.d * state.t
    ys = jnp.dot(y, s)
    store = ys > 1e-10
    slot = state.history_count % history_size
    old_dirs = state.old_dirs.at[slot].set(jnp.where(store, y, state.old_dirs[slot]))
    old_stps = state.old_stps.at[slot].set(jnp.where(store, s, state.old_stps[slot]))
    ro = state.ro.at[slot].set(jnp.where(store, 1.0 / ys, state.ro[slot]))
    count = state.history_count + store.astype(jnp.int32)
    h_diag = jnp.where(store, ys / jnp.dot(y, y), state.H_diag).astype(state.H_diag.dtype)
    d = lbfgs_two_loop(-grad, old_stps, old_dirs, ro, h_diag, _ring_order(count % history_size, history_size))
    return state._replace(d=d, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag, history_count=count)


def lbfgs_torch_step(value_and_grad_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]], params: jax.Array,
                     state: LBFGSTorchState, *, lr: Any = 1.0, max_iter: Any = 20, max_eval: Any = None,
                     tolerance_grad: Any = 1e-7, tolerance_change: Any = 1e-9, line_search_fn: str | None = None,
                     maximize: bool = False) -> tuple[jax.Array, LBFGSTorchState, jax.Array]:
    r"""One ``torch.optim.LBFGS.step(closure)`` on a flat parameter vector, as one ``jax.lax.while_loop``.

    Evaluates ``value_and_grad_fn`` at ``params``; unless :math:`\max|g| \le` ``tolerance_grad``,
    runs up to ``max_iter`` iterations of

    .. math::
        d = -H g \ \text{(two-loop recursion, first iteration ever: } d = -g), \qquad
        t = \begin{cases} \min(1, 1/\|g\|_1)\,\text{lr} & \text{first iteration ever} \\ \text{lr} \end{cases},
        \qquad x \leftarrow x + t d,

    where a new pair :math:`(y, s)` enters the history only if :math:`y^\top s > 10^{-10}`,
    and :math:`H_0 = (y^\top s / y^\top y) I` for the newest stored pair. With
    ``line_search_fn="strong_wolfe"`` the step length comes from
    :func:`gradtx.strong_wolfe_search`; without, ``x + t d`` is re-evaluated except
    after the last iteration. The step stops, as torch's does, when
    :math:`g^\top d > -\text{tolerance\_change}`, after ``max_iter`` iterations or
    ``max_eval`` evaluations, when :math:`\max|g| \le` ``tolerance_grad``, when
    :math:`\max|t d| \le` ``tolerance_change`` or when the loss changes by less than
    ``tolerance_change``. Follows torch/optim/lbfgs.py (after minFunc), with the same
    state (:class:`LBFGSTorchState`), so that parameters after every step equal torch's.

    Everything is traced: wrap it in ``jax.jit`` for one compiled program per step, e.g.
    ``jax.jit(lambda x, s: lbfgs_torch_step(vg, x, s, line_search_fn="strong_wolfe"))``;
    ``lr``, the tolerances, ``max_iter`` and ``max_eval`` may be traced arrays.

    Args:
      value_and_grad_fn: ``x -> (loss, grad)`` on flat vectors, e.g. ``jax.value_and_grad(f)``;
        torch's closure. For a pytree of parameters flatten with ``jax.flatten_util.ravel_pytree``.
      params: the flat parameter vector.
      state: from :func:`lbfgs_torch_init` or the previous step.
      lr: the step length (scaling the first one, and the line search's first trial).
      max_iter: iterations per step.
      max_eval: evaluations per step; defaults to ``max_iter * 5 // 4``.
      tolerance_grad: stop when the largest gradient entry is at most this.
      tolerance_change: stop when the loss or the parameters change by less than this.
      line_search_fn: None or ``"strong_wolfe"``.
      maximize: ascend: every evaluation's value and gradient enter negated, so the step is the
        minimising step of ``-f`` (the state, ``prev_loss`` included, is that run's), and the
        returned loss is ``f``'s own, as torch's ``LBFGS(maximize=True)`` (pytorch/pytorch#191674).

    Returns:
      ``(params, state, loss)`` with ``loss`` the value at the *incoming* params (torch returns it).
    """
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(f"lbfgs_torch_step: line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    params = jnp.asarray(params)
    dtype = params.dtype

    sign = -1 if maximize else 1

    def evaluate(x):
        loss, grad = value_and_grad_fn(x)
        return sign * jnp.asarray(loss).astype(dtype), sign * jnp.asarray(grad).astype(dtype)

    def is_optimal(grad):
        return jnp.max(jnp.abs(grad)) <= tolerance_grad

    def iterate(it: _Iterate) -> _Iterate:
        n = it.n + 1
        state = it.state._replace(n_iter=gt.safe_increment(it.state.n_iter))
        first = state.n_iter == 1
        state = jax.lax.cond(
            first,
            lambda s: s._replace(d=-it.grad, H_diag=jnp.ones_like(s.H_diag), ro=jnp.zeros_like(s.ro),
                                 history_count=jnp.zeros_like(s.history_count)),
            lambda s: _torch_direction(s, it.grad), state)
        t = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(it.grad))) * lr, lr).astype(dtype)
        state = state._replace(t=t, prev_flat_grad=it.grad, prev_loss=it.loss)
        d = state.d
        gtd = jnp.dot(it.grad, d)

        def move(it: _Iterate) -> _Iterate:
            if line_search_fn == "strong_wolfe":
                loss, grad, step, ls_evals = strong_wolfe_search(evaluate, it.x, t, d, it.loss, it.grad, gtd,
                                                                 max_ls=max_eval - it.evals)
                x = it.x + step * d
                optimal = is_optimal(grad)
            else:
                step, x = t, it.x + t * d
                # torch does not re-evaluate after the last iteration of a step.
                def reevaluate(x):
                    loss, grad = evaluate(x)
                    return loss, grad, is_optimal(grad), jnp.ones([], jnp.int32)

                loss, grad, optimal, ls_evals = jax.lax.cond(
                    n != max_iter, reevaluate, lambda x: (it.loss, it.grad, it.optimal, jnp.zeros([], jnp.int32)), x)
            evals = it.evals + ls_evals
            new_state = state._replace(t=step.astype(dtype), func_evals=state.func_evals + ls_evals)
            stop = ((n == max_iter) | (evals >= max_eval) | optimal
                    | (jnp.max(jnp.abs(d * step)) <= tolerance_change) | (jnp.abs(loss - it.loss) < tolerance_change))
            return _Iterate(x, loss, grad, new_state, n, evals, optimal, stop)

        it = it._replace(state=state, n=n)
        # No descent along d: torch stops before moving.
        return jax.lax.cond(gtd > -tolerance_change, lambda it: it._replace(stop=jnp.asarray(True)), move, it)

    loss, grad = evaluate(params)
    optimal = is_optimal(grad)
    start = _Iterate(x=params, loss=loss, grad=grad, state=state._replace(func_evals=state.func_evals + 1),
                     n=jnp.zeros([], jnp.int32), evals=jnp.ones([], jnp.int32), optimal=optimal, stop=optimal)
    end = jax.lax.while_loop(lambda it: ~it.stop & (it.n < max_iter), iterate, start)
    return end.x, end.state, sign * loss
