"""optax.tree's state lookups under optax's names (re-exported by :mod:`gradtx.tree`): find, replace and map
entries of an optimizer state by name.

A state is searched by the field names of its NamedTuples (``"count"``,
``"mu"``), by the names of the NamedTuple classes themselves
(``"ScaleByAdamState"``) and by dict keys. Paths use :class:`NamedTupleKey` for
NamedTuple fields, as ``optax.tree`` does (optax 0.2.8), so filters written for
optax work here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["NamedTupleKey", "get", "get_all_with_path", "set", "map_params"]


@jax.tree_util.register_pytree_node_class
class _ParamsPlaceholder:
    """Stands for the parameters when a state is built to see where parameter-shaped entries go."""

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux, children
        return cls()


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A path entry naming a NamedTuple's field, printed as ``ClassName.field``."""

    tuple_name: str
    name: str

    def __str__(self):
        return f"{self.tuple_name}.{self.name}"


def map_params(initable: Any, f: Callable[..., Any], state: Any, /, *rest: Any,
               transform_non_params: Callable[..., Any] | None = None,
               is_leaf: Callable[[Any], bool] | None = None) -> Any:
    """Applies ``f`` to the parameter-shaped parts of an optimizer state (moments, traces), as
    ``optax.tree.map_params``.

    Which parts are parameter-shaped is found by running ``initable`` (a
    transformation or its ``init``) on a placeholder; other parts are kept, or
    passed to ``transform_non_params``.

    Args:
      initable: the transformation that made ``state``, or its ``init`` function.
      f: the function for each parameter-shaped leaf (and the matching leaves of ``rest``).
      state: the state to map.
      *rest: trees matching the parameters, mapped along with each parameter-shaped part.
      transform_non_params: the function for every other leaf; ``None`` keeps them.
      is_leaf: passed to ``jax.tree.map`` over the parameter-shaped parts.
    """
    init = initable.init if hasattr(initable, "init") else initable
    with_placeholders = init(_ParamsPlaceholder())

    def map_one(maybe_placeholder, value):
        if isinstance(maybe_placeholder, _ParamsPlaceholder):
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    return jax.tree.map(map_one, with_placeholders, state, is_leaf=lambda v: isinstance(v, _ParamsPlaceholder))


def _is_named_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _has_keys(node: Any, keys: tuple) -> bool:
    if _is_named_tuple(node):
        return any(k in node._fields for k in keys) or type(node).__name__ in keys
    return isinstance(node, dict) and any(k in node for k in keys)


def _leaves_with_named_path(tree: Any, is_leaf: Callable[[Any], bool]) -> list:
    """Leaves (or subtrees where ``is_leaf``) with paths in which NamedTuple fields are :class:`NamedTupleKey`."""
    found = []
    for path, node in jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: is_leaf(x) or _is_named_tuple(x)):
        if is_leaf(node) or not _is_named_tuple(node):
            found.append((path, node))
            continue
        for field in node._fields:
            key = NamedTupleKey(type(node).__name__, field)
            found += [((*path, key, *sub), v) for sub, v in _leaves_with_named_path(getattr(node, field), is_leaf)]
    return found


def _children(path: tuple, node: Any) -> list:
    if _is_named_tuple(node):
        return [((*path, NamedTupleKey(type(node).__name__, f)), getattr(node, f)) for f in node._fields]
    if isinstance(node, dict):
        return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]
    raise ValueError(f"Subtree must be a dict or a NamedTuple. Got {type(node)}")


def _at_key(path: tuple, node: Any, key: Any) -> tuple:
    if _is_named_tuple(node):
        if key == type(node).__name__:
            return path, node
        return (*path, NamedTupleKey(type(node).__name__, key)), getattr(node, key)
    return (*path, jax.tree_util.DictKey(key)), node[key]


def _all_with_path(tree: Any, key: Any) -> list:
    has_key = functools.partial(_has_keys, keys=(key,))
    subtrees = [(p, node) for p, node in _leaves_with_named_path(tree, has_key) if has_key(node)]
    found = [_at_key(p, node, key) for p, node in subtrees]
    for path, subtree in subtrees:
        for child_path, child in _children(path, subtree):
            found += [((*child_path, *p), v) for p, v in _all_with_path(child, key)]
    return found


def get_all_with_path(tree: Any, key: Any, filtering: Callable[[tuple, Any], bool] | None = None) -> list:
    """Every entry of ``tree`` named ``key`` (a NamedTuple field, a NamedTuple class name or a dict key), with its
    path, as ``optax.tree.get_all_with_path``.

    Args:
      tree: an optimizer state or any pytree of NamedTuples and dicts.
      key: the name to look for.
      filtering: ``(path, value) -> bool``; only the entries for which it is true are kept.

    Returns:
      A list of ``(path, value)``.
    """
    found = _all_with_path(tree, key)
    return [(p, v) for p, v in found if filtering(p, v)] if filtering else found


def get(tree: Any, key: Any, default: Any = None, filtering: Callable[[tuple, Any], bool] | None = None) -> Any:
    """The one entry of ``tree`` named ``key`` (``default`` if none), as ``optax.tree.get``.

    Example: ``gradtx.tree.get(state, "count")``.

    Raises:
      KeyError: if several entries have that name (narrow them with ``filtering``).
    """
    found = get_all_with_path(tree, key, filtering=filtering)
    if len(found) > 1:
        raise KeyError(f"Found multiple values for '{key}' in {tree}; "
                       "pass filtering=(path, value) -> bool to pick one.")
    return found[0][1] if found else default


def _key_name(entry: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    raise KeyError(f"Tree key '{entry}' of type '{type(entry)}' not valid.")


def set(tree: Any, filtering: Callable[[tuple, Any], bool] | None = None, /, **kwargs: Any) -> Any:  # noqa: A001
    """``tree`` with the entries named by ``kwargs`` replaced by their values, as ``optax.tree.set``.

    Example: ``gradtx.tree.set(state, learning_rate=0.1)`` (on an ``inject_hyperparams`` state).

    Raises:
      KeyError: if a name is not found (given ``filtering``, none of its entries passes).
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            where = " given the filtering operation" if filtering else ""
            raise KeyError(f"Found no values matching '{key}'{where} in {tree}")
    has_any = functools.partial(_has_keys, keys=tuple(kwargs))

    def replace(path, node):
        if not has_any(node):
            return node
        if _is_named_tuple(node) and type(node).__name__ in kwargs and (filtering is None or filtering(path, node)):
            return kwargs[type(node).__name__]
        children = {}
        for child_path, child in _children(path, node):
            name = _key_name(child_path[-1])
            if name in kwargs and (filtering is None or filtering(child_path, child)):
                children[name] = kwargs[name]
            elif isinstance(child, (dict, list, tuple)):
                children[name] = replace(child_path, child)
            else:
                children[name] = child
        return node._replace(**children) if _is_named_tuple(node) else children

    treedef = jax.tree.structure(tree, is_leaf=has_any)
    return treedef.unflatten(replace(p, node) for p, node in _leaves_with_named_path(tree, has_any))
