"""The compiled step behind every facade optimizer, and the translation between chain state and torch's state.

A declaration (see :mod:`gradtx.optim.optimizer`) turns one param group's
options into a chain. Here that chain runs once per parameter inside a jitted
function: one program for all groups (``fused``), one per group (``foreach``),
or one per parameter (for-loop). Options that are numbers reach the program as
arguments (weakly typed scalars, so they neither recompile nor change dtypes);
the others are static.

Per-parameter state lives in ``opt.state[p]`` under torch's names. The program
receives those dicts, rebuilds the chain's state from them (a template from
``tx.init`` gives the structure; XLA drops its unused zeros), runs the update and
hands back dicts with the same names. A parameter without state (its first step)
passes an empty dict, and the template is its initial state.
"""

from __future__ import annotations

import collections
import functools
import inspect
import os
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim._params import path_parts
from gradtx._transforms.dtypes import complex_as_real

__all__: list[str] = []

KERNEL_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})
NOT_OPTIONS = frozenset({"params", "param_names"}) | KERNEL_FLAGS
STEP = object()  # marks count leaves in a layout

_traces = 0


def trace_count() -> int:
    """How many times a group update has been traced (compiled) so far; tests use it to prove no recompilation."""
    return _traces


# --- options: static structure vs dynamic numbers -----------------------------------------------------------


def is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    if isinstance(value, (jax.Array, np.ndarray)):
        return value.size == 1 and jnp.issubdtype(value.dtype, jnp.number) and not jnp.iscomplexobj(value)
    return False


def is_dynamic(value: Any) -> bool:
    """Numbers, and tuples/lists of numbers (betas), enter the program as arguments."""
    if isinstance(value, (tuple, list)):
        return len(value) > 0 and all(is_number(v) for v in value)
    return is_number(value)


def as_float(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(as_float(v) for v in value)
    return float(np.asarray(value).reshape(()))


class WeakCallable:
    """A callable option (a schedule) as a compile-cache key that does not keep the callable alive.

    Compiled programs are cached by their static options. Holding a schedule
    only weakly lets a dropped optimizer's lambdas (and whatever they close
    over) be freed; a dead reference equals nothing, so a new callable that
    happens to reuse the address never finds the old program.
    """

    __slots__ = ("_ref", "_hash", "__weakref__")

    def __init__(self, fn: Callable) -> None:
        self._ref = weakref.ref(fn)
        self._hash = hash(("callable", id(fn)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self._ref()
        if fn is None:
            raise ReferenceError("the schedule this program was compiled for no longer exists")
        return fn(*args, **kwargs)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeakCallable) and self._ref() is not None and self._ref() is other._ref()


def freeze(value: Any, name: str) -> Any:
    """A hashable form of a static option (lists become tuples, callables weak keys)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, name) for v in value)
    if isinstance(value, dict):
        value = tuple(sorted(value.items()))
    if callable(value) and not isinstance(value, (type, WeakCallable)):
        try:
            return WeakCallable(value)
        except TypeError:  # not weakly referenceable (a builtin): kept as it is
            pass
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"option {name!r} = {value!r} is neither a number (which the compiled step takes as an "
                        "argument) nor hashable (which it could be compiled for); pass a number, a bool, a string "
                        "or a tuple") from None
    return value


@functools.cache
def builder_parameters(builder: Callable) -> frozenset[str] | None:
    """The keyword names a chain builder accepts; ``None`` when it takes ``**kwargs``."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def zero_flags(builder: Callable, group: dict) -> dict[str, bool]:
    """``use_<option>=(group[option] != 0)`` for each ``use_<option>`` keyword of the builder (see Optimizer.flags)."""
    accepted = builder_parameters(builder) or frozenset()
    flags = {}
    for name in accepted:
        option = name[4:]
        if name.startswith("use_") and option in group:
            value = group[option]
            flags[name] = True if callable(value) else bool(np.any(np.asarray(as_float(value)) != 0))
    return flags


def split_options(decl: Any, group: dict, where: str = "a param group") -> tuple[tuple, dict]:
    """``(static, dynamic)``: the hashable options (with the declaration's flags) and the numbers."""
    accepted = builder_parameters(decl.chain_builder)
    static, dynamic = {}, {}
    for name, value in group.items():
        if name in NOT_OPTIONS or (accepted is not None and name not in accepted):
            continue
        if name not in decl.static_options and is_dynamic(value):
            dynamic[name] = as_float(value)
        elif callable(value) and decl.step_name is None:
            raise TypeError(f"{where}: {decl.__name__} keeps no step count (as torch's), so option {name!r} cannot be a "
                            "schedule; set a number and change it between steps (or use gradtx.optim.lr_scheduler)")
        else:
            try:
                static[name] = freeze(value, name)
            except TypeError as error:
                raise TypeError(f"{where}: {error}") from None
    static.update(decl.flags(group))
    return tuple(sorted(static.items())), dynamic


# --- state layout: chain-state leaves <-> torch's names -----------------------------------------------------


@functools.cache
def _suffixes(state_names: tuple) -> tuple:
    return tuple((torch_name, tuple(field.split("."))) for torch_name, field in state_names)


def layout(decl: Any, template: Any) -> list[Any]:
    """For each leaf of a chain state, its torch name, or ``STEP`` for a step counter.

    A leaf takes the name whose declared field path (``state_names``, e.g.
    ``"mu"`` or ``"2.nu"``) ends its path; an unnamed leaf called ``count`` is the
    step. Any other unnamed leaf is a declaration error.
    """
    names = _suffixes(tuple(decl.state_names.items()))
    result = []
    for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]:
        parts = path_parts(path)
        match = [torch_name for torch_name, suffix in names if parts[-len(suffix):] == suffix]
        if len(match) > 1:
            raise TypeError(f"{decl.__name__}.state_names: chain state leaf {'.'.join(parts)!r} matches {match}")
        if match:
            result.append(match[0])
        elif parts and parts[-1] == "count":
            result.append(STEP)
        else:
            raise TypeError(
                f"{decl.__name__}: the chain's state leaf {'.'.join(parts)!r} has no torch name; add "
                f"'<torch name>': '{parts[-1]}' to {decl.__name__}.state_names so that state_dict() can carry it"
            )
    taken = [n for n in result if n is not STEP]
    repeated = sorted({n for n in taken if taken.count(n) > 1})
    if repeated:
        raise TypeError(f"{decl.__name__}.state_names: {repeated} each match several chain state leaves; "
                        "give a longer field path (e.g. '2.mu')")
    return result


def _is_real_view(leaf: Any, param: Any) -> bool:
    """Whether a state leaf is the real view (trailing axis of 2) of a complex parameter's buffer."""
    return (jnp.iscomplexobj(param) and not jnp.iscomplexobj(leaf)
            and tuple(leaf.shape) == tuple(param.shape) + (2,))


def torch_shape_dtype(leaf: Any, param: Any) -> tuple[tuple, Any]:
    """Shape and dtype under which a chain-state leaf is stored in ``opt.state`` (complex, where torch keeps it)."""
    if _is_real_view(leaf, param):
        return tuple(param.shape), param.dtype
    return tuple(leaf.shape), leaf.dtype


def _into_chain(value: Any, template: Any, param: Any, key: str) -> Any:
    value = jnp.asarray(value)
    if _is_real_view(template, param) and jnp.iscomplexobj(value):
        value = jnp.stack([jnp.real(value), jnp.imag(value)], axis=-1)
    if value.shape != template.shape:
        expected, _ = torch_shape_dtype(template, param)
        raise ValueError(f"state entry {key!r} has shape {tuple(jnp.asarray(value).shape)}, but this optimizer "
                         f"keeps it with shape {expected} for a parameter of shape {tuple(param.shape)}")
    return value.astype(template.dtype)


def _out_of_chain(leaf: Any, param: Any) -> Any:
    if _is_real_view(leaf, param):
        return jax.lax.complex(leaf[..., 0], leaf[..., 1]).astype(param.dtype)
    return leaf


def order_keys(decl: Any) -> list[str]:
    """torch's key order in a state dict: the step first, then ``state_names`` in declaration order."""
    return ([decl.step_name] if decl.step_name else []) + list(decl.state_names)


def from_torch(decl: Any, template: Any, names: list, torch_state: dict, param: Any, fresh: Any) -> Any:
    """The chain state described by ``torch_state`` (entries it lacks keep the template's initial values).

    An option switched on later (amsgrad) thus starts from its initial state, as
    it would in torch. ``fresh`` (a traced bool) says that the parameter had no
    state before this step; it matters only where torch keeps no step
    (``step_name = None``): the count is then 0 for a fresh parameter and 1 otherwise.
    """
    leaves, treedef = jax.tree.flatten(template)
    out = []
    for leaf, name in zip(leaves, names):
        if name is STEP and decl.step_name is None:
            out.append(jnp.where(fresh, 0, 1).astype(leaf.dtype))
        elif name is STEP and decl.step_name in torch_state:
            out.append(jnp.asarray(torch_state[decl.step_name]).reshape(()).astype(leaf.dtype))
        elif name is not STEP and name in torch_state:
            out.append(_into_chain(torch_state[name], leaf, param, name))
        else:
            out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def to_torch(decl: Any, state: Any, names: list, param: Any) -> dict:
    """The chain state under torch's names (the step as a float32 scalar, as torch keeps it)."""
    found = {}
    for leaf, name in zip(jax.tree.leaves(state), names):
        if name is STEP:
            if decl.step_name is not None and decl.step_name not in found:
                found[decl.step_name] = jnp.asarray(leaf, jnp.float32)
        else:
            found[name] = _out_of_chain(leaf, param)
    return {key: found[key] for key in order_keys(decl) if key in found}


# --- the compiled update ------------------------------------------------------------------------------------


def build_chain(decl: Any, static: tuple, dynamic: dict) -> Any:
    tx = decl.chain_builder(**dict(static), **dynamic)
    return complex_as_real(tx) if decl.complex_as_real else tx


def one_loop_requested() -> bool:
    """Whether ``XLA_FLAGS`` turns on XLA:CPU's multi-output fusion (then the fused tier computes in one loop)."""
    return "xla_cpu_use_multi_output_fusion" in os.environ.get("XLA_FLAGS", "")


def _param_update(decl: Any, tx: Any, param: Any, grad: Any, torch_state: dict, fresh: Any,
                  keep: Any = None) -> tuple[Any, dict]:
    """One parameter's step; with ``keep`` (a runtime True), the parameter is computed a second time.

    XLA:CPU emits one loop per materialised output: the state entries, then the
    parameter re-reading them (about 40 bytes per float32 Adam parameter where one
    loop moves 28). With ``keep``, the new parameter is recomputed from copies of
    the inputs that XLA cannot merge with the originals (``where(keep, x, 0)``), so
    that its loop reads only the inputs; under XLA:CPU's multi-output fusion (an
    ``XLA_FLAGS`` option, see ``benchmarks/FINDINGS.md``) all the loops then merge
    into one. The numbers are the same rule's, rounded as that loop rounds them.
    """
    if jnp.iscomplexobj(grad):
        grad = jnp.conj(grad)  # jax.grad of a real loss is the conjugate of torch's gradient
    template = tx.init(param)
    names = layout(decl, template)
    state = from_torch(decl, template, names, torch_state, param, fresh)
    updates, new_state = tx.update(grad, state, param)
    if keep is not None:
        grad, state, param = jax.tree.map(lambda x: jnp.where(keep, x, jnp.zeros_like(x)), (grad, state, param))
        updates, _ = tx.update(grad, state, param)
    new_param = jnp.asarray(param + updates).astype(param.dtype)
    return new_param, to_torch(decl, new_state, names, param)


def group_update(decl: Any, static: tuple, dynamic: dict, params: list, grads: list, states: list,
                 fresh: Any, keep: Any = None) -> tuple:
    """One group's step: the chain for its options, applied to each parameter with its own state.

    A parameter without state yet (``fresh[i]``) comes with its initial state from
    :func:`init_states`, so that the first step and the later ones are one program.
    """
    global _traces
    _traces += 1
    tx = build_chain(decl, static, dynamic)
    results = [_param_update(decl, tx, p, g, s, fresh[i], keep)
               for i, (p, g, s) in enumerate(zip(params, grads, states))]
    return [r[0] for r in results], [r[1] for r in results]


def packed_grads(grads: list) -> list:
    """The gradients of a packed unit as the one flat vector its parameter buffer is (concatenated in order)."""
    return [jnp.concatenate([jnp.ravel(g) for g in grads])]


def fused_update(decl: Any, statics: tuple, packed: tuple, dynamics: list, params: list, grads: list,
                 states: list, fresh: list, keep: Any) -> tuple:
    """Every unit's step in one program.

    A unit is a group's parameters as separate arrays, or (``packed[i]``) a
    group's packed parameters: one flat buffer whose gradients arrive as the
    separate arrays and are concatenated here (into a temporary buffer: XLA
    does not fuse a concatenation read by several loops). An elementwise chain
    gives a flat buffer exactly the numbers it gives each slice. ``keep`` is a
    runtime True, used only when :func:`one_loop_requested`.
    """
    keep = keep if one_loop_requested() else None
    results = []
    for static, pack, dynamic, p, g, s, f in zip(statics, packed, dynamics, params, grads, states, fresh):
        results.append(group_update(decl, static, dynamic, p, packed_grads(g) if pack else g, s, f, keep))
    return [r[0] for r in results], [r[1] for r in results]


# (function, static arguments, params argument, state argument) of each kind of program.
_ARGUMENTS = {"fused": (fused_update, (0, 1, 2), 4, 6), "group": (group_update, (0, 1), 3, 5)}
_PROGRAMS = {
    (kind, donate_params): jax.jit(fn, static_argnums=static,
                                   donate_argnums=(params, state) if donate_params else (state,))
    for kind, (fn, static, params, state) in _ARGUMENTS.items() for donate_params in (True, False)
}


def program(kind: str, donate_params: bool) -> Callable:
    """The jitted fused (all units) or group update; the state's buffers are donated, the parameters' optionally.

    The engine passes only buffers that it alone holds (see :mod:`gradtx.optim._step`).
    """
    return _PROGRAMS[kind, donate_params]


_TRACED: collections.OrderedDict = collections.OrderedDict()
_TRACED_LIMIT = 256


def trace(kind: str, donate: bool, args: tuple) -> None:
    """Traces (and so checks) a program before any program of the step runs, once per static signature.

    A chain that cannot be built from a group's options fails here, before any
    group has changed. Signatures already traced are remembered (boundedly).
    """
    key = (kind, donate, args[1], args[2]) if kind == "fused" else (kind, donate, args[1])
    if key in _TRACED:
        _TRACED.move_to_end(key)
        return
    program(kind, donate).trace(*args)
    _TRACED[key] = None
    if len(_TRACED) > _TRACED_LIMIT:
        _TRACED.popitem(last=False)


_ENTRIES: collections.OrderedDict = collections.OrderedDict()
_ENTRIES_LIMIT = 1024


def layout_cache_size() -> int:
    """How many state layouts are cached (bounded; tests check that edited numbers do not add entries)."""
    return len(_ENTRIES)


def _entries(decl: Any, static: tuple, dynamic: dict, shape: tuple, dtype: Any) -> tuple:
    """The state layout of a chain: cached by structure only (a chain's shapes never depend on its numbers)."""
    key = (decl, static, tuple((k, len(v) if isinstance(v, tuple) else None) for k, v in sorted(dynamic.items())),
           shape, dtype)
    if key in _ENTRIES:
        _ENTRIES.move_to_end(key)
        return _ENTRIES[key]

    def init(param, dynamic):
        return build_chain(decl, static, dynamic).init(param)

    param = jax.ShapeDtypeStruct(shape, dtype)
    template = jax.eval_shape(init, param, dynamic)
    entries = {}
    for leaf, name in zip(jax.tree.leaves(template), layout(decl, template)):
        if name is not STEP:
            entries[name] = torch_shape_dtype(leaf, param)
        elif decl.step_name is not None:
            entries[decl.step_name] = ((), jnp.dtype(jnp.float32))
    result = tuple((key, entries[key]) for key in order_keys(decl) if key in entries)
    _ENTRIES[key] = result
    if len(_ENTRIES) > _ENTRIES_LIMIT:
        _ENTRIES.popitem(last=False)
    return result


def state_entries(decl: Any, group: dict, param: Any) -> dict[str, tuple]:
    """``{torch name: (shape, dtype)}`` of the state the group's chain keeps for ``param``, the step included."""
    static, dynamic = split_options(decl, group)
    return dict(_entries(decl, static, dynamic, tuple(param.shape), jnp.dtype(param.dtype)))


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_states(decl: Any, static: tuple, dynamic: dict, params: list) -> list[dict]:
    """The initial state of each parameter under torch's names (the chain's ``init``, translated)."""
    tx = build_chain(decl, static, dynamic)
    states = []
    for param in params:
        state = tx.init(param)
        states.append(to_torch(decl, state, layout(decl, state), param))
    return states
