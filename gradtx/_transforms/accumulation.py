"""Accumulating over steps: an exponential moving average, gradient accumulation and its skip rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradtx import _tree as gt
from gradtx._base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support

__all__ = [
    "EmaState", "ema", "ShouldSkipUpdateFunction", "skip_not_finite", "skip_large_updates",
    "MultiStepsState", "MultiSteps", "ApplyEvery", "apply_every",
]


def _canonical_dtype(dtype: Any) -> Any:
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


class EmaState(NamedTuple):
    """State of :func:`ema`."""

    count: jax.Array  # shape=(), int32: steps taken so far
    ema: Any  # like params (in accumulator_dtype): the moving average, before debiasing


def ema(decay: Any, debias: bool = True, accumulator_dtype: Any = None) -> GradientTransformation:
    r"""Replaces the updates by their exponential moving average (``optax.ema``).

    .. math:: m_t = \beta m_{t-1} + (1 - \beta) u_t, \qquad \text{out}_t = m_t / (1 - \beta^t)
              \ \text{(with ``debias``)}

    Args:
      decay: :math:`\beta`, the weight of the past.
      debias: divide by :math:`1-\beta^t` (Kingma & Ba, 2015, https://arxiv.org/abs/1412.6980),
        so early averages are not pulled towards zero.
      accumulator_dtype: dtype of the stored average; default: the params' dtype.

    Returns:
      A transformation whose state is :class:`EmaState`.
    """
    accumulator_dtype = _canonical_dtype(accumulator_dtype)

    def init(params):
        return EmaState(count=gt.zero_count(), ema=gt.tree_zeros_like(params, accumulator_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        new_ema = gt.update_moment(updates, state.ema, decay, order=1)
        count = gt.safe_increment(state.count)
        out = gt.bias_correction(new_ema, decay, count) if debias else new_ema
        stored = new_ema if accumulator_dtype is None else gt.tree_cast(new_ema, accumulator_dtype)
        return out, EmaState(count=count, ema=stored)

    return GradientTransformation(init, update)


class ShouldSkipUpdateFunction(Protocol):
    """``(updates, gradient_step, params) -> (should_skip, skip_state)`` for :class:`MultiSteps`.

    ``should_skip`` is a boolean scalar array; ``skip_state`` any pytree of
    arrays (the same structure every call), stored in ``MultiStepsState.skip_state``.
    """

    def __call__(self, updates: Any, gradient_step: Any, params: Any) -> tuple[Any, Any]: ...


def skip_not_finite(updates: Any, gradient_step: Any, params: Any) -> tuple[jax.Array, Any]:
    """Skips a mini-step whose updates hold NaN or Inf (``optax.skip_not_finite``).

    Returns ``(should_skip, {"should_skip", "num_not_finite"})``.
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(u)) for u in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts))
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(updates: Any, gradient_step: Any, params: Any,
                       max_squared_norm: Any) -> tuple[jax.Array, Any]:
    """Skips a mini-step whose squared global norm is not below ``max_squared_norm`` (``optax.skip_large_updates``).

    A NaN norm is skipped too. Bind the threshold with
    ``functools.partial(skip_large_updates, max_squared_norm=...)``.
    Returns ``(should_skip, {"should_skip", "norm_squared"})``.
    """
    del gradient_step, params
    norm_squared = jnp.sum(jnp.array([jnp.sum(u**2) for u in jax.tree.leaves(updates)]))
    should_skip = ~(norm_squared < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}


def _never_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.array(False), ()


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`."""

    mini_step: jax.Array  # shape=(), int32: mini-steps accumulated since the last inner step
    gradient_step: jax.Array  # shape=(), int32: inner steps taken so far
    inner_opt_state: Any  # the inner transformation's state
    acc_grads: Any  # like params (in accumulator_dtype): the running mean (or sum) of the mini-steps' updates
    skip_state: Any = ()  # what should_skip_update_fn returned last


class MultiSteps:
    """Gradient accumulation: the inner transformation steps once every ``k`` mini-steps (``optax.MultiSteps``).

    The mini-steps' updates are averaged (``use_grad_mean=True``) or summed; on
    the ``k``-th the inner transformation sees the accumulated updates and its
    result is emitted, and every other mini-step emits zeros. ``k`` may follow a
    schedule of the inner step count. A mini-step that ``should_skip_update_fn``
    (e.g. :func:`skip_not_finite`) rejects leaves the state as it was, apart from
    ``skip_state``, and emits zeros.

    Use it as a transformation through :meth:`gradient_transformation` (or
    directly: it has ``init`` and ``update``). Extra keyword arguments reach the
    inner update at every mini-step.

    Args:
      opt: the inner transformation.
      every_k_schedule: ``k``, an int or a function of the inner step count.
      use_grad_mean: average the mini-steps' updates, else sum them.
      should_skip_update_fn: a :class:`ShouldSkipUpdateFunction`, or ``None`` to skip nothing.
      accumulator_dtype: dtype of the accumulated updates (float32, as optax).
    """

    def __init__(self, opt: Any, every_k_schedule: int | Callable[[Any], Any], use_grad_mean: bool = True,
                 should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
                 accumulator_dtype: Any = jnp.float32):
        self._opt = with_extra_args_support(opt)
        self._every_k = every_k_schedule if callable(every_k_schedule) else (lambda step: every_k_schedule)
        self._use_grad_mean = use_grad_mean
        self._accumulator_dtype = _canonical_dtype(accumulator_dtype)
        self._should_skip = should_skip_update_fn or _never_skip

    @property
    def inner_opt(self) -> GradientTransformationExtraArgs:
        """The inner transformation (taking extra arguments)."""
        return self._opt

    def _accumulate(self, update, acc, n):
        return acc + (update - acc) / (n + 1) if self._use_grad_mean else acc + update

    def init(self, params: Any) -> MultiStepsState:
        """The initial :class:`MultiStepsState`."""
        gradient_step = gt.zero_count()
        _, skip_state = self._should_skip(gt.tree_zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=gt.zero_count(), gradient_step=gradient_step, inner_opt_state=self._opt.init(params),
            acc_grads=gt.tree_zeros_like(params, self._accumulator_dtype), skip_state=skip_state,
        )

    def update(self, updates: Any, state: MultiStepsState, params: Any = None,
               **extra_args: Any) -> tuple[Any, MultiStepsState]:
        """Accumulates ``updates``; emits the inner step's updates on the ``k``-th mini-step, else zeros."""
        k = self._every_k(state.gradient_step)
        should_skip, skip_state = self._should_skip(updates, state.gradient_step, params)
        should_skip = jnp.asarray(should_skip)
        if (should_skip.dtype, should_skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "MultiSteps: should_skip_update_fn must return a boolean scalar array first, got dtype "
                f"{should_skip.dtype} and shape {should_skip.shape}"
            )
        acc_grads = jax.tree.map(lambda u, a: self._accumulate(u, a, state.mini_step), updates, state.acc_grads)
        inner_updates, new_inner = self._opt.update(gt.tree_cast_like(acc_grads, updates), state.inner_opt_state,
                                                    params, **extra_args)
        emit = state.mini_step == k - 1
        take = emit & ~should_skip
        out = jax.tree.map(lambda u: jnp.where(take, u, jnp.zeros_like(u)), inner_updates)
        keep_old = lambda new, old: jnp.where(should_skip, old, new).astype(old.dtype)  # noqa: E731
        new_state = MultiStepsState(
            mini_step=keep_old(gt.safe_increment(state.mini_step) % k, state.mini_step),
            gradient_step=jnp.where(take, gt.safe_increment(state.gradient_step), state.gradient_step),
            inner_opt_state=jax.tree.map(lambda n, o: jnp.where(take, n, o).astype(o.dtype), new_inner,
                                         state.inner_opt_state),
            acc_grads=jax.tree.map(lambda a, o: keep_old(jnp.where(emit, jnp.zeros_like(a), a), o), acc_grads,
                                   state.acc_grads),
            skip_state=skip_state,
        )
        return out, new_state

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """Whether the last call emitted the inner transformation's updates."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformationExtraArgs:
        """This accumulator as a ``(init, update)`` pair."""
        _accumulator = self

        def init(params):
            return _accumulator.init(params)

        def update(updates, state, params=None, **extra_args):
            return _accumulator.update(updates, state, params, **extra_args)

        for fn in (init, update):  # so that printing the pair names it MultiSteps, as for a factory's closures
            fn.__qualname__ = f"MultiSteps.<locals>.{fn.__name__}"
        return GradientTransformationExtraArgs(init, update)


class ApplyEvery(NamedTuple):
    """State of :func:`apply_every`."""

    count: jax.Array  # shape=(), int32: mini-steps since the last emission, modulo k
    grad_acc: Any  # like params: the sum of the updates since the last emission


def apply_every(k: Any = 1) -> GradientTransformation:
    """Sums the updates of ``k`` steps and emits the sum every ``k``-th step, zeros otherwise (``optax.apply_every``).

    Unlike :class:`MultiSteps` the transformations before it in a chain run at
    every step; prefer :class:`MultiSteps` for gradient accumulation.
    """

    def init(params):
        return ApplyEvery(count=gt.zero_count(), grad_acc=gt.tree_zeros_like(params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        phase = state.count % k
        grad_acc = jax.tree.map(lambda u, a: jnp.where(phase != 0, a, jnp.zeros_like(a)) + u, updates,
                                state.grad_acc)
        emit = phase == k - 1
        out = jax.tree.map(lambda a: jnp.where(emit, a, jnp.zeros_like(a)), grad_acc)
        return out, ApplyEvery(count=gt.safe_increment(state.count) % k, grad_acc=grad_acc)

    return GradientTransformation(init, update)
