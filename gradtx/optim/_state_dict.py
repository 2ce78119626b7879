"""``state_dict()`` and ``load_state_dict()`` in torch's layout, with loading by position or by name.

The layout is torch.optim's::

    {"state": {index: {"step": array(3., float32), "exp_avg": array, ...}},
     "param_groups": [{"lr": 0.001, ..., "params": [0, 1], "param_names": ["w", "b"]}]}

with NumPy arrays in place of tensors, so a torch state dict whose tensors were
converted with ``.numpy()`` loads here and continues as torch would, and ours
loads into torch after ``torch.from_numpy``. Loading checks everything (the
dict's structure, group count and sizes, parameter indices and names, every
entry's shape and dtype, the type and range of every option) before it changes
anything, and raises only ``ValueError``, ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim import _engine, _load_checks
from gradtx.optim._params import positional_order_error
from gradtx.optim._options import UNKNOWN, is_index, check_option, short

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer
    from gradtx.optim._parameter import Parameter

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
    problem = positional_order_error(groups, saved_groups)
    if problem:
        raise ValueError(problem)
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


def _is_real_number(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))


def _cast(array: np.ndarray, dtype: Any, where: str, key: str) -> jax.Array:
    """``array`` in ``dtype``; finite values that do not fit (1e300 in float32) are an error, not infinities."""
    with np.errstate(all="ignore"):
        converted = array.astype(dtype)
        overflow = np.isfinite(array) & ~np.isfinite(converted)
    if np.any(overflow):
        raise ValueError(f"{where}: '{key}' has finite values that overflow {np.dtype(dtype).name}, the dtype this "
                         "optimizer keeps it in")
    return jnp.asarray(converted)


def _convert_entry(opt: Optimizer, group: dict, p: Parameter, entry: Any, where: str) -> dict:
    """One parameter's saved state, as arrays of the shapes and dtypes this optimizer keeps."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: the state entry must be a dict of arrays, got {type(entry).__name__}")
    cls = type(opt)
    try:
        expected = _engine.state_entries(cls, group, p)
    except (ValueError, TypeError, KeyError):
        raise
    except Exception as error:
        raise ValueError(f"{where}: the loaded options do not build this optimizer's state: {error}") from error
    sharding = getattr(p.data, "sharding", None)
    out = {}
    for key, value in entry.items():
        if value is None and (key in expected or key == cls.step_name):
            continue  # torch writes None for a buffer not created yet: absent
        if key == cls.step_name:
            step = np.asarray(value)
            if step.size != 1 or not _is_real_number(step.dtype):
                raise ValueError(f"{where}: '{key}' must be a number, got {value!r}")
            out[key] = _cast(step.reshape(()), np.float32, where, key)
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
        converted = jnp.asarray(array) if dtype is None else _cast(array, dtype, where, key)
        if sharding is not None and converted.shape == p.data.shape:
            converted = jax.device_put(converted, sharding)
        out[key] = converted
    return out


def _check_layout(state_dict: Any) -> None:
    """The structure of a state dict (types, keys, indices, names), checked before anything reads it."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"a state dict is a dict with the keys 'state' and 'param_groups' (as state_dict() returns), "
                        f"got {type(state_dict).__name__}")
    if "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("a state dict has the keys 'state' and 'param_groups' (as state_dict() returns), got "
                         f"{[short(k) for k in state_dict]}")
    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, (list, tuple)):
        raise TypeError(f"the state dict's 'param_groups' must be a list of dicts, got {type(groups).__name__}")
    if not isinstance(state, Mapping):
        raise TypeError(f"the state dict's 'state' must be a dict {{index: {{name: array}}}}, got {type(state).__name__}")
    for i, group in enumerate(groups):
        where = f"param group {i} of the state dict"
        if not isinstance(group, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(group).__name__}")
        keys = [k for k in group if not isinstance(k, str)]
        if keys:
            raise TypeError(f"{where} has keys that are not option names (strings): {short(keys)}")
        if "params" not in group:
            raise KeyError(f"{where} has no 'params' (the indices of its parameters)")
        params = group["params"]
        if not isinstance(params, (list, tuple)) or not all(is_index(x) for x in params):
            raise TypeError(f"{where}: 'params' must be a list of integer indices, got {short(params)}")
        names = group.get("param_names", [])
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"{where}: 'param_names' must be a list of strings, got {short(names)}")
    for key, entry in state.items():
        if not isinstance(entry, Mapping):
            raise TypeError(f"the state dict's state for index {short(key)} must be a dict of arrays, got "
                            f"{type(entry).__name__}")
        names = [k for k in entry if not isinstance(k, str)]
        if names:
            raise TypeError(f"the state dict's state for index {short(key)} has keys that are not names (strings): "
                            f"{short(names)}")


def _check_indices(groups: list[dict]) -> None:
    """Each saved parameter index once, and one name per index (after the count and sizes, torch's first checks)."""
    seen: set = set()
    for i, group in enumerate(groups):
        params = group["params"]
        repeated = sorted({int(x) for x in params if x in seen or list(params).count(x) > 1})
        if repeated:
            raise ValueError(f"param group {i} of the state dict: parameter indices {repeated} appear more than "
                             "once in the param groups")
        seen.update(params)
        if "param_names" in group and len(group["param_names"]) != len(params):
            raise ValueError(f"param group {i} of the state dict has {len(group['param_names'])} param_names for "
                             f"{len(params)} params")


def _checked_group(opt: Optimizer, new: dict, group: dict, i: int) -> dict:
    """The options loaded for group ``i``, checked by type against the group's own and by the class's checks."""
    where = f"param group {i} of the state dict"
    for name, value in new.items():
        if name in ("params", "param_names"):
            continue
        reference = group[name] if name in group else opt.defaults.get(name, UNKNOWN)
        check_option(type(opt), name, value, reference, where)
    try:
        type(opt).check_options(new)
    except (ValueError, TypeError, KeyError):
        raise
    except Exception as error:  # a class's own check may raise torch's RuntimeError: the same, as a ValueError
        raise ValueError(f"{where}: {error}") from error
    return new


def load_state_dict(opt: Optimizer, state_dict: Mapping, match: str = "position", strict: bool = True) -> LoadResult:
    """Loads ``state_dict`` into ``opt`` (see :meth:`gradtx.optim.Optimizer.load_state_dict`)."""
    if match not in ("position", "name"):
        raise ValueError(f"match must be 'position' or 'name', got {match!r}")
    _check_layout(state_dict)
    state_dict = dict(state_dict)
    for hook in list(opt._optimizer_load_state_dict_pre_hooks.values()):
        out = hook(opt, state_dict)
        if out is not None:
            _check_layout(out)
            state_dict = out
    try:
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
    except Exception as error:
        raise TypeError(f"the state dict's param_groups cannot be copied: {error}") from error
    missing: list[str] = []
    unexpected: list[str] = []
    if match == "position":
        id_map, group_map = _pair_by_position(opt, saved_groups)
        _check_indices(saved_groups)
    else:
        _check_indices(saved_groups)
        id_map, group_map, missing, unexpected = _pair_by_name(opt, saved_groups, strict)

    new_groups = []
    for gi, (group, j) in enumerate(zip(opt.param_groups, group_map)):
        if j is None:
            new = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
        else:  # the saved options, in the saved order; names: the saved ones by position, ours by name
            saved = saved_groups[j]
            _load_checks.check_saved_group(opt, saved, j)
            names = group.get("param_names") if match == "name" else saved.get("param_names")
            names = group.get("param_names") if names is None else names
            new = {} if names is None or "param_names" in saved else {"param_names": names}
            for k, v in saved.items():
                if k == "param_names" and names is not None:
                    new[k] = names
                elif k not in ("params", "param_names"):
                    new[k] = v
        added = opt.__dict__.get("_added_defaults", ())  # torch's "differentiable", put in the defaults at a load
        for name, default in opt.defaults.items():
            if name not in added:
                new.setdefault(name, default)
        new_groups.append(_checked_group(opt, {"params": group["params"], **new}, group, gi if j is None else j))

    group_of = {p: g for g in new_groups for p in g["params"]}
    state: defaultdict = defaultdict(dict)
    paired = set(id_map.values())
    for p, entry in opt.state.items():  # with match="name", parameters without saved state keep theirs
        if p not in paired and entry:
            state[p] = dict(entry)
    reference_layout = getattr(type(opt), "from_reference_entry", None)  # a package's own layout, translated
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
        if reference_layout is not None and isinstance(entry, Mapping):
            entry = reference_layout(entry)
        converted = _convert_entry(opt, group_of[p], p, entry, where)
        _load_checks.check_entry(opt, group_of[p], p, converted, where)
        opt.check_loaded_state(p, converted, where)
        if converted:
            state[p] = converted
    opt.__setstate__({"state": state, "param_groups": new_groups})
    for hook in list(opt._optimizer_load_state_dict_post_hooks.values()):
        hook(opt)
    return LoadResult(missing, unexpected)
