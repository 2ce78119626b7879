"""Momentum: the heavy-ball trace, with torch's dampening and first-step variants."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._checks import check_range
from gradtx._hyper import value_at
from gradtx._base import GradientTransformation


__all__ = ["TraceState", "trace"]

class TraceState(NamedTuple):
    """State of :func:`trace`."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far
    trace: Any  # like params (in accumulator_dtype): the momentum buffer


def trace(decay: Any, nesterov: bool = False, accumulator_dtype: Any = None, *,
          dampening: Any = 0.0, torch_init: bool = False) -> GradientTransformation:
    r"""Heavy-ball momentum (Polyak, 1964), optionally with Nesterov's look-ahead (Sutskever et al., 2013).

    .. math::
        b_t = \mu\, b_{t-1} + (1 - \tau)\, g_t, \qquad
        u_t = \begin{cases} g_t + \mu\, b_t & \text{nesterov} \\ b_t & \text{otherwise} \end{cases}

    With ``dampening=0`` and ``torch_init=False`` this is ``optax.trace``. torch.optim.SGD
    instead sets ``b_1 = g_1`` on the first step (no dampening then): pass
    ``torch_init=True`` for that.

    Args:
      decay: the momentum coefficient :math:`\mu` (a float, an array or a schedule).
      nesterov: whether to use Nesterov momentum.
      accumulator_dtype: dtype of the buffer; ``None`` keeps the parameters'.
      dampening: :math:`\tau`, torch's dampening.
      torch_init: initialise the buffer with the first gradient, as torch does.
    """
    check_range("momentum", decay, 0.0, where="trace")
    check_range("dampening", dampening, where="trace")

    def init(params):
        return TraceState(count=gt.zero_count(), trace=gt.tree_zeros_like(params, accumulator_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        mu, tau = value_at(decay, state.count), value_at(dampening, state.count)

        def new_buffer(g, b):
            moved = mu * b + (1 - tau) * g
            if torch_init:
                moved = jnp.where(state.count == 0, g, moved)
            return moved

        # The step uses the buffer at full precision; only the stored copy is cast to accumulator_dtype (as optax).
        moved = gt.tree_map(new_buffer, updates, state.trace, names=("the gradients", gt.STATE_ROLE))
        if nesterov:
            out = gt.tree_map(lambda g, b: (g + mu * b).astype(g.dtype), updates, moved)
        else:
            out = gt.tree_map(lambda g, b: b.astype(g.dtype), updates, moved)
        buffers = gt.tree_cast_like(moved, state.trace)
        return out, TraceState(count=gt.safe_increment(state.count), trace=buffers)

    return GradientTransformation(init, update)
