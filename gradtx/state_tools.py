"""Reading and carrying optimizer state: current hyperparameters, bytes before allocating, edits by name."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from gradtx.transforms.hyperparams import InjectHyperparamsState
from gradtx.tree import path_str

__all__ = ["current_hyperparams", "state_nbytes", "CarryReport", "carry_state"]


def current_hyperparams(state: Any) -> dict[str, float]:
    """The current value of every injected hyperparameter in a state, for logging.

    Finds each :class:`gradtx.InjectHyperparamsState` in ``state`` (under chains,
    named chains and wrappers) and returns ``{name: value}``; nested ones are
    prefixed by their path. Schedules show the value used by the latest step.

    Example::

        tx = gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=schedule)
        ...
        wandb.log(gradtx.current_hyperparams(state))   # {"learning_rate": 0.00093, ...}
    """
    found: dict[str, float] = {}
    is_inject = lambda x: isinstance(x, InjectHyperparamsState)  # noqa: E731
    for key_path, node in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_inject)[0]:
        if not is_inject(node):
            continue
        prefix = path_str(key_path)
        for name, value in node.hyperparams.items():
            key = name if prefix == "<root>" else f"{prefix}/{name}"
            found[key] = float(np.asarray(value))
    return found


def state_nbytes(tx: Any, params: Any) -> int:
    """Bytes of optimizer state ``tx.init(params)`` would allocate, computed without allocating (``jax.eval_shape``)."""
    shapes = jax.eval_shape(tx.init, params)
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes)))


class CarryReport(NamedTuple):
    """What :func:`carry_state` carried over and what it could not."""

    carried: list[str]  # names whose state came from the old state
    fresh: list[str]  # names in the new chain with no (compatible) old state: freshly initialised
    dropped: list[str]  # names in the old state that the new chain no longer has


def _compatible(old: Any, new: Any) -> bool:
    if jax.tree.structure(old) != jax.tree.structure(new):
        return False
    return all(np.shape(a) == np.shape(b) and jax.numpy.result_type(a) == jax.numpy.result_type(b)
               for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))


def carry_state(old_state: dict, tx: Any, params: Any) -> tuple[dict, CarryReport]:
    """Carries a :func:`gradtx.named_chain` state over to an edited named chain ``tx``, by name.

    Adding a clip to a chain, removing a stage or reordering stages leaves every
    other stage's state intact: members are matched by name, and a member whose
    state no longer fits (another structure, shape or dtype) starts fresh and is
    reported, never silently misassigned.

    Returns:
      ``(state, report)``: the state for ``tx``, and a :class:`CarryReport`.
    """
    if not isinstance(old_state, dict):
        raise TypeError("carry_state works on named_chain states (dicts keyed by name); "
                        f"got {type(old_state).__name__}. Build the chain with gradtx.named_chain.")
    fresh_state = tx.init(params)
    if not isinstance(fresh_state, dict):
        raise TypeError("carry_state: the new transformation must be a gradtx.named_chain")
    state, carried, fresh = {}, [], []
    for name, new in fresh_state.items():
        if name in old_state and _compatible(old_state[name], new):
            state[name] = old_state[name]
            carried.append(name)
        else:
            state[name] = new
            fresh.append(name)
    dropped = [name for name in old_state if name not in fresh_state]
    return state, CarryReport(carried, fresh, dropped)
