"""How gradients reach the facade: a gradient tree, a closure of the parameters, or ``p.grad``; each checked.

Every gradient is checked against its parameter (an array, the same shape, the
same dtype) and an error names the parameter (its name, or its place in the
groups) before anything changes. A closure of the parameters is differentiated
with JAX in the structure the user gave the parameters in.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.optim._params import grads_for, is_array
from gradtx.optim._parameter import Parameter

__all__ = ["checked_grad", "describe", "evaluate", "is_closure", "set_grads", "takes_argument", "value_and_grad"]


def takes_argument(closure: Callable) -> bool:
    """Whether a closure takes the parameters (gradtx's form) rather than nothing (torch's)."""
    try:
        params = inspect.signature(closure).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return any(p.kind in kinds for p in params)


def is_closure(x: Any) -> bool:
    """Whether ``step``'s first argument is a closure rather than a gradient tree.

    Any callable without array leaves: a function, a method, a ``functools.partial``,
    a ``jax.jit``-wrapped function. An equinox module is callable too, but it is a
    pytree of arrays: a gradient tree.
    """
    if isinstance(x, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)):
        return True
    return callable(x) and not any(is_array(leaf) or isinstance(leaf, Parameter) for leaf in jax.tree.leaves(x))


def value_and_grad(opt, closure: Callable) -> Callable[[list], tuple[Any, list]]:
    """``closure(params) -> loss`` as ``f(arrays) -> (loss, grads)``, with the parameters' arrays listed
    in ``param_groups`` order (what a driver such as LBFGS evaluates at trial points)."""
    leaves, treedef = jax.tree.flatten(opt._structure(), is_leaf=lambda x: isinstance(x, Parameter))
    slot = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    where = [(j, slot[id(leaf)]) for j, leaf in enumerate(leaves) if isinstance(leaf, Parameter)]

    def loss_of(arrays):
        full = list(leaves)
        for j, i in where:
            full[j] = arrays[i]
        return closure(jax.tree.unflatten(treedef, full))

    return jax.value_and_grad(loss_of)


def evaluate(opt, closure: Callable) -> Any:
    """Evaluates the closure; a closure of the params is differentiated and its gradients set on every box."""
    if not takes_argument(closure):
        return closure()
    boxes = [p for g in opt.param_groups for p in g["params"]]
    loss, grads = value_and_grad(opt, closure)([p.data for p in boxes])
    for p, grad in zip(boxes, grads):
        p.grad = grad
    return loss


def set_grads(opt, grads: Any) -> None:
    """Sets ``p.grad`` from a tree in the structure of ``opt.params``, all checked before any is set."""
    pairs = grads_for(opt._structure(), grads)
    checked = [(p, None if g is None else checked_grad(opt, p, g)) for p, g in pairs]
    for p, g in checked:
        p.grad = g


def describe(opt, p: Parameter) -> str:
    """How an error names ``p``: its name, or its place in the param groups."""
    for gi, group in enumerate(opt.param_groups):
        for i, q in enumerate(group["params"]):
            if q is p:
                name = group.get("param_names", [None] * (i + 1))[i] or p.name
                return f"parameter {name!r}" if name else f"parameter {i} of group {gi}"
    return "a parameter"


def checked_grad(opt, p: Parameter, grad: Any) -> jax.Array:
    """``grad`` as a JAX array, after checking it is an array of ``p``'s shape and dtype."""
    # the common case, checked first and against the array itself: a step over thousands of parameters pays per check
    if isinstance(grad, jax.Array):
        data = p._data  # an array, or a packed parameter's slot: both know their shape and dtype
        if grad.shape == data.shape and grad.dtype == data.dtype:
            return grad
    if not is_array(grad):
        raise TypeError(f"the gradient of {describe(opt, p)} must be an array, got {type(grad).__name__}")
    if tuple(grad.shape) != p.shape:
        raise ValueError(f"the gradient of {describe(opt, p)} has shape {tuple(grad.shape)}, "
                         f"but the parameter has shape {p.shape}")
    if grad.dtype != p.dtype:
        raise ValueError(f"the gradient of {describe(opt, p)} has dtype {grad.dtype}, but the parameter has "
                         f"dtype {p.dtype}; cast it with .astype({p.dtype})")
    return grad if isinstance(grad, jax.Array) else jnp.asarray(grad)
