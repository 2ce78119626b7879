"""Quasi-Newton optimizers as chains of transforms, with optax's names, arguments and defaults."""

from __future__ import annotations

from typing import Any

from gradtx._base import GradientTransformation, ScalarOrSchedule, chain, identity
from gradtx._transforms.lbfgs import scale_by_lbfgs
from gradtx._transforms.linesearch import scale_by_zoom_linesearch
from gradtx._transforms.scaling import scale, scale_by_learning_rate

__all__ = ["lbfgs"]


def lbfgs(learning_rate: ScalarOrSchedule | None = None, memory_size: int = 10, scale_init_precond: bool = True,
          linesearch: Any = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one"),
          ) -> GradientTransformation:
    r"""L-BFGS with a line search (Liu & Nocedal, 1989), as ``optax.lbfgs``.

    ``chain(scale_by_lbfgs(memory_size, scale_init_precond), -learning_rate (or -1), linesearch)``:
    the direction :math:`-P_k g_k` (see :func:`gradtx.scale_by_lbfgs`) scaled by the step
    size the line search finds. The default search is
    :func:`gradtx.scale_by_zoom_linesearch` starting each search from 1; ``linesearch=None``
    takes plain steps of ``learning_rate``.

    With a line search, ``update`` takes optax's extra arguments::

        value, grad = jax.value_and_grad(f)(params)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
        params = gradtx.apply_updates(params, updates)

    Args:
      learning_rate: a global scale (float, array or schedule); None leaves the step to the line search.
      memory_size: the number of past pairs kept.
      scale_init_precond: scale the initial inverse-Hessian approximation by :math:`s^\top y / y^\top y`.
      linesearch: a line-search transform (or None).
    """
    return chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate),
        identity() if linesearch is None else linesearch,
    )
