"""Wrappers that route, mask or guard other transformations."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree as gt
from gradtx._base import (
    GradientTransformation, GradientTransformationExtraArgs, set_to_zero, with_extra_args_support,
)


__all__ = ["MaskedNode", "MaskedState", "masked", "MultiTransformState", "multi_transform", "partition", "ApplyIfFiniteState", "apply_if_finite",
           "PartitionState", "ConditionFn", "ConditionallyTransformState", "conditionally_transform",
           "ConditionallyMaskState", "conditionally_mask", "freeze", "selective_transform", "flatten"]

class MaskedNode(NamedTuple):
    """Stands in for a masked-out subtree: a pytree node with no leaves."""


class MaskedState(NamedTuple):
    """State of :func:`masked`."""

    inner_state: Any  # the inner transformation's state over the unmasked leaves


def _is_mask_function(mask: Any) -> bool:
    # As optax decides: a function, not a callable pytree of booleans or labels (an equinox module of masks).
    callable_leaves = jax.tree.leaves(jax.tree.map(callable, mask))
    return bool(callable_leaves) and all(callable_leaves)


def _resolve_mask(mask: Any, tree: Any) -> Any:
    return mask(tree) if _is_mask_function(mask) else mask


def _has_no_leaves(tree: Any) -> bool:
    # optax.tree.map_params calls init with a leafless placeholder to find where the params sit in the state.
    return tree is not None and not jax.tree.leaves(tree)


def _mask_tree(tree: Any, mask_tree: Any) -> Any:
    try:
        return jax.tree.map(lambda m, t: t if m else MaskedNode(), mask_tree, tree)
    except ValueError as error:  # jax's message prints neither tree's paths
        raise ValueError(f"the mask (or labels) must have the params' structure or a prefix of it: the mask has "
                         f"paths {gt.tree_paths(mask_tree)[:8]}, the params {gt.tree_paths(tree)[:8]}") from error


def masked(inner: Any, mask: Any, *, mask_compatible_extra_args: bool = False) -> GradientTransformationExtraArgs:
    """Applies ``inner`` only where ``mask`` is ``True``; other updates pass through unchanged.

    ``mask`` is a tree of booleans with the structure of the params (or a prefix
    of it), or a function of the params returning one; a callable pytree whose
    leaves are booleans (an equinox module used as a mask) is a tree, not a
    function. ``inner`` never sees the masked-out leaves, so it allocates no
    state for them. With ``mask_compatible_extra_args``, extra arguments shaped
    like the updates are masked too. Follows ``optax.masked``.
    """
    inner = with_extra_args_support(inner)

    def init(params):
        if _has_no_leaves(params):
            return MaskedState(inner_state=inner.init(params))
        return MaskedState(inner_state=inner.init(_mask_tree(params, _resolve_mask(mask, params))))

    def update(updates, state, params=None, **extra_args):
        mask_tree = _resolve_mask(mask, updates if params is None else params)
        if mask_compatible_extra_args:
            structure = jax.tree.structure(updates)
            extra_args = {k: _mask_tree(v, mask_tree) if jax.tree.structure(v) == structure else v
                          for k, v in extra_args.items()}
        new, inner_state = inner.update(
            _mask_tree(updates, mask_tree), state.inner_state,
            None if params is None else _mask_tree(params, mask_tree), **extra_args,
        )
        merged = jax.tree.map(lambda m, n, u: n if m else u, mask_tree, new, updates,
                              is_leaf=lambda x: isinstance(x, MaskedNode))
        return merged, MaskedState(inner_state=inner_state)

    return GradientTransformationExtraArgs(init, update)


class MultiTransformState(NamedTuple):
    """State of :func:`multi_transform`."""

    inner_states: Mapping[Hashable, Any]  # label -> state of that label's masked transformation


def multi_transform(transforms: Mapping[Hashable, Any], param_labels: Any) -> GradientTransformation:
    """Applies a different transformation to each labelled group of parameters (``optax.multi_transform``).

    Args:
      transforms: label -> transformation.
      param_labels: a tree of labels with the params' structure (or a prefix), or
        a function of the params returning one.
    """
    transforms = {k: with_extra_args_support(v) for k, v in transforms.items()}

    def labels_of(params):
        labels = _resolve_mask(param_labels, params)
        unknown = set(jax.tree.leaves(labels)) - set(transforms)
        if unknown:
            raise ValueError(
                f"multi_transform: labels {sorted(map(str, unknown))} have no transformation; "
                f"known labels are {sorted(map(str, transforms))}"
            )
        return labels

    def masks(params):
        labels = labels_of(params)
        return {k: jax.tree.map(lambda label, key=k: label == key, labels) for k in transforms}

    def init(params):
        return MultiTransformState(
            {k: masked(tx, mask_k).init(params) for (k, tx), mask_k in zip(transforms.items(), masks(params).values())}
        )

    def update(updates, state, params=None, **extra_args):
        mask_by_label = masks(updates if params is None else params)
        new_states = {}
        for k, tx in transforms.items():
            updates, new_states[k] = masked(tx, mask_by_label[k]).update(updates, state.inner_states[k], params,
                                                                          **extra_args)
        return updates, MultiTransformState(new_states)

    return GradientTransformation(init, update)


def partition(transforms: Mapping[Hashable, Any], param_labels: Any) -> GradientTransformation:
    """The newer optax name of :func:`multi_transform`."""
    return multi_transform(transforms, param_labels)


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`."""

    notfinite_count: jax.Array  # shape=(), int32: consecutive non-finite steps so far
    last_finite: jax.Array  # shape=(), bool: whether the last step's updates were finite
    total_notfinite: jax.Array  # shape=(), int32: non-finite steps in all
    inner_state: Any  # the inner transformation's state


def apply_if_finite(inner: Any, max_consecutive_errors: int) -> GradientTransformation:
    """Skips steps whose updates hold NaN or Inf, leaving the inner state untouched (``optax.apply_if_finite``).

    A skipped step returns zero updates. After ``max_consecutive_errors``
    non-finite steps in a row, the non-finite updates are applied anyway, so a
    run that is broken for good shows it instead of stalling silently.
    """
    inner = with_extra_args_support(inner)

    def init(params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32), inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra_args):
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        finite = gt.all_finite(updates)
        notfinite_count = jnp.where(finite, 0, state.notfinite_count + 1).astype(jnp.int32)
        apply = finite | (notfinite_count > max_consecutive_errors)
        out = gt.tree_map(lambda n: jnp.where(apply, n, jnp.zeros_like(n)), new_updates)
        inner_state = gt.tree_map(lambda n, o: jnp.where(apply, n, o), new_inner, state.inner_state)
        return out, ApplyIfFiniteState(
            notfinite_count=notfinite_count, last_finite=finite,
            total_notfinite=(state.total_notfinite + jnp.logical_not(finite)).astype(jnp.int32),
            inner_state=inner_state,
        )

    return GradientTransformation(init, update)



PartitionState = MultiTransformState  # optax's newer name


class ConditionFn(Protocol):
    """``should_transform_fn(step, **extra_args) -> bool scalar`` for the ``conditionally_*`` wrappers."""

    def __call__(self, step: jax.Array, **extra_args: Any) -> jax.Array: ...


class ConditionallyTransformState(NamedTuple):
    """State of :func:`conditionally_transform`."""

    inner_state: Any  # the inner transformation's state
    step: jax.Array  # shape=(), int32: calls so far


class ConditionallyMaskState(NamedTuple):
    """State of :func:`conditionally_mask`."""

    step: jax.Array  # shape=(), int32: calls so far
    inner_state: Any  # the inner transformation's state


def _conditional(inner: Any, should_transform_fn: Callable, forward_extra_args: bool, rejected: Callable):
    inner = with_extra_args_support(inner)

    def update(updates, step, inner_state, params, extra_args):
        condition = should_transform_fn(step, **(extra_args if forward_extra_args else {}))
        return jax.lax.cond(
            condition,
            lambda: inner.update(updates, inner_state, params, **extra_args),
            lambda: (rejected(updates), inner_state),
        )

    return inner, update


def conditionally_transform(inner: Any, should_transform_fn: ConditionFn,
                            forward_extra_args: bool = False) -> GradientTransformationExtraArgs:
    """Applies ``inner`` at the steps where ``should_transform_fn(step)`` holds; passes updates through otherwise.

    Follows ``optax.conditionally_transform``: ``step`` counts every call (from
    0); when the condition is false the inner state is left as it is. With
    ``forward_extra_args`` the condition also receives the update's extra
    keyword arguments (e.g. ``value=``).
    """
    inner, conditional_update = _conditional(inner, should_transform_fn, forward_extra_args, lambda u: u)

    def init(params):
        return ConditionallyTransformState(inner_state=inner.init(params), step=gt.zero_count())

    def update(updates, state, params=None, **extra_args):
        updates, inner_state = conditional_update(updates, state.step, state.inner_state, params, extra_args)
        return updates, ConditionallyTransformState(inner_state, gt.safe_increment(state.step))

    return GradientTransformationExtraArgs(init, update)


def conditionally_mask(inner: Any, should_transform_fn: ConditionFn,
                       forward_extra_args: bool = False) -> GradientTransformationExtraArgs:
    """Like :func:`conditionally_transform`, but a step whose condition is false emits zero updates.

    Follows ``optax.conditionally_mask``, e.g. to hold the parameters still
    during a warm-up that only collects statistics.
    """
    inner, conditional_update = _conditional(inner, should_transform_fn, forward_extra_args, gt.tree_zeros_like)

    def init(params):
        return ConditionallyMaskState(step=gt.zero_count(), inner_state=inner.init(params))

    def update(updates, state, params=None, **extra_args):
        updates, inner_state = conditional_update(updates, state.step, state.inner_state, params, extra_args)
        return updates, ConditionallyMaskState(step=gt.safe_increment(state.step), inner_state=inner_state)

    return GradientTransformationExtraArgs(init, update)


def freeze(mask: Any) -> GradientTransformation:
    """Zeros the updates where ``mask`` is ``True`` (those parameters stay fixed) (``optax.freeze``).

    ``mask`` is a bool, or a tree of booleans with the params' structure (or a
    prefix). Put it after the optimizer in a chain; to also keep the optimizer
    from allocating state for frozen leaves use :func:`selective_transform`.
    """
    return masked(set_to_zero(), mask)


def selective_transform(optimizer: Any, *, freeze_mask: Any) -> GradientTransformation:
    """Runs ``optimizer`` on the leaves where ``freeze_mask`` is ``False`` and zeros the rest.

    Follows ``optax.selective_transform``: a :func:`partition` with labels
    ``"train"`` and ``"freeze"``, so the optimizer keeps no state for frozen leaves.
    """

    def labels(params):
        del params
        return jax.tree.map(lambda frozen: "freeze" if frozen else "train", freeze_mask)

    return partition({"train": optimizer, "freeze": set_to_zero()}, param_labels=labels)


def _ravel(tree: Any) -> jax.Array:
    return jnp.concatenate([jnp.reshape(x, [-1]) for x in jax.tree.leaves(tree)])


def _unravel_like(tree: Any, flat: jax.Array) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    offsets = np.cumsum([np.size(x) for x in leaves])[:-1]
    pieces = jnp.split(flat, offsets)
    return jax.tree.unflatten(treedef, [jnp.reshape(p, jnp.shape(x)) for p, x in zip(pieces, leaves)])


def flatten(inner: Any) -> GradientTransformationExtraArgs:
    """Runs ``inner`` on all leaves concatenated into one vector (``optax.flatten``).

    The inner state is one flat array per slot instead of a tree, which can be
    faster for many small leaves. Leaves are promoted to a common dtype.
    """
    inner = with_extra_args_support(inner)

    def init(params):
        return inner.init(_ravel(params))

    def update(updates, state, params=None, **extra_args):
        flat_params = None if params is None else _ravel(params)
        flat, state = inner.update(_ravel(updates), state, flat_params, **extra_args)
        return _unravel_like(updates, flat), state

    return GradientTransformationExtraArgs(init, update)
