"""Weight decay: coupled L2 (added to the gradient) and decoupled (applied to the step).

Coupled L2 decay adds ``wd * param`` to the gradient *before* an adaptive
transform rescales it (torch's ``weight_decay`` in SGD and Adam). Decoupled
decay (Loshchilov & Hutter, 2019, https://arxiv.org/abs/1711.05101) adds it
*after* the rescaling, so it is not distorted by the preconditioner (AdamW).
Both are :func:`add_decayed_weights`; where it sits in the chain decides
which. :func:`decoupled_weight_decay` is the variant placed after the learning
rate, decaying by ``lr * wd * param`` with the lr supplied separately.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradtx import _tree as gt
from gradtx._hyper import any_schedule, value_at
from gradtx._base import NO_PARAMS_MSG, EmptyState, GradientTransformation, ScalarOrSchedule


__all__ = ["WeightDecayState", "add_decayed_weights", "decoupled_weight_decay"]

class WeightDecayState(NamedTuple):
    """State of a weight decay whose rate is a schedule."""

    count: jax.Array  # shape=(), dtype=int32: steps taken so far


def _weight_decay_state(scheduled: bool) -> Any:
    return WeightDecayState(count=gt.zero_count()) if scheduled else EmptyState()


def _add_decay(updates: Any, state: Any, params: Any, factor: Any, scheduled: bool) -> tuple[Any, Any]:
    """``updates + factor * params``, and the state with its count advanced when the rate is scheduled."""
    if params is None:
        raise ValueError(NO_PARAMS_MSG)
    updates = gt.tree_map(lambda u, p: (u + factor * p).astype(u.dtype), updates, params)
    return updates, WeightDecayState(count=gt.safe_increment(state.count)) if scheduled else state


def _maybe_masked(tx: GradientTransformation, mask: Any) -> GradientTransformation:
    if mask is None:
        return tx
    from gradtx._transforms.wrappers import masked

    return masked(tx, mask)


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0, mask: Any = None) -> GradientTransformation:
    """Adds ``weight_decay * param`` to every update (``optax.add_decayed_weights``).

    Before an adaptive transform this is coupled L2 regularisation (torch's
    ``weight_decay``); after it, decoupled decay (AdamW).

    Args:
      weight_decay: the rate; a float, an array or a schedule.
      mask: a tree of booleans (or a function of the params returning one);
        ``False`` leaves are not decayed.
    """
    _scheduled = any_schedule(weight_decay)

    def init(params):
        del params
        return _weight_decay_state(_scheduled)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        factor = value_at(weight_decay, state.count if _scheduled else None)
        return _add_decay(updates, state, params, factor, _scheduled)

    return _maybe_masked(GradientTransformation(init, update), mask)


def decoupled_weight_decay(weight_decay: ScalarOrSchedule, learning_rate: ScalarOrSchedule = 1.0,
                           mask: Any = None) -> GradientTransformation:
    """Shrinks parameters by ``learning_rate * weight_decay * param``; place it after the lr scaling.

    This is torch's decoupled decay (``param.mul_(1 - lr * weight_decay)`` in
    AdamW, and in NAdam/RAdam with ``decoupled_weight_decay=True``) written as an
    update: it adds ``-lr * wd * param`` to the already lr-scaled step.
    """
    _scheduled = any_schedule(weight_decay, learning_rate)

    def init(params):
        del params
        return _weight_decay_state(_scheduled)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        count = state.count if _scheduled else None
        factor = -value_at(learning_rate, count) * value_at(weight_decay, count)
        return _add_decay(updates, state, params, factor, _scheduled)

    return _maybe_masked(GradientTransformation(init, update), mask)
