"""torch.optim.swa_utils for JAX models: weight averaging (SWA, EMA), the SWA learning rate, batch-norm refresh.

A *model* here is what a JAX training loop holds instead of an ``nn.Module``:

- its **parameters**: any pytree of arrays, a facade optimizer (its ``opt.params``
  are read), or :class:`~gradtx.optim.Parameter` boxes (their ``.data``);
- optionally its **buffers**: a pytree of non-trained arrays such as batch-norm
  running statistics (flax's ``batch_stats`` collection, equinox's ``State``
  arrays), passed as ``buffers=``;
- for :func:`update_bn`, its training-mode **apply function**
  ``apply(params, batch_stats, x) -> (y, new_batch_stats)``
  that normalises with the batch's own statistics and returns the running statistics
  updated from them.

The numbers are torch's (Izmailov et al., 2018, https://arxiv.org/abs/1803.05407).
Arrays are values, so averaging functions *return* the new averages where
torch's update tensors in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import tree as gt
from gradtx.optim.lr_scheduler._base import LRScheduler, _per_group, _scalar_or_none
from gradtx.optim._parameter import Parameter

__all__ = ["SWALR", "AveragedModel", "get_ema_avg_fn", "get_ema_multi_avg_fn", "get_swa_avg_fn",
           "get_swa_multi_avg_fn", "update_bn"]


def _is_float(x: jax.Array) -> bool:
    return jnp.issubdtype(x.dtype, jnp.inexact)


def _check_decay(decay: float) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``torch.lerp``: ``start + w (end - start)`` for ``w < 0.5``, ``end - (end - start)(1 - w)`` otherwise."""
    weight = jnp.asarray(weight, start.dtype)
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable:
    r"""An exponential moving average over lists of arrays (``torch.optim.swa_utils.get_ema_multi_avg_fn``).

    .. math:: W^{EMA}_{t+1} = \text{decay}\, W^{EMA}_t + (1 - \text{decay})\, W^{model}_{t+1}

    Args:
      decay: in ``[0, 1]`` (default 0.999).

    Returns:
      ``fn(averaged_list, current_list, n_averaged) -> new averaged_list`` (floating arrays are lerped as
      torch's ``_foreach_lerp_``; integer ones are rounded toward zero as torch's ``copy_``).
    """
    _check_decay(decay)

    def ema_update(averaged: list, current: list, n_averaged: Any) -> list:
        del n_averaged
        if _is_float(averaged[0]):
            return [_lerp(a, c, 1 - decay) for a, c in zip(averaged, current, strict=True)]
        return [(a * decay + c * (1 - decay)).astype(a.dtype) for a, c in zip(averaged, current, strict=True)]

    return ema_update


def get_swa_multi_avg_fn() -> Callable:
    """The running equal-weight average over lists of arrays (``torch.optim.swa_utils.get_swa_multi_avg_fn``).

    Returns:
      ``fn(averaged_list, current_list, n_averaged) -> new averaged_list``: ``lerp(avg, cur, 1 / (n + 1))``.
    """

    def swa_update(averaged: list, current: list, n_averaged: Any) -> list:
        n = jnp.asarray(n_averaged)
        if _is_float(averaged[0]):
            # torch divides 1 by its integer count tensor, which yields float32 whatever the parameters' dtype.
            weight = 1 / (n + 1).astype(jnp.float32)
            return [_lerp(a, c, weight) for a, c in zip(averaged, current, strict=True)]
        return [(a + (c - a) / (n + 1)).astype(a.dtype) for a, c in zip(averaged, current, strict=True)]

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> Callable:
    """The exponential moving average of one array (``torch.optim.swa_utils.get_ema_avg_fn``).

    Args:
      decay: in ``[0, 1]`` (default 0.999).

    Returns:
      ``fn(averaged, current, n_averaged) -> decay * averaged + (1 - decay) * current``.
    """
    _check_decay(decay)

    def ema_update(averaged: jax.Array, current: jax.Array, n_averaged: Any) -> jax.Array:
        del n_averaged
        return decay * averaged + (1 - decay) * current

    return ema_update


def get_swa_avg_fn() -> Callable:
    """The running equal-weight average of one array (``torch.optim.swa_utils.get_swa_avg_fn``).

    Returns:
      ``fn(averaged, current, n_averaged) -> averaged + (current - averaged) / (n_averaged + 1)``.
    """

    def swa_update(averaged: jax.Array, current: jax.Array, n_averaged: Any) -> jax.Array:
        return averaged + (current - averaged) / (jnp.asarray(n_averaged) + 1).astype(averaged.dtype)

    return swa_update


def _values(model: Any) -> Any:
    """The arrays of a model's parameters: a facade optimizer's ``params``, boxes' ``data``, or the tree itself."""
    if hasattr(model, "param_groups") and hasattr(model, "params"):
        model = model.params
    return jax.tree.map(lambda x: x.data if isinstance(x, Parameter) else jnp.asarray(x), model,
                        is_leaf=lambda x: isinstance(x, Parameter))


class AveragedModel:
    """Running averages of a model's parameters: SWA by default, EMA or any rule by choice (``torch.optim.swa_utils.AveragedModel``).

    The first :meth:`update_parameters` copies the model; each later one applies
    ``multi_avg_fn`` (to the arrays of one dtype at a time, as lists), or ``avg_fn``
    (to each array), or, with neither, the equal-weight average
    ``avg + (cur - avg) / (n_averaged + 1)`` as torch computes it on CPU. Buffers are
    copied from the model at every update, or averaged too with ``use_buffers=True``.

    Example::

        swa = AveragedModel(opt)                        # or AveragedModel(params_tree)
        ema = AveragedModel(params, multi_avg_fn=get_ema_multi_avg_fn(0.999))
        for epoch in range(epochs):
            ...                                         # train with opt.step(grads)
            swa.update_parameters(opt)                  # or swa.update_parameters(opt.params)
        predictions = apply(swa.module, x)

    Args:
      model: the parameters: a pytree of arrays, a facade optimizer, or ``Parameter`` boxes.
      device: a ``jax.Device`` (or sharding) to keep the averages on; the model's placement by default.
      avg_fn: ``fn(averaged, current, n_averaged) -> new averaged`` for one array.
      multi_avg_fn: ``fn(averaged_list, current_list, n_averaged) -> new averaged_list``.
      use_buffers: average the buffers as well as the parameters.
      buffers: the model's buffers (a pytree of arrays, e.g. batch-norm statistics), if it has any.

    Attributes:
      module: the averaged parameters (the tree to evaluate the model with); also ``params``.
      buffers: the averaged (or copied) buffers, ``None`` if the model has none.
      n_averaged: how many models have been averaged (an integer array).
    """

    def __init__(self, model: Any, device: Any = None, avg_fn: Callable | None = None,
                 multi_avg_fn: Callable | None = None, use_buffers: bool = False, *, buffers: Any = None) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.device = device
        self.module = self._place(_values(model))
        self.buffers = None if buffers is None else self._place(_values(buffers))
        self.n_averaged = jnp.asarray(0)
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    @property
    def params(self) -> Any:
        """The averaged parameters (the same tree as :attr:`module`)."""
        return self.module

    def _place(self, tree: Any) -> Any:
        copy = jax.tree.map(jnp.copy, tree)
        return copy if self.device is None else jax.device_put(copy, self.device)

    def _average(self, averaged: list, current: list) -> list:
        n = self.n_averaged
        if self.avg_fn is not None and self.multi_avg_fn is None:
            return [jnp.asarray(self.avg_fn(a, c, n)).astype(a.dtype) for a, c in zip(averaged, current)]
        multi = self.multi_avg_fn
        out = list(averaged)
        for dtype in dict.fromkeys(a.dtype for a in averaged):  # one call per dtype, as torch's per-dtype groups
            idx = [i for i, a in enumerate(averaged) if a.dtype == dtype]
            group, cur = [averaged[i] for i in idx], [current[i] for i in idx]
            new = multi(group, cur, n) if multi is not None else [get_swa_avg_fn()(a, c, n) for a, c in zip(group, cur)]
            for i, value in zip(idx, new):
                out[i] = jnp.asarray(value).astype(averaged[i].dtype)
        return out

    def _updated(self, averaged: Any, current: Any, what: str) -> Any:
        gt.check_matching_trees(averaged, current, what=f"the model's {what}", against=f"the averaged {what}")
        avg_leaves, treedef = jax.tree.flatten(averaged)
        cur_leaves = [c.astype(a.dtype) for a, c in zip(avg_leaves, jax.tree.leaves(current))]
        if self.device is not None:
            cur_leaves = jax.device_put(cur_leaves, self.device)
        # A copy, never the model's own array: a facade optimizer may donate that buffer at its next step.
        new = cur_leaves if int(self.n_averaged) == 0 else self._average(avg_leaves, cur_leaves)
        return jax.tree.unflatten(treedef, [jnp.copy(x) if x is c else x for x, c in zip(new, cur_leaves)])

    def update_parameters(self, model: Any, buffers: Any = None) -> None:
        """Averages in the model's current parameters (and buffers); ``n_averaged`` grows by one.

        Args:
          model: the model's parameters, in the structure given to the constructor (a tree, a
            facade optimizer or boxes).
          buffers: the model's current buffers, when it has them.
        """
        self.module = self._updated(self.module, _values(model), "parameters")
        if buffers is not None:
            if self.buffers is None:
                raise ValueError("update_parameters got buffers, but the AveragedModel was built without them: "
                                 "pass buffers=... to AveragedModel(...) as well")
            buffers = _values(buffers)
            if self.use_buffers:
                self.buffers = self._updated(self.buffers, buffers, "buffers")
            else:
                gt.check_matching_trees(self.buffers, buffers, what="the model's buffers", against="the buffers")
                self.buffers = self._place(buffers)
        self.n_averaged = self.n_averaged + 1

    def state_dict(self) -> dict[str, Any]:
        """``{"module": averaged params, "buffers": ..., "n_averaged": ...}`` (the averaging functions are not saved, as in torch)."""
        return {"module": self.module, "buffers": self.buffers, "n_averaged": self.n_averaged}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned (the trees must match this model's)."""
        gt.check_matching_trees(self.module, state_dict["module"], what="the loaded module", against="the averaged parameters")
        self.module = state_dict["module"]
        self.buffers = state_dict.get("buffers")
        self.n_averaged = jnp.asarray(state_dict["n_averaged"])


def _probe(apply: Callable, params: Any, stats: Any, x: Any) -> tuple[Any, Any]:
    """One batch's own statistics and the stats' update when they are affine in the old stats.

    ``new = m * old + c`` for every floating leaf (flax's, haiku's, equinox's and
    torch's batch norms: ``c = (1 - m) * batch_stat``); applying the model to zeros and to
    ones gives ``c`` and ``m``, so the batch statistic is ``c / (1 - m)`` whatever the
    model's momentum.
    """

    def run(s):
        return apply(params, s, x)[1]

    at_zero = run(jax.tree.map(jnp.zeros_like, stats))
    at_one = run(jax.tree.map(lambda s: jnp.ones_like(s) if _is_float(s) else s, stats))
    batch = jax.tree.map(lambda c, o: c / (1 - (o - c)) if _is_float(c) else c, at_zero, at_one)
    has_ints = not all(_is_float(s) for s in jax.tree.leaves(stats))
    return batch, run(stats) if has_ints else at_zero


def update_bn(loader: Iterable[Any], model: Callable, params: Any, batch_stats: Any, device: Any = None) -> Any:
    """Recomputes batch-norm running statistics in one pass over the data (``torch.optim.swa_utils.update_bn``).

    As torch's does with ``momentum=None``: the result's floating leaves are the
    equal-weight average, over the batches, of each batch's own statistics
    (``stat_k = stat_{k-1} + (batch_k - stat_{k-1}) / k``), whatever momentum the
    model's batch norm uses; integer leaves (e.g. ``num_batches_tracked``) start from 0
    and follow the model's own update. Typically run on the parameters of an
    :class:`AveragedModel` after training.

    Args:
      loader: an iterable of batches; a batch that is a list or tuple is fed by its first element.
      model: ``apply(params, batch_stats, x) -> (y, new_batch_stats)``, in training mode (normalising with the batch's statistics). Its update of each floating stat
        must be affine in the old stat, ``new = m * old + (1 - m) * batch_stat`` with ``m < 1``
        (as in flax's ``BatchNorm`` with ``mutable=["batch_stats"]``, equinox's and haiku's); the
        momentum ``m`` need not be known. Float32 statistics with ``m`` near 1 lose about
        ``eps / (1 - m)`` relative precision.
      params: the parameters to evaluate (e.g. ``swa_model.module``).
      batch_stats: the statistics to recompute (their values are not used; their tree and dtypes are).
      device: if given, each batch is put there first.

    Returns:
      the new statistics (the given ones when ``loader`` is empty: there is nothing to measure).
    """
    step = jax.jit(lambda p, s, x, k: _cumulative(*_probe(model, p, s, x), s, k))
    stats, k = batch_stats, 0
    for x in loader:
        if isinstance(x, (list, tuple)):
            x = x[0]
        if device is not None:
            x = jax.device_put(x, device)
        k += 1
        stats = step(params, stats if k > 1 else _reset_ints(batch_stats), x, k)
    return stats


def _reset_ints(stats: Any) -> Any:
    return jax.tree.map(lambda s: s if _is_float(s) else jnp.zeros_like(s), stats)


def _cumulative(batch: Any, model_update: Any, old: Any, k: Any) -> Any:
    def one(b, m, o):
        if not _is_float(o):
            return m
        return (o + (b.astype(o.dtype) - o) / jnp.asarray(k, o.dtype)).astype(o.dtype)

    return jax.tree.map(one, batch, model_update, old)


class SWALR(LRScheduler):
    """Anneals each group's lr to a fixed ``swa_lr`` (``torch.optim.swa_utils.SWALR``, the same numbers).

    Over ``anneal_epochs`` steps, ``lr_t = swa_lr * alpha_t + lr_0 * (1 - alpha_t)``,
    with ``alpha_t = (1 - cos(pi t)) / 2`` ("cos") or ``t`` ("linear"),
    ``t = step / anneal_epochs``; then ``swa_lr``. Like torch's it is recursive: it
    recovers the start lr from the group's current lr, so it composes with edits.

    Args:
      optimizer: a facade optimizer.
      swa_lr: the final lr, for all groups or one per group (stored as ``group["swa_lr"]``).
      anneal_epochs: steps of annealing (an int >= 0; default 10).
      anneal_strategy: ``"cos"`` (default) or ``"linear"``.
      last_epoch: see :class:`~gradtx.optim.lr_scheduler.LRScheduler`.
    """

    _unsaved = ("optimizer", "anneal_func")

    def __init__(self, optimizer: Any, swa_lr: Any, anneal_epochs: int = 10, anneal_strategy: str = "cos",
                 last_epoch: int = -1) -> None:
        for value, group in zip(_per_group("swa_lr", optimizer, swa_lr), optimizer.param_groups):
            group["swa_lr"] = value
        self._swa_lr = _scalar_or_none(swa_lr)
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: Any, swa_lr: Any, alpha: float) -> Any:
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def _add_group(self, group: dict) -> None:
        super()._add_group(group)
        group["swa_lr"] = self._group_value(group, "swa_lr", self._swa_lr)

    def get_lr(self) -> list[Any]:
        self._warn_get_lr()
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self.anneal_func(max(0, min(1, (step - 1) / max(1, self.anneal_epochs))))
        groups = self.optimizer.param_groups
        prev_lrs = [self._get_initial_lr(g["lr"], g["swa_lr"], prev_alpha) for g in groups]
        alpha = self.anneal_func(max(0, min(1, step / max(1, self.anneal_epochs))))
        return [g["swa_lr"] * alpha + lr * (1 - alpha) for g, lr in zip(groups, prev_lrs)]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._set_anneal_func(self._anneal_strategy)
