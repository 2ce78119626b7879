"""Lookahead: a slow copy of the weights that follows a fast optimizer every few steps."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformationExtraArgs, with_extra_args_support

__all__ = ["LookaheadParams", "LookaheadState", "lookahead"]


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`."""

    fast_state: Any  # the fast optimizer's state
    steps_since_sync: jax.Array  # shape=(), int32: fast steps since the last synchronisation


class LookaheadParams(NamedTuple):
    """The two copies of the parameters :func:`lookahead` updates: ``fast`` and ``slow``."""

    fast: Any  # the weights the fast optimizer steps (the ones to evaluate gradients at)
    slow: Any  # the slow weights (the ones to evaluate the model with)

    @classmethod
    def init_synced(cls, params: Any) -> LookaheadParams:
        """Both copies equal to ``params``."""
        return cls(fast=params, slow=params)


def lookahead(fast_optimizer: Any, sync_period: int, slow_step_size: Any,
              reset_state: bool = False) -> GradientTransformationExtraArgs:
    r"""Lookahead (Zhang et al., 2019, https://arxiv.org/abs/1907.08610), as ``optax.lookahead``.

    The fast weights take ``sync_period`` steps of ``fast_optimizer``; then the
    slow weights move a fraction ``slow_step_size`` of the way towards them and
    the fast weights are reset to the slow ones:

    .. math:: \phi \leftarrow \phi + \alpha (\theta - \phi), \qquad \theta \leftarrow \phi

    ``params`` and the returned updates are :class:`LookaheadParams`
    (``LookaheadParams.init_synced(params)`` to start); take gradients at
    ``params.fast``, and give ``updates`` for the fast weights only.

    Args:
      fast_optimizer: the inner optimizer.
      sync_period: fast steps between synchronisations (>= 1).
      slow_step_size: :math:`\alpha`.
      reset_state: reset the fast optimizer's state at each synchronisation.
    """
    if sync_period < 1:
        raise ValueError(f"lookahead: sync_period must be >= 1, got {sync_period}")
    fast_optimizer = with_extra_args_support(fast_optimizer)

    def init(params):
        # Like optax, plain params (without `.fast`) are taken as the fast weights.
        fast = getattr(params, "fast", params)
        return LookaheadState(fast_state=fast_optimizer.init(fast), steps_since_sync=gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        if params is None or not hasattr(params, "fast"):
            raise ValueError("lookahead needs the LookaheadParams: call update(updates, state, params) with "
                             "params = LookaheadParams(fast=..., slow=...) (LookaheadParams.init_synced(params)).")
        updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast, **extra_args)
        sync = state.steps_since_sync == sync_period - 1
        # fast + update - slow: how far the fast weights got from the slow ones this period.
        gap = jax.tree.map(lambda f, u, s: f + u - s, params.fast, updates, params.slow)
        new = LookaheadParams(
            fast=jax.tree.map(lambda u, d: u - sync * (1 - slow_step_size) * d, updates, gap),
            slow=jax.tree.map(lambda d: slow_step_size * sync * d, gap),
        )
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(lambda cur, ini: jnp.where(sync, ini, cur).astype(jnp.result_type(cur)),
                                      fast_state, fresh)
        return new, LookaheadState(fast_state, (state.steps_since_sync + 1) % sync_period)

    return GradientTransformationExtraArgs(init, update)
