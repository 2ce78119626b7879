"""Param groups by pytree path for the facade: ``Adam(path_groups(tree, {"**/bias": {...}, "encoder/**": None}))``.

torch builds param groups by hand, from lists of parameters picked out of a
model (``model.named_parameters()`` filtered by name); optax labels a tree for
``multi_transform``. :func:`path_groups` does the first from the second's rules:
glob patterns over the ``/``-joined pytree path (the syntax of
:func:`gradtx.path_labels`) or predicates ``(path, leaf) -> bool``, each mapped
to a dict of group options or to ``None`` (:data:`FROZEN`): frozen parameters get
no box, no optimizer state and no update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from gradtx.optim._params import _Wrapper, is_param, is_trainable_array, path_parts
from gradtx.optim._parameter import Parameter
from gradtx import path_matches
from gradtx.tree import path_str

__all__ = ["FROZEN", "ParamGroups", "path_groups"]

Rule = str | Callable[[str, Any], bool]


class _Frozen:
    """The marker of a frozen group (``rules`` may also say ``None``); one instance, :data:`FROZEN`."""

    def __repr__(self) -> str:
        return "FROZEN"

    def __reduce__(self) -> str:
        return "FROZEN"


FROZEN = _Frozen()
"""Marks frozen parameters: as a value of ``rules`` (where ``None`` means the same) or as ``default``."""


class ParamGroups:
    """What :func:`path_groups` returns: param groups for an optimizer and the tree they came from.

    Attributes:
      groups: the param-group dicts, ``{"params": [(name, Parameter), ...], **options}``, one per
        rule that matched parameters (in the order of ``rules``), then the default group. Names are
        the pytree paths joined with ``"."``, as the optimizer names the leaves of a tree.
      tree: ``params`` with each optimised leaf replaced by its :class:`Parameter` box (the same
        objects as in ``groups``); frozen leaves and non-array leaves are left as they are.

    Pass it to any optimizer as its ``params`` (``Adam(path_groups(tree, rules), lr=1e-3)``):
    ``groups`` become the param groups and ``tree`` the structure of ``opt.params`` and of the
    gradients ``opt.step(grads)`` takes (gradients of frozen leaves are ignored).
    ``Adam(pg.groups)`` also works, with ``opt.params`` then one list per group.
    """

    __slots__ = ("groups", "tree")

    def __init__(self, groups: list[dict[str, Any]], tree: Any) -> None:
        self.groups = groups
        self.tree = tree

    def __repr__(self) -> str:
        rows = []
        for group in self.groups:
            options = {k: v for k, v in group.items() if k != "params"}
            names = [name for name, _ in group["params"]]
            rows.append(f"  {options}: {names}")
        return "ParamGroups(\n" + "\n".join(rows) + "\n)"


def _rule_name(rule: Rule) -> str:
    return repr(rule) if isinstance(rule, str) else getattr(rule, "__name__", repr(rule))


def _options(rule: Rule, value: Any) -> dict[str, Any] | _Frozen:
    """A rule's group options as a fresh dict, or FROZEN; anything else is an error naming the rule."""
    if value is None or value is FROZEN:
        return FROZEN
    if not isinstance(value, Mapping):
        raise TypeError(f"path_groups: the rule {_rule_name(rule)} maps to {value!r}; give a dict of group "
                        "options ({} for the optimizer's defaults) or None to freeze the parameters it matches")
    if "params" in value:
        raise ValueError(f"path_groups: the options of rule {_rule_name(rule)} contain 'params'; the rule's "
                         "matches are its params")
    return dict(value)


def path_groups(params: Any, rules: Mapping[Rule, Any] | Sequence[tuple[Rule, Any]], default: Any = None, *,
                strict: bool = True) -> ParamGroups:
    """Param groups for a :mod:`gradtx.optim` optimizer from path patterns or predicates over a pytree.

    Each floating-point or complex array leaf of ``params`` (or :class:`Parameter` box)
    must match exactly one rule. Patterns are globs over the ``/``-joined pytree path,
    as in :func:`gradtx.path_labels` (``"**"`` spans any number of segments, ``"*"``
    one): ``"**/bias"``, ``"encoder/**"``, ``"layers/*/w"``. A predicate is called as
    ``rule(path, leaf)`` with the same path string and the array. A rule maps to a dict
    of group options (``{}``: the optimizer's defaults) or to ``None`` / :data:`FROZEN`:
    frozen parameters get no box, no state and no update, and cost nothing.

    Other leaves (integer arrays, Python numbers, functions, ``None``) are passed over,
    as the optimizer passes them over in any tree.

    Errors (``ValueError``) name the parameters: one that matches two rules (with the
    rules), one that matches none when there is no ``default``, and (with ``strict``)
    a rule that matches nothing, which is usually a misspelt pattern. torch's
    ``param_groups`` would instead need the lists built by hand; optax's
    ``multi_transform`` labels trees the same way (:func:`gradtx.path_labels`).

    Example::

        pg = gradtx.optim.path_groups(params, {
            "**/bias": {"weight_decay": 0.0},     # no decay on biases
            "embed/**": None,                     # frozen
        }, default={})                            # everything else: the optimizer's defaults
        opt = gradtx.optim.AdamW(pg, lr=1e-3, weight_decay=1e-2)

    Args:
      params: a pytree of arrays and/or :class:`Parameter` boxes.
      rules: ``{pattern_or_predicate: options_or_None}``, or a list of pairs (to use a
        pattern twice, or unhashable predicates).
      default: the group of parameters that match no rule: ``None`` (the default) makes
        them an error, a dict of options puts them in a last group with those options
        (``{}`` for the optimizer's defaults), and :data:`FROZEN` freezes them.
      strict: whether a rule that matches no parameter is an error; with ``False`` it is
        left out (no empty group).

    Returns:
      A :class:`ParamGroups` with ``.groups`` (the param-group dicts) and ``.tree`` (``params``
      with the optimised leaves boxed).
    """
    items = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    options = [_options(rule, value) for rule, value in items]
    fallback = None if default is None else _options("default", default)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_param)
    members: list[list[tuple[str | None, Any, int]]] = [[] for _ in range(len(items) + 1)]
    unmatched, ambiguous = [], []
    for index, (key_path, leaf) in enumerate(flat):
        if not (is_param(leaf) or is_trainable_array(leaf)):
            continue
        path = path_str(key_path)
        array = leaf.data if is_param(leaf) else leaf
        hits = [i for i, (rule, _) in enumerate(items) if path_matches(rule, path, array)]
        name = ".".join(path_parts(key_path)) or None
        if len(hits) > 1:
            ambiguous.append(f"'{path}' matches " + ", ".join(_rule_name(items[i][0]) for i in hits))
        elif hits:
            members[hits[0]].append((name, leaf, index))
        elif fallback is not None:
            members[-1].append((name, leaf, index))
        else:
            unmatched.append(path)
    if ambiguous:
        raise ValueError("path_groups: parameters match more than one rule: " + "; ".join(ambiguous[:10]))
    if unmatched:
        raise ValueError(f"path_groups: parameters match no rule and no default was given: {unmatched[:10]}"
                         + (f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else "")
                         + "; add a rule, or default={} (the optimizer's defaults) or default=FROZEN")
    unused = [_rule_name(rule) for (rule, _), found in zip(items, members) if not found]
    if strict and unused:
        paths = [path_str(k) for k, leaf in flat if is_param(leaf) or is_trainable_array(leaf)]
        sample = ", ".join(repr(p) for p in paths[:8]) + (f" (and {len(paths) - 8} more)" if len(paths) > 8 else "")
        raise ValueError(f"path_groups: rules match no parameter: {', '.join(unused)}. The parameters' paths are "
                         f"{sample or 'none'} (flax nnx paths end in '/value': '**/bias/value' or '**/bias/**'); "
                         "fix the pattern, or pass strict=False to allow it")

    wrap = _Wrapper(())
    leaves = [leaf for _, leaf in flat]
    groups = []
    for group_options, found in zip([*options, fallback], members):
        if group_options is FROZEN or not found:
            continue
        boxes = []
        for name, leaf, index in found:
            box: Parameter = wrap(leaf, name)
            leaves[index] = box
            boxes.append((name, box) if name is not None else box)
        groups.append({"params": boxes, **group_options})
    if not groups:
        raise ValueError("path_groups: every parameter is frozen; an optimizer needs at least one to optimize")
    return ParamGroups(groups, jax.tree.unflatten(treedef, leaves))
