"""torch.optim.LBFGS and SparseAdam: builders over gradtx's functional pieces, and their facade classes.

SparseAdam is a chain like every other optimizer. LBFGS is not a chain: its
``step(closure)`` evaluates the objective several times, so its builder is a
*driver*, ``init(flat_params) -> state`` and ``step(value_and_grad_fn,
flat_params, state) -> (flat_params, state, loss)``, over
:func:`gradtx.lbfgs_torch_step`; the :class:`LBFGS` class flattens the
parameters as torch does and differentiates the closure with JAX.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import (
    GradientTransformation, LBFGSTorchState, chain, check_range, lbfgs_torch_init, lbfgs_torch_step, negate_if,
    scale_by_learning_rate, scale_by_sparse_adam,
)
from gradtx.tree import all_finite
from gradtx.optim._grads import is_closure
from gradtx.optim._declare import check_torch_ranges
from gradtx.optim._optimizer import Optimizer

__all__ = ["LBFGS", "SparseAdam"]


def sparse_adam_chain(lr: Any = 1e-3, betas: Any = (0.9, 0.999), eps: Any = 1e-8,
                      maximize: bool = False) -> GradientTransformation:
    """torch.optim.SparseAdam's step for one parameter group, as a chain.

    ``maximize -> scale_by_sparse_adam(b1, b2, eps) -> -lr``. State names:
    ``exp_avg`` is the sparse-Adam state's ``mu``, ``exp_avg_sq`` its ``nu``, ``step`` its ``count``.
    Gradients may be dense (rows of zeros are absent) or BCOO (see :func:`gradtx.scale_by_sparse_adam`);
    BCOO gradients need the chain called without ``params`` and ``maximize=False``, because the
    chain's structure check and ``maximize`` see a BCOO's indices as leaves.
    """
    b1, b2 = betas
    return chain(
        negate_if(maximize),
        scale_by_sparse_adam(b1, b2, eps),
        scale_by_learning_rate(lr),
    )


class LBFGSDriver(NamedTuple):
    """torch.optim.LBFGS for one parameter group: ``init`` and ``step`` over a flat parameter vector."""

    init: Callable[[jax.Array], LBFGSTorchState]
    step: Callable[[Callable, jax.Array, LBFGSTorchState], tuple[jax.Array, LBFGSTorchState, jax.Array]]


def lbfgs_driver(lr: Any = 1, max_iter: Any = 20, max_eval: Any = None, tolerance_grad: Any = 1e-7,
                 tolerance_change: Any = 1e-9, history_size: int = 100, line_search_fn: str | None = None,
                 *, maximize: bool = False) -> LBFGSDriver:
    """torch.optim.LBFGS's keyword names and defaults -> an :class:`LBFGSDriver`.

    ``step(value_and_grad_fn, flat_params, state)`` is one ``LBFGS.step(closure)``
    (see :func:`gradtx.lbfgs_torch_step`); it returns the loss at the incoming
    parameters, as torch's ``step`` does. ``history_size``, ``line_search_fn`` and
    ``maximize`` are static; the rest may be traced arrays.
    """
    check_range("lr", lr, 0.0, where="LBFGS")
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    options = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                   tolerance_change=tolerance_change, line_search_fn=line_search_fn, maximize=maximize)

    def init(params):
        return lbfgs_torch_init(params, history_size)

    def step(value_and_grad_fn, params, state):
        return lbfgs_torch_step(value_and_grad_fn, params, state, **options)

    return LBFGSDriver(init, step)


# ----------------------------------------------------------------------------- facade classes


class SparseAdam(Optimizer):
    r"""torch.optim.SparseAdam: Adam whose moments and parameters change only where the gradient has entries.

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m), \quad v \leftarrow v + (1-\beta_2)(g^2 - v), \quad
        \theta \leftarrow \theta - \gamma \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m}{\sqrt v + \epsilon}

    on the present rows only (Kingma & Ba, 2015, https://arxiv.org/abs/1412.6980, as torch 2.13
    restricts it); the step is :func:`sparse_adam_chain`. torch takes sparse gradients
    (``nn.Embedding(sparse=True)``); JAX's gradients are dense, so here a row (a slice along the
    first axis) whose gradient is entirely zero is absent. Parameters equal torch's whenever torch's
    sparse gradient stores exactly the non-zero rows. ``opt.state[p]`` holds ``step``, ``exp_avg``
    and ``exp_avg_sq``.

    Args:
      params: parameters or param groups (see :class:`gradtx.optim.Optimizer`).
      lr: learning rate :math:`\gamma` (default 1e-3).
      betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
      eps: :math:`\epsilon` (default 1e-8).
      maximize: maximize the objective instead of minimizing it.
    """

    chain_builder = staticmethod(sparse_adam_chain)
    chain_options = ("lr", "betas", "eps", "maximize")
    state_names = {"exp_avg": "mu", "exp_avg_sq": "nu"}
    complex_as_real = False

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[Any, Any] = (0.9, 0.999), eps: float = 1e-8,
                 maximize: bool = False) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "maximize": maximize})
        complex_params = [[i, j] for i, group in enumerate(self.param_groups)
                          for j, p in enumerate(group["params"]) if jnp.iscomplexobj(p.data)]
        if complex_params:
            raise ValueError(f"Complex params at indices {complex_params}: SparseAdam does not support complex "
                             "parameters")

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        check_torch_ranges(group, ("lr", "(0, inf)"), ("eps", "(0, inf)"), "betas")


_LBFGS_ARRAYS = ("d", "t", "H_diag", "prev_flat_grad", "prev_loss")
_LBFGS_HISTORY = ("old_dirs", "old_stps", "ro")


class LBFGS(Optimizer):
    r"""torch.optim.LBFGS: up to ``max_iter`` L-BFGS iterations per ``step(closure)``, one compiled program.

    .. math::
        d = -H g \ (\text{two-loop recursion over the last } m \text{ pairs}), \qquad
        \theta \leftarrow \theta + t d,

    with torch's first step :math:`t = \min(1, 1/\|g\|_1)\,\gamma`, curvature test
    :math:`y^\top s > 10^{-10}`, stopping tests and optional strong-Wolfe search
    (Nocedal & Wright, 1999; torch's port of minFunc): the parameters after each step equal
    torch 2.13's (see :func:`gradtx.lbfgs_torch_step`, which runs the whole step in one
    ``jax.lax.while_loop``). All parameters are flattened into one vector in ``param_groups``
    order (complex ones as real pairs), as torch does. ``maximize=True`` (torch 2.14) ascends:
    it runs the minimisation of the negated objective step for step, and ``step`` returns
    the closure's own value. ``opt.state`` holds torch's entries
    under the first parameter: ``func_evals``, ``n_iter``, ``d``, ``t``, ``old_dirs``,
    ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss`` (torch's scratch list
    ``al`` is not kept).

    ``step(closure)`` needs a closure of the parameters, ``closure(params) -> loss``,
    which JAX differentiates at every trial point; the step is compiled once per closure
    object, so pass the same function each step (a closure without arguments cannot be
    traced and is refused). ``p.grad`` is not set.

    Args:
      params: parameters (one group only, as torch).
      lr: learning rate :math:`\gamma` (default 1).
      max_iter: iterations per step (default 20).
      max_eval: evaluations per step (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when :math:`\max|g| \le` this (default 1e-7).
      tolerance_change: stop when the loss or the parameters change by less (default 1e-9).
      history_size: the number of pairs kept (default 100).
      line_search_fn: None or ``"strong_wolfe"``.
      maximize: maximize the objective instead of minimizing it (keyword only; default False).
    """

    chain_builder = None  # steps itself (its own _step)
    step_name = None
    static_options = ("history_size", "max_iter", "max_eval")

    def __init__(self, params: Any, lr: Any = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None, *, maximize: bool = False) -> None:
        check_torch_ranges({"lr": lr}, "lr")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval, "tolerance_grad": tolerance_grad,
                    "tolerance_change": tolerance_change, "history_size": history_size,
                    "line_search_fn": line_search_fn, "maximize": maximize}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise RuntimeError("only 'strong_wolfe' is supported")

    def _step(self, grads: Any = None, closure: Callable | None = None) -> Any:
        if closure is None and is_closure(grads):
            grads, closure = None, grads
        if closure is None or grads is not None:
            raise TypeError("LBFGS.step() takes a closure, step(closure), with closure(params) -> loss")
        if not _takes_params(closure):
            raise TypeError("LBFGS evaluates the closure at trial points inside one compiled step, so it needs a "
                            "closure of the parameters: opt.step(lambda params: loss_fn(params)), not closure()")
        group = self.param_groups[0]
        boxes = group["params"]
        shapes = [(p.shape, p.dtype) for p in boxes]
        flat = jnp.concatenate([_real_view(p.data) for p in boxes])
        state = self._lbfgs_state(flat, group["history_size"])
        program = self._program(closure, shapes, group)
        options = {k: jnp.asarray(group[k]) for k in ("lr", "tolerance_grad", "tolerance_change")}
        new_flat, new_state, loss = program(flat, state, options)
        if self.skip_nonfinite and not bool(all_finite([new_flat, loss])):  # a NaN/inf on the way: keep the old
            self.skipped_steps += 1
            return loss
        flat, state = new_flat, new_state
        for p, value in zip(boxes, _unflatten(flat, shapes)):
            p.data = value
        self._store_lbfgs_state(state, boxes[0])
        return loss

    def _program(self, closure: Callable, shapes: list, group: dict) -> Callable:
        maximize = bool(group.get("maximize", False))  # absent from torch 2.13's state_dicts
        key = (closure, tuple(shapes), group["history_size"], group["max_iter"], group["max_eval"],
               group["line_search_fn"], maximize)
        cached = self.__dict__.get("_lbfgs_program")
        if cached is not None and cached[0] == key:
            return cached[1]
        value_and_grad = self._value_and_grad(closure)

        def flat_value_and_grad(x):
            loss, grads = value_and_grad(_unflatten(x, shapes))
            # JAX's gradient of a real loss in a complex z is conj(dL/dz*); torch's is its conjugate.
            return loss, jnp.concatenate([_real_view(jnp.conj(g)) for g in grads])

        @jax.jit
        def program(flat, state, options):
            return lbfgs_torch_step(flat_value_and_grad, flat, state, max_iter=group["max_iter"],
                                    max_eval=group["max_eval"], line_search_fn=group["line_search_fn"],
                                    maximize=maximize, **options)

        self._lbfgs_program = (key, program)
        return program

    def check_loaded_state(self, p: Any, entry: dict[str, Any], where: str) -> None:
        """torch's LBFGS entries, checked before loading: counts, the flat vectors' sizes, the history lists."""
        if not entry:
            return
        if p is not self.param_groups[0]["params"][0]:
            raise ValueError(f"{where}: LBFGS keeps its state under the first parameter only")
        size = sum(q.size * (2 if jnp.issubdtype(q.dtype, jnp.complexfloating) else 1)
                   for q in self.param_groups[0]["params"])
        for key in ("func_evals", "n_iter"):
            value = np.asarray(entry.get(key, 0))
            if (value.size != 1 or not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all()
                    or not 0 <= value.reshape(()) < 2**31 or value.reshape(()) != np.floor(value.reshape(()))):
                raise ValueError(f"{where}: '{key}' must be a whole number in [0, 2**31), got {entry.get(key)!r}")
        if "d" not in entry:
            return
        for key in _LBFGS_ARRAYS:
            if key not in entry:
                raise ValueError(f"{where}: LBFGS state with 'd' also needs {key!r}")
            value = np.asarray(entry[key])
            want = size if key in ("d", "prev_flat_grad") else 1
            if not np.issubdtype(value.dtype, np.number) or value.size != want:
                raise ValueError(f"{where}: '{key}' must hold {want} number(s), got shape {value.shape}")
        lengths = set()
        for key in _LBFGS_HISTORY:
            items = entry.get(key, [])
            if not isinstance(items, (list, tuple)):
                raise TypeError(f"{where}: '{key}' must be a list, got {type(items).__name__}")
            want = 1 if key == "ro" else size
            for item in items:
                value = np.asarray(item)
                if not np.issubdtype(value.dtype, np.number) or value.size != want:
                    raise ValueError(f"{where}: each entry of '{key}' must hold {want} number(s), got shape "
                                     f"{value.shape}")
            lengths.add(len(items))
        if len(lengths) > 1:
            raise ValueError(f"{where}: 'old_dirs', 'old_stps' and 'ro' must have the same length")

    def _lbfgs_state(self, flat: jax.Array, history_size: int) -> LBFGSTorchState:
        """torch's state entries (ours or a loaded torch state dict) as the driver's ring buffers."""
        saved = self.state.get(self.param_groups[0]["params"][0], {})
        state = lbfgs_torch_init(flat, history_size)
        counts = {k: jnp.asarray(int(saved.get(k, 0)), jnp.int32) for k in ("n_iter", "func_evals")}
        if "d" not in saved:
            return state._replace(**counts)
        dtype = flat.dtype
        arrays = {k: jnp.asarray(np.asarray(saved[k]), dtype).reshape(getattr(state, k).shape) for k in _LBFGS_ARRAYS}
        history = [list(saved[k])[-history_size:] for k in _LBFGS_HISTORY]
        size = len(history[0])
        buffers = {k: (getattr(state, k).at[:size].set(jnp.asarray(np.stack([np.asarray(v) for v in h]), dtype))
                       if size else getattr(state, k)) for k, h in zip(_LBFGS_HISTORY, history)}
        return state._replace(**counts, **arrays, **buffers, history_count=jnp.asarray(size, jnp.int32))

    def _store_lbfgs_state(self, state: LBFGSTorchState, first: Any) -> None:
        history_size = state.ro.shape[0]
        count = int(state.history_count)
        size = min(count, history_size)
        slots = [(count - size + i) % history_size for i in range(size)]
        entry = {"func_evals": int(state.func_evals), "n_iter": int(state.n_iter)}
        if int(state.n_iter) > 0:
            entry.update({k: getattr(state, k) for k in ("d", "t")})
            entry.update({k: [getattr(state, k)[i] for i in slots] for k in _LBFGS_HISTORY})
            entry.update({k: getattr(state, k) for k in ("H_diag", "prev_flat_grad", "prev_loss")})
        self.state[first] = entry


def _takes_params(closure: Callable) -> bool:
    try:
        return bool(inspect.signature(closure).parameters)
    except (TypeError, ValueError):  # builtins and some compiled callables: assume they take the params
        return True


def _real_view(x: Any) -> jax.Array:
    """A parameter as a flat real vector, complex entries as (real, imaginary) pairs (torch's view_as_real)."""
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        return jnp.stack([x.real, x.imag], axis=-1).reshape(-1)
    return x.reshape(-1)


def _unflatten(flat: jax.Array, shapes: list) -> list:
    out, offset = [], 0
    for shape, dtype in shapes:
        size = int(np.prod(shape, dtype=int)) * (2 if jnp.issubdtype(dtype, jnp.complexfloating) else 1)
        piece = flat[offset:offset + size]
        offset += size
        if jnp.issubdtype(dtype, jnp.complexfloating):
            piece = piece.reshape(-1, 2)
            piece = jax.lax.complex(piece[:, 0], piece[:, 1])
        out.append(piece.reshape(shape).astype(dtype))
    return out
