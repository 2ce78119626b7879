"""Reading and carrying optimizer state: current hyperparameters, bytes before allocating, edits by name."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from gradtx._describe import _captured, _is_transformation
from gradtx._base import GradientTransformation
from gradtx._schedules._object import ScheduleFn
from gradtx._transforms.hyperparams import InjectHyperparamsState
from gradtx._tree import path_str

__all__ = ["current_hyperparams", "state_nbytes", "CarryReport", "carry_state"]


def current_hyperparams(state: Any, tx: Any = None) -> dict[str, float]:
    """The current value of every injected or scheduled hyperparameter in a state, for logging.

    Finds each :class:`gradtx.InjectHyperparamsState` in ``state`` (under chains,
    named chains and wrappers) and returns ``{name: value}``; nested ones are
    prefixed by their path. Schedules show the value used by the latest step.

    A state without injected hyperparameters (``gradtx.adamw(schedule)``) does not
    hold its schedules, only their step counts: pass the transformation too,
    ``current_hyperparams(state, tx)``, and every gradtx schedule it was built with
    (:class:`gradtx.ScheduleFn`) is evaluated at its transform's count,
    with the same numbers ``inject_hyperparams`` reports. Names are the argument
    names of the transform that holds each schedule (``learning_rate``, ``b1``;
    ``decay`` for ``sgd``'s momentum, held by ``trace``), prefixed by the state
    path where a name occurs twice.

    Raises ``ValueError`` instead of returning an empty dict when nothing is found,
    saying to pass ``tx`` or to wrap the factory with :func:`gradtx.inject_hyperparams`.

    Example::

        tx = gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=schedule)
        ...
        wandb.log(gradtx.current_hyperparams(state))   # {"learning_rate": 0.00093, ...}

        tx = gradtx.adamw(gradtx.cosine_decay_schedule(1e-3, 1000))
        ...
        wandb.log(gradtx.current_hyperparams(state, tx))   # {"learning_rate": 0.00093}
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
    if found:
        return found
    if tx is None:
        raise ValueError("current_hyperparams: this state holds no injected hyperparameters (no "
                         "InjectHyperparamsState), and a plain state keeps only step counts, not its schedules. Pass "
                         "the transformation as well, current_hyperparams(state, tx), or build it with "
                         "gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=schedule).")
    scheduled = _scheduled(tx, state, ())
    if not scheduled:
        raise ValueError("current_hyperparams: found no gradtx schedule with a step count in this transformation and "
                         "state (its hyperparameters are constants, or functions that are not gradtx schedules). "
                         "Use gradtx schedules (gradtx.cosine_decay_schedule(...)), or wrap the factory with "
                         "gradtx.inject_hyperparams to log every numeric hyperparameter.")
    names = [name for _, name, _ in scheduled]
    return {(name if names.count(name) == 1 else f"{path_str(path)}/{name}"): value for path, name, value in scheduled}


def _schedules_in(tx: Any) -> list[tuple[str, ScheduleFn]]:
    """The gradtx schedules a transformation's closures hold, by argument name, also inside a wrapping lambda."""
    found = []
    for name, value in _captured(tx).items():
        if isinstance(value, ScheduleFn):
            found.append((name, value))
        elif callable(value) and not _is_transformation(value) and hasattr(value, "__closure__"):
            inner = _captured(GradientTransformation(value, value))  # scale_by_learning_rate: lambda c: -lr(c)
            found += [(k, v) for k, v in inner.items() if isinstance(v, ScheduleFn)]
    return found


def _scheduled(tx: Any, state: Any, path: tuple) -> list[tuple[tuple, str, float]]:
    """``(state path, name, value)`` of each schedule found walking ``tx`` and ``state`` together."""
    captured = _captured(tx)
    if "tx" in captured and _is_transformation(captured["tx"]) and len(captured) == 1:  # with_extra_args_support
        return _scheduled(captured["tx"], state, path)
    members = [v for v in captured.values() if isinstance(v, (tuple, list)) and v and
               all(_is_transformation(m) for m in v)]
    if members and isinstance(state, tuple) and len(members[0]) == len(state):  # chain: member i, state i
        return [x for i, (m, s) in enumerate(zip(members[0], state))
                for x in _scheduled(m, s, (*path, jax.tree_util.SequenceKey(i)))]
    named = [v for v in captured.values() if isinstance(v, dict) and v and
             all(_is_transformation(m) for m in v.values())]
    if named and isinstance(state, dict) and set(named[0]) == set(state):  # named_chain
        return [x for k, m in named[0].items() for x in _scheduled(m, state[k], (*path, jax.tree_util.DictKey(k)))]
    inner = [v for v in captured.values() if _is_transformation(v)]
    if len(inner) == 1 and hasattr(state, "inner_state"):  # a wrapper with its inner transformation's state
        return _scheduled(inner[0], state.inner_state, (*path, jax.tree_util.GetAttrKey("inner_state")))
    if "count" not in getattr(state, "_fields", ()):  # states are NamedTuples; a tuple's .count is a method
        return []
    last = jax.numpy.maximum(jax.numpy.asarray(state.count) - 1, 0)  # the count the latest step used
    return [(path, name, float(np.asarray(schedule(last)))) for name, schedule in _schedules_in(tx)]


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
