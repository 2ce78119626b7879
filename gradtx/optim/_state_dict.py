"""``state_dict()`` and ``load_state_dict()`` in torch's layout, with loading by position or by name.

The layout is torch.optim's::

    {"state": {index: {"step": array(3., float32), "exp_avg": array, ...}},
     "param_groups": [{"lr": 0.001, ..., "params": [0, 1], "param_names": ["w", "b"]}]}

with NumPy arrays in place of tensors, so a torch state dict whose tensors were
converted with ``.numpy()`` loads here and continues as torch would, and ours
loads into torch after ``torch.from_numpy``. Loading checks everything (group
count and sizes, every entry's shape and dtype, the options) before it changes
anything.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine

if TYPE_CHECKING:
    from gradtx.optim.optimizer import Optimizer
    from gradtx.optim.parameter import Parameter

__all__ = ["LoadResult", "load_state_dict", "state_dict"]


class LoadResult(NamedTuple):
    """What ``load_state_dict`` could not pair, as torch's ``Module.load_state_dict`` reports it."""

    missing_keys: list[str]  # our parameters that got no saved state entry
    unexpected_keys: list[str]  # saved entries that matched no parameter here


def _to_numpy(value: Any) -> Any:
    """A copy with every array (also inside lists, tuples and dicts, as LBFGS keeps its history) as NumPy."""
    if isinstance(value, (jax.Array, np.ndarray)):
        return np.array(value, copy=True)
    if type(value) in (list, tuple):
        return type(value)(_to_numpy(v) for v in value)
    if type(value) is dict:
        return {k: _to_numpy(v) for k, v in value.items()}
    return copy.deepcopy(value)


def state_dict(opt: Optimizer) -> dict[str, Any]:
    """The optimizer's state in torch's layout, every array a NumPy copy (safe from donation)."""
    for hook in list(opt._optimizer_state_dict_pre_hooks.values()):
        hook(opt)
    index: dict[int, int] = {}
    groups = []
    for group in opt.param_groups:
        packed = {k: (list(v) if k == "param_names" else v) for k, v in group.items() if k != "params"}
        for p in group["params"]:
            index.setdefault(id(p), len(index))
        packed["params"] = [index[id(p)] for p in group["params"]]
        groups.append(packed)
    state = {index[id(p)]: {k: _to_numpy(v) for k, v in s.items()}
             for p, s in opt.state.items() if id(p) in index and s}
    result = {"state": state, "param_groups": groups}
    for hook in list(opt._optimizer_state_dict_post_hooks.values()):
        out = hook(opt, result)
        if out is not None:
            result = out
    return result


def _param_names(groups: list[dict], where: str) -> list[str]:
    names = []
    for i, group in enumerate(groups):
        if "param_names" not in group:
            raise ValueError(f"match='name' needs parameter names, but {where} param group {i} has no "
                             "'param_names': give the parameters as (name, param) pairs or as a pytree")
        names += list(group["param_names"])
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"match='name': {where} has repeated parameter names {repeated}")
    return names


def _pair_by_position(opt: Optimizer, saved_groups: list[dict]) -> tuple[dict, list[int | None]]:
    groups = opt.param_groups
    if len(groups) != len(saved_groups):
        raise ValueError("loaded state dict has a different number of parameter groups")
    if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
        raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
    ids = [i for s in saved_groups for i in s["params"]]
    params = [p for g in groups for p in g["params"]]
    return dict(zip(ids, params)), list(range(len(groups)))


def _pair_by_name(opt: Optimizer, saved_groups: list[dict], strict: bool) -> tuple[dict, list[int | None], list, list]:
    ours = _param_names(opt.param_groups, "the optimizer")
    theirs = _param_names(saved_groups, "the state dict")
    saved_at = {}
    for j, group in enumerate(saved_groups):
        for name, i in zip(group["param_names"], group["params"]):
            saved_at[name] = (i, j)
    id_map, group_map = {}, []
    for gi, group in enumerate(opt.param_groups):
        sources = set()
        for name, p in zip(group["param_names"], group["params"]):
            if name in saved_at:
                i, j = saved_at[name]
                id_map[i] = p
                sources.add(j)
        if len(sources) > 1:
            if strict:
                raise ValueError(f"match='name': the parameters of param group {gi} come from saved param groups "
                                 f"{sorted(sources)}, whose options differ; regroup them or pass strict=False "
                                 "to keep this group's current options")
            sources = set()
        group_map.append(sources.pop() if sources else None)
    missing = [n for n in ours if n not in saved_at]
    unexpected = [n for n in theirs if n not in set(ours)]
    if strict and (missing or unexpected):
        raise ValueError(f"match='name': parameters without saved state: {missing}; saved parameters not in this "
                         f"optimizer: {unexpected}. Pass strict=False to load the rest.")
    return id_map, group_map, missing, unexpected


def _convert_entry(opt: Optimizer, group: dict, p: Parameter, entry: Any, where: str) -> dict:
    """One parameter's saved state, as arrays of the shapes and dtypes this optimizer keeps."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: the state entry must be a dict of arrays, got {type(entry).__name__}")
    cls = type(opt)
    expected = _engine.state_entries(cls, group, p)
    sharding = getattr(p.data, "sharding", None)
    out = {}
    for key, value in entry.items():
        if value is None and (key in expected or key == cls.step_name):
            continue  # torch writes None for a buffer not created yet: absent
        if key == cls.step_name:
            step = np.asarray(value)
            if step.size != 1 or not jnp.issubdtype(step.dtype, jnp.number):
                raise ValueError(f"{where}: '{key}' must be a number, got {value!r}")
            out[key] = jnp.asarray(step.reshape(()), jnp.float32)
            continue
        if key in expected:
            shape, dtype = expected[key]
        elif isinstance(value, (np.ndarray, jax.Array)) or hasattr(value, "__array__"):
            shape, dtype = None, p.dtype if jnp.issubdtype(np.asarray(value).dtype, jnp.inexact) else None
        else:  # not an array: kept as given, as torch keeps it
            out[key] = copy.deepcopy(value)
            continue
        array = np.asarray(value)
        if not jnp.issubdtype(array.dtype, jnp.number):
            raise ValueError(f"{where}: '{key}' must be a numeric array, got dtype {array.dtype}")
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise ValueError(f"{where}: '{key}' has shape {tuple(array.shape)}, but this optimizer keeps it with "
                             f"shape {tuple(shape)}")
        if dtype is not None and np.iscomplexobj(array) and not jnp.issubdtype(dtype, jnp.complexfloating):
            raise ValueError(f"{where}: '{key}' is complex ({array.dtype}) but the parameter is real ({p.dtype})")
        converted = jnp.asarray(array, dtype=dtype)
        if sharding is not None and converted.shape == p.data.shape:
            converted = jax.device_put(converted, sharding)
        out[key] = converted
    return out


def load_state_dict(opt: Optimizer, state_dict: Mapping, match: str = "position", strict: bool = True) -> LoadResult:
    """Loads ``state_dict`` into ``opt`` (see :meth:`gradtx.optim.Optimizer.load_state_dict`)."""
    if match not in ("position", "name"):
        raise ValueError(f"match must be 'position' or 'name', got {match!r}")
    state_dict = dict(state_dict)
    for hook in list(opt._optimizer_load_state_dict_pre_hooks.values()):
        out = hook(opt, state_dict)
        if out is not None:
            state_dict = out
    if "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("a state dict has the keys 'state' and 'param_groups' (as state_dict() returns), got "
                         f"{sorted(state_dict)}")
    saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
    missing: list[str] = []
    unexpected: list[str] = []
    if match == "position":
        id_map, group_map = _pair_by_position(opt, saved_groups)
    else:
        id_map, group_map, missing, unexpected = _pair_by_name(opt, saved_groups, strict)

    new_groups = []
    for group, j in zip(opt.param_groups, group_map):
        if j is None:
            new = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
        else:  # the saved options, in the saved order; names: the saved ones by position, ours by name
            saved = saved_groups[j]
            names = group.get("param_names") if match == "name" else saved.get("param_names")
            names = group.get("param_names") if names is None else names
            new = {} if names is None or "param_names" in saved else {"param_names": names}
            for k, v in saved.items():
                if k == "param_names" and names is not None:
                    new[k] = names
                elif k not in ("params", "param_names"):
                    new[k] = v
        for name, default in opt.defaults.items():
            new.setdefault(name, default)
        new = {"params": group["params"], **new}
        type(opt).check_options(new)
        new_groups.append(new)

    group_of = {p: g for g in new_groups for p in g["params"]}
    state: defaultdict = defaultdict(dict)
    paired = set(id_map.values())
    for p, entry in opt.state.items():  # with match="name", parameters without saved state keep theirs
        if p not in paired and entry:
            state[p] = entry
    for key, entry in state_dict["state"].items():
        if key not in id_map:
            if match == "position" and strict:
                raise ValueError(f"the state dict has state for parameter index {key!r}, which is in none of its "
                                 "param groups")
            if match == "position":
                unexpected.append(str(key))
            continue
        p = id_map[key]
        where = f"state of {opt._describe(p)} (saved index {key})"
        converted = _convert_entry(opt, group_of[p], p, entry, where)
        if converted:
            state[p] = converted
    opt.__setstate__({"state": state, "param_groups": new_groups})
    for hook in list(opt._optimizer_load_state_dict_post_hooks.values()):
        hook(opt)
    return LoadResult(missing, unexpected)
