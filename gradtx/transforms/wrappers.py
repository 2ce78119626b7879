"""Wrappers that route, mask or guard other transformations."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree as gt
from gradtx.base import GradientTransformation, with_extra_args_support


__all__ = ["MaskedNode", "MaskedState", "masked", "MultiTransformState", "multi_transform", "partition", "ApplyIfFiniteState", "apply_if_finite"]

class MaskedNode(NamedTuple):
    """Stands in for a masked-out subtree: a pytree node with no leaves."""


class MaskedState(NamedTuple):
    """State of :func:`masked`."""

    inner_state: Any  # the inner transformation's state over the unmasked leaves


def _resolve_mask(mask: Any, tree: Any) -> Any:
    return mask(tree) if callable(mask) else mask


def _mask_tree(tree: Any, mask_tree: Any) -> Any:
    return jax.tree.map(lambda m, t: t if m else MaskedNode(), mask_tree, tree)


def masked(inner: Any, mask: Any) -> GradientTransformation:
    """Applies ``inner`` only where ``mask`` is ``True``; other updates pass through unchanged.

    ``mask`` is a tree of booleans with the structure of the params (or a prefix
    of it), or a function of the params returning one. ``inner`` never sees the
    masked-out leaves, so it allocates no state for them. Follows ``optax.masked``.
    """
    inner = with_extra_args_support(inner)

    def init(params):
        return MaskedState(inner_state=inner.init(_mask_tree(params, _resolve_mask(mask, params))))

    def update(updates, state, params=None, **extra_args):
        mask_tree = _resolve_mask(mask, updates if params is None else params)
        new, inner_state = inner.update(
            _mask_tree(updates, mask_tree), state.inner_state,
            None if params is None else _mask_tree(params, mask_tree), **extra_args,
        )
        merged = jax.tree.map(lambda m, n, u: n if m else u, mask_tree, new, updates,
                              is_leaf=lambda x: isinstance(x, MaskedNode))
        return merged, MaskedState(inner_state=inner_state)

    return GradientTransformation(init, update)


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

