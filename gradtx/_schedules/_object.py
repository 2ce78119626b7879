"""Schedules as small immutable objects: a factory's name and arguments, callable as ``count -> value``.

A closure cannot be pickled, compared or written into a checkpoint as data.
Every gradtx schedule factory is wrapped by :func:`schedule_factory`, so it
returns a :class:`ScheduleFn`: it calls the closure the factory built (same
numbers, same behaviour under ``jit``, ``vmap`` and ``grad``), shows the call
that made it (``gradtx.linear_schedule(init_value=1.0, end_value=0.0, ...)``),
compares equal to a schedule made by the same call, and pickles as that call
(rebuilt from a registry of gradtx's factories, so unpickling runs no code
named by the file). :func:`schedule_to_data` / :func:`schedule_from_data` give
the same description as plain data for formats without pickle (``.npz``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["ScheduleFn", "schedule_factory", "schedule_from_data", "schedule_to_data"]

_FACTORIES: dict[str, Callable[..., ScheduleFn]] = {}  # name -> the public (wrapped) factory


class ScheduleFn:
    """A schedule ``count -> value`` that remembers the factory call that built it.

    Attributes:
      factory: the name of the gradtx factory (``"linear_schedule"``).
      arguments: ``((name, value), ...)``, every argument of that call, defaults included.
    """

    __slots__ = ("factory", "arguments", "_fn", "__weakref__")

    def __init__(self, factory: str, arguments: tuple[tuple[str, Any], ...], fn: Callable[[Any], Any]) -> None:
        object.__setattr__(self, "factory", factory)
        object.__setattr__(self, "arguments", tuple(arguments))
        object.__setattr__(self, "_fn", fn)

    def __call__(self, count: Any) -> Any:
        return self._fn(count)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: a schedule is immutable")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}: a schedule is immutable")

    @property
    def __name__(self) -> str:  # jax.jit and tracebacks name the function by it
        return self.factory

    @property
    def kwargs(self) -> dict[str, Any]:
        """The arguments as a dict."""
        return dict(self.arguments)

    def __repr__(self) -> str:
        return f"gradtx.{self.factory}({', '.join(f'{k}={v!r}' for k, v in self.arguments)})"

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, ScheduleFn):
            return NotImplemented
        return self.factory == other.factory and _same(self.arguments, other.arguments)

    def __hash__(self) -> int:  # coarse (values may be unhashable arrays) but consistent with __eq__
        return hash((self.factory, tuple(k for k, _ in self.arguments)))

    def __reduce__(self) -> tuple:
        return _rebuild, (self.factory, self.kwargs)

    def __copy__(self) -> ScheduleFn:
        return self

    def __deepcopy__(self, memo: dict) -> ScheduleFn:
        return self


def _same(a: Any, b: Any) -> bool:
    """Structural equality of argument values (arrays compared by dtype, shape and values)."""
    if isinstance(a, ScheduleFn) or isinstance(b, ScheduleFn):
        return a == b
    if isinstance(a, (np.ndarray, np.generic, jax.Array)) or isinstance(b, (np.ndarray, np.generic, jax.Array)):
        try:
            a, b = np.asarray(a), np.asarray(b)
        except Exception:  # noqa: BLE001 - tracers: equal only to themselves
            return a is b
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):  # a list of schedules equals their tuple
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if callable(a):
        return a is b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return a is b


def _call(factory: str, kwargs: Mapping[str, Any]) -> ScheduleFn:
    """Calls the registered factory with ``kwargs`` (a ``*args`` parameter is given by its name)."""
    if factory not in _FACTORIES:
        raise ValueError(f"unknown schedule factory {factory!r}; known: {sorted(_FACTORIES)}")
    make, rest = _FACTORIES[factory], dict(kwargs)
    params = list(inspect.signature(make).parameters.values())
    if not any(p.kind is p.VAR_POSITIONAL for p in params):
        return make(**rest)
    args: list[Any] = []
    for p in params:  # everything up to *args goes by position
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(rest.pop(p.name))
        elif p.kind is p.VAR_POSITIONAL:
            args.extend(rest.pop(p.name, ()))
    return make(*args, **rest)


def _rebuild(factory: str, kwargs: dict[str, Any]) -> ScheduleFn:
    """Unpickles a :class:`ScheduleFn` by calling its registered factory again."""
    return _call(factory, kwargs)


def _own(value: Any) -> Any:
    """A copy of the lists and dicts in ``value``, so that editing the caller's does not edit the record."""
    if type(value) is list:
        return [_own(v) for v in value]
    if type(value) is dict:
        return {k: _own(v) for k, v in value.items()}
    return value


def schedule_factory(fn: Callable[..., Callable[[Any], Any]]) -> Callable[..., ScheduleFn]:
    """Wraps a factory of closures so that it returns a :class:`ScheduleFn` remembering its call."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def make(*args: Any, **kwargs: Any) -> ScheduleFn:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        for name, value in bound.arguments.items():  # a generator would be spent by the factory: keep a list
            bound.arguments[name] = list(value) if isinstance(value, Iterator) else _own(value)
        built = fn(*bound.args, **bound.kwargs)
        return ScheduleFn(fn.__name__, tuple(bound.arguments.items()), built)

    _FACTORIES[fn.__name__] = make
    return make


# --- a schedule as plain data (for formats without pickle) ---------------------------------------------------


def schedule_to_data(schedule: ScheduleFn, encode: Callable[[Any, str, str], Any], where: str) -> dict[str, Any]:
    """``{"schedule": factory, "arguments": [[name, encode(value, name, where)], ...]}``; ``encode`` stores a value.

    Raises ``TypeError`` naming ``where`` and the argument when a value is a
    function (a ``lambda_schedule``'s ``lr_lambda``): code is not data.
    """
    arguments = []
    for name, value in schedule.arguments:
        if callable(value) and not isinstance(value, ScheduleFn):
            raise TypeError(f"{where} is {schedule!r}, whose argument {name!r} is a function ({value!r}): a file "
                            "without pickle stores a schedule as its factory's name and arguments, not code. "
                            "Use a gradtx schedule without function arguments, or save this state dict with pickle.")
        arguments.append([name, encode(value, name, f"{where} argument {name!r}")])
    return {"schedule": schedule.factory, "arguments": arguments}


def schedule_from_data(node: Mapping[str, Any], decode: Callable[[Any], Any]) -> ScheduleFn:
    """The schedule described by :func:`schedule_to_data` (only gradtx's registered factories are called)."""
    return _call(node["schedule"], {name: decode(value) for name, value in node["arguments"]})
