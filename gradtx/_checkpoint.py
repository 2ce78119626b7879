"""Saving and restoring optimizer state: pickle, numpy ``.npz``, and orbax.

Functional states are pytrees of arrays (nested NamedTuples, tuples and
dicts), so they pickle as they are (after ``jax.device_get``) and orbax saves
them directly. :func:`save_npz` / :func:`load_npz` store them as a flat ``.npz``
keyed by pytree path, readable without gradtx; loading needs a template (the
state of ``tx.init(params)``) for the structure, and checks every key, shape
and dtype before returning anything.

The facade's ``state_dict()`` (and a scheduler's) goes through
:func:`save_state_dict_npz` / :func:`load_state_dict_npz`: its arrays are stored
as ``.npz`` entries and everything else (the nesting, the options: numbers,
bools, strings, None, tuples, lists, names, gradtx schedules as their
factory's name and arguments) as JSON text in the same file, so no pickle is
involved in either direction. docs/checkpoints.md has the recipes, torch.save
and orbax included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx._schedules._object import ScheduleFn, schedule_from_data, schedule_to_data
from gradtx._tree import path_str

__all__ = ["load_npz", "load_state_dict_npz", "save_npz", "save_state_dict_npz", "state_dict_from_data",
           "state_dict_to_data"]


def _flat(state: Any) -> list[tuple[str, Any]]:
    return [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]]


def _open_npz(file: str | os.PathLike | Any, writer: str) -> Any:
    """``np.load(file)`` as a ``.npz`` archive; ``"ckpt"`` finds ``"ckpt.npz"``, which ``np.savez`` wrote for it.

    Anything else (a single ``.npy`` array, a pickle, a text file) is a ``ValueError``
    naming the file and the function that writes the expected format.
    """
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            file = path + ".npz"
    try:
        data = np.load(file, allow_pickle=False)
    except ValueError as error:  # a pickle, or bytes numpy cannot read
        raise ValueError(f"{file!r} is not a .npz archive written by {writer}: {error}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{file!r} holds a single .npy array of shape {np.shape(data)}, not a .npz archive written "
                         f"by {writer}")
    return data


def save_npz(file: str | os.PathLike | Any, state: Any) -> None:
    """Writes every array of ``state`` to a ``.npz`` file, keyed by its pytree path.

    As with ``np.savez``, a name without the ``.npz`` suffix gets it; :func:`load_npz` finds it.

    Example::

        gradtx.save_npz("opt_state.npz", opt_state)
        opt_state = gradtx.load_npz("opt_state.npz", tx.init(params))
    """
    arrays = {}
    for path, leaf in _flat(state):
        array = np.asarray(jax.device_get(leaf))
        if array.dtype == jnp.bfloat16:  # .npz has no bfloat16: keep the bits, record the dtype in the key
            arrays[f"{path}::bfloat16"] = array.view(np.uint16)
        else:
            arrays[path] = array
    np.savez(file, **arrays)


def load_npz(file: str | os.PathLike | Any, like: Any) -> Any:
    """Reads a state saved by :func:`save_npz` into the structure of ``like`` (e.g. ``tx.init(params)``).

    Raises a ``ValueError`` naming the first missing or unexpected key, or the
    first array whose shape or dtype differs from the template; nothing is
    returned partially. Arrays are placed with the template's shardings.
    """
    with _open_npz(file, "gradtx.save_npz") as data:
        stored = {}
        for key in data.files:
            if key.endswith("::bfloat16"):
                stored[key.removesuffix("::bfloat16")] = data[key].view(jnp.bfloat16)
            else:
                stored[key] = data[key]
    template = _flat(like)
    expected = [path for path, _ in template]
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in set(expected)]
    if missing or unexpected:
        raise ValueError(f"the saved state does not match the template: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    leaves = []
    for path, ref in template:
        value = stored[path]
        ref_shape, ref_dtype = np.shape(ref), jnp.result_type(ref)
        if value.shape != ref_shape or value.dtype != ref_dtype:
            raise ValueError(f"state at '{path}' was saved as {value.dtype}{list(value.shape)}, "
                             f"the template expects {ref_dtype}{list(ref_shape)}")
        sharding = getattr(ref, "sharding", None)
        leaves.append(jax.device_put(value, sharding) if isinstance(ref, jax.Array) else value)
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


# --- the facade's state_dict (and a scheduler's) as .npz, without pickle ------------------------------------

_HEADER = "__gradtx_state_dict__"  # the .npz entry holding the JSON description of the dict
_FORMAT, _VERSION = "gradtx.state_dict", 1
_RESERVED = {_HEADER, "file", "args", "kwds", "allow_pickle"}  # names np.savez cannot take as array keys


def _unstorable(value: Any, where: str) -> TypeError:
    if callable(value):
        return TypeError(
            f"{where} is a callable ({value!r}), which a .npz file cannot hold: it stores a schedule as data (its "
            "factory's name and arguments), never code. Use a gradtx schedule (gradtx.cosine_decay_schedule(...), "
            "gradtx.join_schedules(...), ...) for that option, or a number driven by gradtx.optim.lr_scheduler, "
            "or save this state dict with pickle (with the function defined at module level: a lambda does not "
            "pickle).")
    return TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a .npz file cannot "
                     "hold without pickle. Give it a number, bool, string, None, array or gradtx schedule, or save "
                     "this state dict with pickle.")


class _Encoder:
    """Turns a state dict into JSON-able nodes, collecting its arrays under path-like ``.npz`` keys."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _array(self, value: Any, keys: list[str], where: str, scalar: bool) -> dict:
        array = np.asarray(jax.device_get(value))
        node: dict[str, Any] = {}
        if array.dtype.kind == "V" and array.dtype.names is None:  # bfloat16, float8, int4: keep the bits
            node["dtype"] = array.dtype.name
            array = array.view(f"u{array.dtype.itemsize}")
        elif array.dtype.kind not in "biufcUS":  # object arrays would need pickle
            raise _unstorable(value, where)
        key = "/".join(keys) or "value"
        unique, n = key, 1
        while unique in self.arrays or unique in _RESERVED:
            unique, n = f"{key}~{n}", n + 1
        self.arrays[unique] = array
        node["array"] = unique
        if scalar:
            node["scalar"] = True
        return node

    def encode(self, value: Any, keys: list[str], where: str) -> Any:
        if isinstance(value, np.generic):  # np.float64 is a float: keep its type, as a 0-d array
            return self._array(value, keys, where, scalar=True)
        if isinstance(value, (np.ndarray, jax.Array)):
            return self._array(value, keys, where, scalar=False)
        if value is None or type(value) in (bool, int, float, str):
            return value
        if type(value) is complex:
            return {"complex": [value.real, value.imag]}
        if type(value) in (list, tuple):
            items = [self.encode(v, keys + [str(i)], f"{where}[{i}]") for i, v in enumerate(value)]
            return items if type(value) is list else {"tuple": items}
        if isinstance(value, ScheduleFn):
            return schedule_to_data(value, lambda v, name, w: self.encode(v, keys + [name], w), where)
        if isinstance(value, Mapping):
            return {"dict": [[self.encode(k, keys, f"a key of {where}"),
                              self.encode(v, keys + [str(k)], f"{where}[{k!r}]")] for k, v in value.items()]}
        raise _unstorable(value, where)


def _decode(node: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if "tuple" in node:
        return tuple(_decode(v, arrays) for v in node["tuple"])
    if "dict" in node:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in node["dict"]}
    if "schedule" in node:
        return schedule_from_data(node, lambda v: _decode(v, arrays))
    if "complex" in node:
        return complex(*node["complex"])
    if "array" in node:
        if node["array"] not in arrays:
            raise ValueError(f"the .npz file has no array {node['array']!r}, which its description refers to")
        array = arrays[node["array"]]
        if "dtype" in node:
            array = array.view(jnp.dtype(node["dtype"]))
        return array[()] if node.get("scalar") else array
    raise ValueError(f"unreadable entry {node!r} in the .npz file's description")


def save_state_dict_npz(file: str | os.PathLike | Any, source: Any) -> None:
    """Writes an optimizer's (or a scheduler's) ``state_dict`` to a ``.npz`` file, without pickle.

    ``source`` is the state dict itself or any object with a ``state_dict()``
    method (a :class:`gradtx.optim.Optimizer`, a ``gradtx.optim.lr_scheduler``
    scheduler). Arrays (JAX or NumPy, bfloat16 included) become ``.npz`` entries
    named by their place (``state/0/exp_avg``); the rest of the dict (numbers,
    bools, strings, None, tuples, lists, dicts, NumPy scalars) is stored as JSON
    text in the entry ``__gradtx_state_dict__``, so the file opens with
    ``np.load(file, allow_pickle=False)``. :func:`load_state_dict_npz` gives the
    dict back with the same values and types (arrays as NumPy arrays).

    gradtx schedules given as options (``lr=gradtx.cosine_decay_schedule(...)``,
    ``betas=(schedule, 0.999)``) are stored as data, their factory's name and
    arguments, and come back equal. Raises ``TypeError`` naming the entry
    (``state_dict['param_groups'][0]['lr']``) when a value cannot be stored
    without pickle: a function of the user's given as an option (a ``lambda``),
    or any other object. Nothing is written then.

    As with ``np.savez``, a name without the ``.npz`` suffix gets it
    (``"ckpt"`` writes ``ckpt.npz``); the loaders find ``ckpt.npz`` when given ``"ckpt"``.

    Example::

        gradtx.save_state_dict_npz("opt.npz", opt)
        opt.load_state_dict(gradtx.load_state_dict_npz("opt.npz"))
    """
    description, arrays = state_dict_to_data(source)
    np.savez(file, **{_HEADER: np.array(json.dumps(description))}, **arrays)


def load_state_dict_npz(file: str | os.PathLike | Any) -> dict:
    """Reads a state dict written by :func:`save_state_dict_npz` (without pickle).

    The result goes to ``opt.load_state_dict`` (or a scheduler's), which checks
    it against the optimizer before changing anything. Raises ``ValueError`` if
    the file was not written by :func:`save_state_dict_npz` (a ``.npy`` array, a
    pickle, a description nested too deeply). Schedules come back as
    :class:`gradtx.ScheduleFn`; only gradtx's own factories are called.
    """
    with _open_npz(file, "gradtx.save_state_dict_npz") as data:
        if _HEADER not in data.files:
            raise ValueError(f"this .npz file has no {_HEADER!r} entry: it was not written by save_state_dict_npz "
                             "(a functional state saved with save_npz is read by load_npz)")
        try:
            header = json.loads(str(data[_HEADER][()]))
        except (RecursionError, json.JSONDecodeError) as error:
            raise ValueError(f"the .npz file's {_HEADER!r} entry is not a readable description: "
                             f"{type(error).__name__}") from None
        arrays = {key: data[key] for key in data.files if key != _HEADER}
    return state_dict_from_data(header, arrays)


def state_dict_to_data(source: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A state dict as ``(description, arrays)``: JSON-able data and flat NumPy arrays, for any store.

    What :func:`save_state_dict_npz` writes, for other formats: give the arrays
    to an array store (orbax's ``StandardSave``) and the description to a JSON
    one (``JsonSave``); :func:`state_dict_from_data` puts them back together.
    ``source`` is a state dict or an object with ``state_dict()``; the same
    ``TypeError`` as :func:`save_state_dict_npz` names an option it cannot store.
    """
    state_dict = source if isinstance(source, Mapping) else getattr(source, "state_dict", None)
    if callable(state_dict):
        state_dict = state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"save_state_dict_npz takes a state dict or an object with state_dict(), got "
                        f"{type(source).__name__}")
    encoder = _Encoder()
    tree = encoder.encode(state_dict, [], "state_dict")
    return {"format": _FORMAT, "version": _VERSION, "tree": tree}, encoder.arrays


def state_dict_from_data(description: Mapping[str, Any], arrays: Mapping[str, Any]) -> dict:
    """The state dict that :func:`state_dict_to_data` described (arrays as NumPy arrays)."""
    if not isinstance(description, Mapping) or description.get("format") != _FORMAT or \
            description.get("version") != _VERSION:
        raise ValueError(f"unknown state dict format: {str(description)[:80]}")
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    try:
        return _decode(description["tree"], arrays)
    except RecursionError:
        raise ValueError("the state dict's description is nested too deeply to be a state dict") from None
    except (KeyError, TypeError) as error:
        raise ValueError(f"unreadable entry in the state dict's description: {error!r}") from None
