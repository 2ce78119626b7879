"""Parameter groups by pytree path: glob patterns or predicates over names like ``encoder/layers/0/bias``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from gradtx._tree import path_str

__all__ = ["path_matches", "path_labels", "path_mask"]

Rule = str | Callable[[str, Any], bool]


def _glob_to_regex(pattern: str) -> re.Pattern:
    """``**`` spans any number of path segments (also none), ``*`` and ``?`` stay inside one segment."""
    parts = pattern.strip("/").split("/")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += "(?:.*)" if last else "(?:[^/]+/)*"
        else:
            segment = fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z")
            segment = segment.replace(".*", "[^/]*").replace("(?s:", "(?:")
            regex += segment + ("" if last else "/")
    return re.compile(f"^{regex}$")


def path_matches(rule: Rule, path: str, leaf: Any = None) -> bool:
    """Whether a parameter at ``path`` matches a glob pattern or a predicate ``(path, leaf) -> bool``."""
    if callable(rule):
        return bool(rule(path, leaf))
    return bool(_glob_to_regex(rule).match(path))


def path_labels(params: Any, rules: Mapping[Rule, Any] | Sequence[tuple[Rule, Any]], default: Any = None) -> Any:
    """A tree of group labels for ``params`` from path patterns, for :func:`gradtx.multi_transform`.

    Each parameter must match exactly one rule; a parameter that matches two is
    an error naming it and the rules, and one that matches none gets ``default``
    (an error naming it when there is no default).

    Example::

        labels = gradtx.path_labels(params, {"**/bias": "no_decay", "encoder/**": "frozen"}, default="decay")
        tx = gradtx.multi_transform({"decay": gradtx.adamw(1e-3), "no_decay": gradtx.adam(1e-3),
                                     "frozen": gradtx.set_to_zero()}, labels)

    Args:
      params: the parameter tree.
      rules: ``{pattern_or_predicate: label}`` or a list of ``(pattern_or_predicate, label)``.
        Patterns are globs over ``/``-joined paths: ``**`` spans segments, ``*`` one segment.
      default: the label of parameters no rule matches.
    """
    items = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    labels, unmatched = [], []
    for key_path, leaf in flat:
        path = path_str(key_path)
        hits = [(rule, label) for rule, label in items if path_matches(rule, path, leaf)]
        if len(hits) > 1:
            names = [r if isinstance(r, str) else getattr(r, "__name__", repr(r)) for r, _ in hits]
            raise ValueError(f"parameter '{path}' matches more than one group: {names}")
        if hits:
            labels.append(hits[0][1])
        elif default is not None:
            labels.append(default)
        else:
            unmatched.append(path)
            labels.append(None)
    if unmatched:
        raise ValueError(f"parameters match no group and no default was given: {unmatched[:10]}")
    return jax.tree.unflatten(treedef, labels)


def path_mask(rule: Rule) -> Callable[[Any], Any]:
    """A mask function for :func:`gradtx.masked` / ``mask=`` arguments: ``True`` where the path matches.

    Example: ``gradtx.adamw(1e-3, mask=gradtx.path_mask(lambda path, x: x.ndim > 1))``
    decays matrices only.
    """

    def mask(params):
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        return jax.tree.unflatten(treedef, [path_matches(rule, path_str(p), leaf) for p, leaf in flat])

    return mask
