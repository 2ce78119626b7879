"""``Parameter``: the mutable box that param groups hold, as torch's param groups hold tensors."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Parameter"]


class Parameter:
    """A mutable box around one JAX array: ``.data``, ``.grad`` and an optional ``.name``.

    JAX arrays are immutable, so torch's in-place ``param.add_(update)`` becomes
    "put the new array in the box": an optimizer's ``step()`` replaces
    ``p.data``, and every param group, every ``opt.state`` key and every user
    variable holding the box sees the new value. Boxes compare and hash by
    identity, like tensors used as dict keys.

    Example::

        w = Parameter(jnp.zeros((3, 2)), name="w")
        opt = gradtx.optim.SGD([w], lr=0.1)
        w.grad = jax.grad(loss)(w.data)
        opt.step()          # w.data is now the updated array

    Args:
      data: the array (anything ``jnp.asarray`` accepts; JAX arrays are kept as they are).
      name: an optional name, used in ``state_dict()["param_groups"][i]["param_names"]``
        and in error messages.
    """

    __slots__ = ("__weakref__", "_data", "grad", "name")

    def __init__(self, data: Any, name: str | None = None) -> None:
        self.data = data
        self.grad: jax.Array | None = None
        self.name = name

    @property
    def data(self) -> jax.Array:
        """The current value; assigning converts with ``jnp.asarray`` (to a strong type: ``jnp.full(n, 0.5)`` and
        Python scalars give weakly typed arrays, which a step would turn into strong ones)."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if isinstance(value, Parameter):
            value = value.data
        value = value if isinstance(value, jax.Array) else jnp.asarray(value)
        if getattr(value, "weak_type", False):  # a Python scalar's type, which torch's tensors never have: the
            value = jnp.asarray(value, value.dtype)  # step's results are strongly typed, and its program is one
        self._data = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array(self.data, dtype=dtype, copy=True)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name is not None else ""
        grad = "" if self.grad is None else ", grad"
        return f"Parameter({name}shape={self.shape}, dtype={self.dtype}{grad})"

    # Identity semantics, so that boxes can key ``opt.state`` like tensors do.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __getstate__(self) -> dict:
        """The parameter's arrays as NumPy arrays: a pickle names no private JAX function (it loads across versions)."""
        as_numpy = lambda x: None if x is None else np.asarray(x)  # noqa: E731
        return {"data": as_numpy(self.data), "grad": as_numpy(self.grad), "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.data = jnp.asarray(state["data"])
        self.grad = None if state["grad"] is None else jnp.asarray(state["grad"])
        self.name = state["name"]
