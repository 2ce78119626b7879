"""What an optimizer accepts as ``params``, turned into Parameter boxes, names and the tree ``opt.params`` returns."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, SequenceKey

from gradtx.optim._parameter import Parameter
from gradtx.tree import path_str

__all__ = ["GroupParams", "split_param_groups", "group_params", "is_param", "path_parts", "tree_values", "grads_for",
           "ordered_flatten"]

SET_MSG = ("optimizer parameters need to be organized in ordered collections, but the ordering of tensors in "
           "sets will change between runs. Please use a list instead.")
EMPTY_MSG = "optimizer got an empty parameter list"


def is_param(x: Any) -> bool:
    return isinstance(x, Parameter)


def is_array(x: Any) -> bool:
    """A JAX or NumPy array (any dtype); Python scalars are not parameters."""
    return isinstance(x, (jax.Array, np.ndarray))


def is_trainable_array(x: Any) -> bool:
    """Arrays an optimizer can update: floating point or complex."""
    return is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)


class GroupParams(NamedTuple):
    """One group's parameters: the boxes in order, their names (or None) and the tree for ``opt.params``."""

    params: list[Parameter]
    names: list[str] | None
    tree: Any  # a pytree whose parameter leaves are the boxes; other leaves are kept as given


def _is_group(x: Any) -> bool:
    return isinstance(x, Mapping) and "params" in x


def split_param_groups(params: Any) -> tuple[list[dict], bool]:
    """The constructor's ``params`` as a list of group dicts, and whether it was one group given without a dict.

    A list of dicts that have a ``"params"`` key is a list of param groups (torch's
    rule); anything else (an iterable of parameters or arrays, ``(name, param)``
    pairs, a dict or any other pytree of arrays) is one group.
    """
    if isinstance(params, (set, frozenset)):
        raise TypeError(SET_MSG)
    if isinstance(params, Iterator):
        params = list(params)
    if isinstance(params, (list, tuple)):
        if len(params) == 0:
            raise ValueError(EMPTY_MSG)
        for i, entry in enumerate(params):
            if isinstance(entry, Mapping) and "params" not in entry and entry and not any(
                    is_param(x) or is_array(x) for x in jax.tree.leaves(entry, is_leaf=is_param)):
                raise KeyError(f"param group {i} has no 'params' entry (its keys: {sorted(map(str, entry))}); "
                               "a param group is a dict {'params': [...], 'lr': ...}")
        groups = [_is_group(g) for g in params]
        if all(groups):
            return [dict(g) for g in params], False
        if any(groups):
            raise TypeError("params mixes param-group dicts (with a 'params' key) and parameters; "
                            "give either a list of parameters or a list of param-group dicts")
    return [{"params": params}], True


def path_parts(path: tuple) -> tuple[str, ...]:
    """A pytree key path as strings: dict keys, sequence indices and attribute names."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return tuple(parts)


def _join(path: tuple) -> str:
    return ".".join(path_parts(path))


def _is_named_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)


def _is_flat_entry(x: Any) -> bool:
    return is_param(x) or is_array(x) or _is_named_pair(x)


def _is_container(x: Any) -> bool:
    return not jax.tree_util.treedef_is_leaf(jax.tree.structure(x, is_leaf=is_param))


class Taken:
    """The boxes an optimizer's param groups hold and their arrays' ids, kept up to date as groups are added.

    Built once per :meth:`Optimizer.add_param_group` call (or once for all the
    groups a constructor adds), so that adding thousands of groups does not
    walk every earlier group each time.
    """

    def __init__(self, groups: Iterable[dict] = ()) -> None:
        self.boxes: set[Parameter] = set()
        self.buffers: set[int] = set()
        for group in groups:
            self.add(group["params"])

    def add(self, params: list[Parameter]) -> None:
        self.boxes.update(params)
        self.buffers.update(id(p.data) for p in params)


class _Wrapper:
    """Boxes arrays; an array already boxed in this optimizer is copied, since two boxes must not share a buffer."""

    def __init__(self, taken: Iterable[Parameter] | Taken) -> None:
        self.others = taken.buffers if isinstance(taken, Taken) else {id(p.data) for p in taken}  # other groups'
        self.buffers: set[int] = set()  # the arrays boxed in this group
        self.listed: set[int] = set()  # the arrays listed in this group

    def listed_once(self, x: Any) -> Any:
        """Refuses an array listed twice in a list of parameters, as torch refuses a tensor listed twice."""
        if is_array(x) and not is_param(x):
            if id(x) in self.others:
                raise ValueError("some parameters appear in more than one parameter group")
            if id(x) in self.listed:
                raise ValueError("optimizer contains a parameter group with duplicate parameters: the same array "
                                 "is listed twice; list each parameter once (torch would update it twice per step)")
            self.listed.add(id(x))
        return x

    def __call__(self, x: Any, name: str | None) -> Parameter:
        if is_param(x):
            if name is not None and x.name is None:
                x.name = name
            self.buffers.add(id(x.data))
            return x
        if not is_trainable_array(x):
            kind = f"an array of dtype {x.dtype}" if is_array(x) else type(x).__name__
            raise TypeError(f"optimizer can only optimize floating point or complex arrays (or "
                            f"gradtx.optim.Parameter boxes), but one of the params is {kind}")
        data = jnp.asarray(x)
        if id(data) in self.buffers or id(data) in self.others:  # the same array twice: the second box gets a copy
            data = jnp.array(data, copy=True)
        self.buffers.add(id(data))
        return Parameter(data, name)


def group_params(params: Any, taken: Iterable[Parameter] | Taken = ()) -> GroupParams:
    """Boxes one group's ``params`` (see :class:`gradtx.optim.Optimizer` for the accepted forms).

    ``taken`` are the boxes other groups hold: an array whose buffer one of them
    holds is copied into its own box.
    """
    wrap = _Wrapper(taken)
    if isinstance(params, (set, frozenset)):
        raise TypeError(SET_MSG)
    if isinstance(params, Iterator):
        params = list(params)
    if is_param(params) or is_array(params):
        box = wrap(params, None)
        return GroupParams([box], None, box)
    if isinstance(params, (list, tuple)) and params and all(_is_flat_entry(x) for x in params):
        named = [_is_named_pair(x) for x in params]
        if any(named) and not all(named):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")
        if all(named):
            names = [name for name, _ in params]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"optimizer params have duplicate names: {duplicates}")
            boxes = [wrap(wrap.listed_once(x), name) for name, x in params]
            return GroupParams(boxes, names, dict(zip(names, boxes)))
        boxes = [wrap(wrap.listed_once(x), None) for x in params]  # unnamed, as torch's list (boxes may be named)
        return GroupParams(boxes, None, list(boxes))
    if isinstance(params, (list, tuple)) and not all(_is_flat_entry(x) or _is_container(x) for x in params):
        bad = next(x for x in params if not (_is_flat_entry(x) or _is_container(x)))
        raise TypeError(f"optimizer can only optimize arrays (or gradtx.optim.Parameter boxes), "
                        f"but one of the params is {type(bad).__name__}")
    # Any other pytree: box its float/complex array leaves, name them by path, pass other leaves over.
    leaves, rebuild = ordered_flatten(params)
    boxes, names, new_leaves = [], [], []
    for path, leaf in leaves:
        if is_param(leaf) or is_trainable_array(leaf):
            box = wrap(leaf, _join(path) or None)
            boxes.append(box)
            names.append(box.name)
            leaf = box
        new_leaves.append(leaf)
    if not boxes:
        if not isinstance(params, (Mapping, list, tuple)):
            raise TypeError("params argument given to the optimizer should be an iterable of arrays, "
                            f"Parameters or dicts, or a pytree of arrays, but got {type(params).__name__}")
        raise ValueError(EMPTY_MSG)
    return GroupParams(boxes, names if all(n is not None for n in names) else None, rebuild(new_leaves))


# --- a pytree's leaves in the order the user wrote them ---------------------------------------------------------
#
# jax flattens a dict in sorted key order; torch numbers a model's parameters in registration order, and a
# state dict loaded by position pairs torch's index i with our parameter i. So the boxes of a tree are
# numbered as its dicts iterate (insertion order, which is how a dict literal, a flax params dict and
# torch's named_parameters() list them); other nodes (lists, tuples, NamedTuples, dataclasses, equinox
# modules) keep jax's order, which is their field order. The rebuilt tree keeps the dicts' order too.

_ORDERED_DICTS = (dict, OrderedDict)


def _children(node: Any) -> tuple[list[tuple[Any, Any]], Callable[[list], Any]]:
    """``node``'s children as ``(key entry, child)`` in the user's order, and how to rebuild it from them."""
    if type(node) in _ORDERED_DICTS:
        return [(DictKey(k), v) for k, v in node.items()], lambda values: type(node)(zip(node.keys(), values))
    if type(node) in (list, tuple):
        return [(SequenceKey(i), v) for i, v in enumerate(node)], type(node)
    pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    children = [(path[0], child) for path, child in pairs]
    if isinstance(node, Mapping):  # a mapping jax flattens sorted (FrozenDict...): take its iteration order
        position = {k: i for i, k in enumerate(node.keys())}
        keys = [getattr(entry, "key", None) for entry, _ in children]
        if len(position) == len(children) and all(_hashable(k) and k in position for k in keys):
            order = sorted(range(len(children)), key=lambda i: position[keys[i]])

            def rebuild(values: list) -> Any:
                by_child = dict(zip(order, values))
                return treedef.unflatten([by_child[i] for i in range(len(children))])

            return [children[i] for i in order], rebuild
    return children, treedef.unflatten


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _is_leaf(node: Any) -> bool:
    if is_param(node) or isinstance(node, (jax.Array, np.ndarray)) or type(node) in (int, float, complex, bool, str):
        return True
    if type(node) in (dict, OrderedDict, list, tuple) or node is None:
        return False
    treedef = jax.tree.structure(node, is_leaf=is_param)
    return treedef.num_nodes == 1 and treedef.num_leaves == 1


def ordered_flatten(tree: Any) -> tuple[list[tuple[tuple, Any]], Callable[[list], Any]]:
    """``tree``'s leaves (``Parameter`` boxes are leaves) as ``(key path, leaf)`` in the user's order.

    Dicts are walked in insertion order, other nodes in jax's order; the second
    value rebuilds the tree (dicts in their original order) from new leaves
    given in that order.
    """
    if _is_leaf(tree):
        return [((), tree)], lambda values: values[0]
    children, rebuild = _children(tree)
    leaves: list[tuple[tuple, Any]] = []
    spans, rebuilders = [], []
    for entry, child in children:
        sub, sub_rebuild = ordered_flatten(child)
        spans.append((len(leaves), len(leaves) + len(sub)))
        rebuilders.append(sub_rebuild)
        leaves += [((entry, *path), leaf) for path, leaf in sub]

    def rebuild_all(values: list) -> Any:
        return rebuild([r(values[a:b]) for r, (a, b) in zip(rebuilders, spans)])

    return leaves, rebuild_all


def _ordered_map(fn: Callable[[Any], Any], node: Any) -> Any:
    """``fn`` on every leaf (boxes are leaves), dicts rebuilt in their own order; ``ordered_flatten``'s walk."""
    kind = type(node)
    if kind in _ORDERED_DICTS:
        return kind((k, _ordered_map(fn, v)) for k, v in node.items())
    if kind in (list, tuple):
        return kind(_ordered_map(fn, v) for v in node)
    if node is None:
        return None
    if _is_leaf(node):
        return fn(node)
    children, rebuild = _children(node)
    return rebuild([_ordered_map(fn, child) for _, child in children])


def tree_values(tree: Any) -> Any:
    """The tree with each box replaced by its current array (dicts keep their order)."""
    return _ordered_map(lambda x: x.data if is_param(x) else x, tree)


def _structure_difference(tree: Any, grads: Any) -> str:
    """Where ``grads`` departs from the parameters' ``tree``, by tree paths (never the arrays themselves)."""
    ours = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_param)[0]]
    theirs = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(grads, is_leaf=lambda x: x is None)[0]]
    missing = [p for p in ours if p not in theirs]
    extra = [p for p in theirs if p not in ours]
    parts = [f"opt.params is a {type(tree).__name__} with {len(ours)} parameter(s) at {ours[:8]}",
             f"grads a {type(grads).__name__} with {len(theirs)} leaf(s) at {theirs[:8]}"]
    if missing:
        parts.append(f"grads lack {missing[:8]}")
    if extra:
        parts.append(f"grads have {extra[:8]}, which opt.params does not")
    if not missing and not extra:
        parts.append("the paths agree but the containers differ (a list for a tuple, a dict for another mapping)")
    return "; ".join(parts)


def grads_for(tree: Any, grads: Any) -> list[tuple[Parameter, Any]]:
    """Pairs each box of ``tree`` with the leaf of ``grads`` at the same place (``None`` allowed)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_param)
    try:
        flat = treedef.flatten_up_to(grads)
    except (ValueError, TypeError):
        raise ValueError(
            "grads must have the structure of `opt.params` (the structure the parameters were given in), "
            f"with None where a parameter has no gradient: {_structure_difference(tree, grads)}"
        ) from None
    return [(leaf, g) for leaf, g in zip(leaves, flat) if is_param(leaf)]


def positional_order_error(groups: list[dict], saved_groups: list[dict]) -> str | None:
    """Why pairing saved parameters with ``groups`` by position would misassign them, or ``None``.

    When both sides name their parameters (``param_names``) and a group holds the
    same names in another order, position ``i`` of the saved dict is not this
    optimizer's parameter ``i``: the message says which and how to load by name.
    """
    for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
        ours, theirs = group.get("param_names"), saved.get("param_names")
        if ours is None or theirs is None or list(ours) == list(theirs) or sorted(ours) != sorted(theirs):
            continue
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        return (f"param group {gi}: the state dict's parameter {i} is {theirs[i]!r} but this optimizer's parameter "
                f"{i} is {ours[i]!r}; loading by position would give one parameter's state to another. Load by name: "
                "opt.load_state_dict(state_dict, match='name') (a torch state dict without param_names gets them "
                "from gradtx.optim.from_torch_state_dict(sd, names=[n for n, _ in model.named_parameters()]))")
    return None
