"""pytorch_optimizer's ``Lookahead``: a wrapper that pulls any gradtx.optim optimizer toward slow weights.

Lookahead (Zhang et al., 2019, https://arxiv.org/abs/1907.08610) keeps a slow
copy of every parameter. The wrapped ("fast") optimizer steps as usual; every
``k`` steps of a param group, each of its parameters that has a gradient moves
``slow += alpha * (fast - slow)`` and the fast parameter is set to the new slow
one. This follows pytorch_optimizer 4.1.0's ``Lookahead`` (arguments, defaults,
errors, ``state_dict`` layout and numbers); optax's functional form is
:func:`gradtx.lookahead`.

Example::

    opt = optim.Lookahead(optim.SGD(params, lr=0.1, momentum=0.9), k=5, alpha=0.5)
    opt.step(grads)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradtx.optim._optimizer import Optimizer

__all__ = ["Lookahead"]

# pytorch_optimizer pulls back (or resets) this state entry whatever the wrapped optimizer is: with SGD it is the
# momentum; an optimizer that keeps no `momentum_buffer` (Adam: `exp_avg`) gets one it never reads.
_MOMENTUM = "momentum_buffer"
_PULLBACK_MODES = ["none", "reset", "pullback"]


def _load_optimizer(optimizer: Any, kwargs: dict[str, Any]) -> Optimizer:
    """The optimizer instance, or the class built from ``kwargs`` (which must give ``params``)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if "params" in kwargs:
        return optimizer(kwargs.pop("params"), **kwargs)
    raise ValueError("need to pass `params` when you pass the `torch.optim.Optimizer` instance.")


class Lookahead:
    """Wraps a gradtx.optim optimizer with Lookahead's slow weights, as pytorch_optimizer's ``Lookahead``.

    ``param_groups`` and ``params`` are the wrapped optimizer's (each group gains a
    ``counter`` of its steps since the last interpolation); ``state`` holds this
    wrapper's per-parameter ``slow_params`` (and ``slow_momentum`` with
    ``pullback_momentum="pullback"``); the wrapped optimizer's state stays in
    ``opt.optimizer.state``.

    Args:
      optimizer: a :class:`gradtx.optim.Optimizer` instance, or an optimizer class
        built with ``kwargs`` (which must then include ``params``).
      k: steps of the wrapped optimizer between interpolations (positive).
      alpha: how far the slow weights move toward the fast ones, in [0, 1).
      pullback_momentum: at an interpolation, ``"none"`` leaves the wrapped
        optimizer's ``momentum_buffer`` alone, ``"reset"`` sets it to zeros and
        ``"pullback"`` interpolates it toward a slow copy in the same way.
      **kwargs: the optimizer class's arguments, when a class is given.
    """

    def __init__(self, optimizer: Any, k: int = 5, alpha: float = 0.5, pullback_momentum: str = "none",
                 **kwargs: Any) -> None:
        if k <= 0:
            raise ValueError("k must be positive")
        if not 0.0 <= alpha < 1.0:
            raise ValueError("alpha must be in the range [0.0, 1.0)")
        if pullback_momentum not in _PULLBACK_MODES:
            options = " or ".join(f"'{mode}'" for mode in _PULLBACK_MODES)
            raise ValueError(f"pullback_momentum {pullback_momentum} must be one of ({options})")
        self.optimizer = _load_optimizer(optimizer, kwargs)
        self.alpha = alpha
        self.k = k
        self.pullback_momentum = pullback_momentum
        self.state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for group in self.param_groups:
            self._init_group(group)
        self.defaults = {"lookahead_alpha": alpha, "lookahead_k": k, "lookahead_pullback_momentum": pullback_momentum,
                         **self.optimizer.defaults}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's param groups."""
        return self.optimizer.param_groups

    @property
    def params(self) -> Any:
        """The wrapped optimizer's current parameter values (see :attr:`gradtx.optim.Optimizer.params`)."""
        return self.optimizer.params

    def _init_group(self, group: dict[str, Any]) -> None:
        group.setdefault("counter", 0)
        for p in group["params"]:
            state = self.state[p]
            if "slow_params" not in state:
                state["slow_params"] = p.data
                if self.pullback_momentum == "pullback":
                    state["slow_momentum"] = jnp.zeros_like(p.data)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group to the wrapped optimizer and takes its parameters as their slow weights."""
        self.optimizer.add_param_group(param_group)
        self._init_group(self.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, grads: Any = None, closure: Callable | None = None) -> Any:
        """One step of the wrapped optimizer, then the interpolation of every group that reached ``k`` steps.

        Args:
          grads: gradients in the structure of ``opt.params``, as the wrapped optimizer's ``step`` takes them.
          closure: a closure, as the wrapped optimizer's ``step`` takes it.

        Returns:
          The closure's loss, or None.
        """
        loss = self.optimizer.step(grads, closure)
        for group in self.param_groups:
            group["counter"] += 1
            if group["counter"] >= self.k:
                group["counter"] = 0
                self._interpolate(group)
        return loss

    def _interpolate(self, group: dict[str, Any]) -> None:
        base_state = self.optimizer.state
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            state["slow_params"] = p.data = state["slow_params"] + self.alpha * (p.data - state["slow_params"])
            if self.pullback_momentum == "pullback":
                buffer = base_state[p].get(_MOMENTUM, jnp.zeros_like(p.data))
                slow = state["slow_momentum"]
                state["slow_momentum"] = base_state[p][_MOMENTUM] = slow + self.alpha * (buffer - slow)
            elif self.pullback_momentum == "reset":
                base_state[p][_MOMENTUM] = jnp.zeros_like(p.data)

    def backup_and_load_cache(self) -> None:
        """Keeps the fast weights aside and sets the parameters to the slow ones (to evaluate them)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["backup_params"] = p.data
                p.data = self.state[p]["slow_params"]

    def clear_and_load_backup(self) -> None:
        """Sets the parameters back to the fast weights kept by :meth:`backup_and_load_cache`."""
        for group in self.param_groups:
            for p in group["params"]:
                p.data = self.state[p].pop("backup_params")

    def state_dict(self) -> dict[str, Any]:
        """``{"lookahead_state": {(group, position): {name: array}}, "base_optimizer": <its state_dict>}``.

        The arrays are NumPy copies, as in the wrapped optimizer's ``state_dict``.
        """
        lookahead_state = {(i, j): {name: np.array(value) for name, value in self.state[p].items()}
                           for i, group in enumerate(self.param_groups)
                           for j, p in enumerate(group["params"]) if p in self.state}
        return {"lookahead_state": lookahead_state, "base_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a :meth:`state_dict`: the slow weights, then the wrapped optimizer's state.

        Raises:
          ValueError: the saved slow weights do not cover exactly the current
            parameters, or one has another shape than its parameter (nothing is
            changed then).
        """
        saved = state_dict["lookahead_state"]
        restored = {}
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                entry = saved.get((i, j), saved.get(p))
                if entry is not None:
                    restored[p] = {name: jnp.asarray(value, dtype=p.dtype) for name, value in entry.items()}
                    for name, value in restored[p].items():
                        if value.shape != p.shape:
                            raise ValueError(f"lookahead state ({i}, {j})[{name!r}] has shape {value.shape}, but "
                                             f"its parameter has {p.shape}; load a state_dict of the same model")
        count = sum(len(group["params"]) for group in self.param_groups)
        if len(restored) != len(saved) or len(restored) != count:
            raise ValueError("lookahead state does not match the current parameters")
        self.optimizer.load_state_dict(state_dict["base_optimizer"])
        self.state = defaultdict(dict, restored)

    def __repr__(self) -> str:
        inner = repr(self.optimizer)
        return type(self).__name__ + inner[len(type(self.optimizer).__name__):]
