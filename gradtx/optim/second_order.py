"""torch.optim.LBFGS and SparseAdam as declarations over gradtx's functional pieces.

SparseAdam is a chain like every other optimizer. LBFGS is not a chain: its
``step(closure)`` evaluates the objective several times, so its declaration is
a *driver*, ``init(flat_params) -> state`` and ``step(value_and_grad_fn,
flat_params, state) -> (flat_params, state, loss)``, over
:func:`gradtx.lbfgs_torch_step`; the facade flattens the parameters as torch
does (``jax.flatten_util.ravel_pytree``) and differentiates the closure with JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gradtx._checks import check_range
from gradtx.base import GradientTransformation, chain, identity
from gradtx.transforms.lbfgs import LBFGSTorchState, lbfgs_torch_init, lbfgs_torch_step
from gradtx.transforms.scaling import maximize as negate, scale_by_learning_rate
from gradtx.transforms.sparse import scale_by_sparse_adam

__all__: list[str] = []


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
        negate() if maximize else identity(),
        scale_by_sparse_adam(b1, b2, eps),
        scale_by_learning_rate(lr),
    )


class LBFGSDriver(NamedTuple):
    """torch.optim.LBFGS for one parameter group: ``init`` and ``step`` over a flat parameter vector."""

    init: Callable[[jax.Array], LBFGSTorchState]
    step: Callable[[Callable, jax.Array, LBFGSTorchState], tuple[jax.Array, LBFGSTorchState, jax.Array]]


def lbfgs_driver(lr: Any = 1, max_iter: Any = 20, max_eval: Any = None, tolerance_grad: Any = 1e-7,
                 tolerance_change: Any = 1e-9, history_size: int = 100, line_search_fn: str | None = None
                 ) -> LBFGSDriver:
    """torch.optim.LBFGS's keyword names and defaults -> an :class:`LBFGSDriver`.

    ``step(value_and_grad_fn, flat_params, state)`` is one ``LBFGS.step(closure)``
    (see :func:`gradtx.lbfgs_torch_step`); it returns the loss at the incoming
    parameters, as torch's ``step`` does. ``history_size`` and ``line_search_fn``
    are static; the rest may be traced arrays.
    """
    check_range("lr", lr, 0.0, where="LBFGS")
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    options = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                   tolerance_change=tolerance_change, line_search_fn=line_search_fn)

    def init(params):
        return lbfgs_torch_init(params, history_size)

    def step(value_and_grad_fn, params, state):
        return lbfgs_torch_step(value_and_grad_fn, params, state, **options)

    return LBFGSDriver(init, step)
