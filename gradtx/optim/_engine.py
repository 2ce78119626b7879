"""The compiled step behind every facade optimizer, and the translation between chain state and torch's state.

A declaration (see :mod:`gradtx.optim._optimizer`) turns one param group's
options into a chain. Here that chain runs inside a jitted function: one
program for all groups (``fused``), one per group (``foreach``), or one per
parameter (for-loop). Options that are numbers reach the program as arguments
(weakly typed scalars, so they neither recompile nor change dtypes); the others
are static.

torch keeps a step count per parameter. Parameters whose counts (and whatever
else the chain keeps once for a whole tree) are equal form a *bucket*, and the
chain steps a bucket as optax steps a tree: one state, one bias correction,
one trace (:class:`Bucket`). Per-parameter state lives in ``opt.state[p]``
under torch's names; the entries a bucket shares are one array in each
member's dict. The program receives those dicts, rebuilds each bucket's chain
state from them (a template from ``tx.init`` gives the structure; XLA drops its
unused zeros), runs the update and hands back dicts with the same names.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
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
def routed_options(decl: Any) -> frozenset[str]:
    """The param-group keys that reach ``decl.chain_builder``: its ``chain_options`` and ``group_options``.

    An explicit list, not the builder's signature: any other key of a group (a
    scheduler's ``initial_lr``, a user's own ``"name"``, the facade's ``foreach``)
    never reaches the chain nor the compiled program's cache key
    (docs/declaring.md, "Which options reach the chain").
    """
    try:
        chain_options = decl.chain_options
    except AttributeError:
        raise TypeError(f"{decl.__name__} declares a chain_builder but no chain_options: list the options (keys of "
                        "its defaults) the builder takes, e.g. chain_options = ('lr', 'betas') (docs/declaring.md)"
                        ) from None
    return frozenset(chain_options) | frozenset(getattr(decl, "group_options", ()))


def switch_flags(switches: tuple[str, ...], group: dict) -> dict[str, bool]:
    """``use_<option> = (group[option] != 0)`` for each option of ``switches`` (see ``Optimizer.flags``)."""
    flags = {}
    for option in switches:
        if option in group:
            value = group[option]
            flags[f"use_{option}"] = True if callable(value) else bool(np.any(np.asarray(as_float(value)) != 0))
    return flags


def split_options(decl: Any, group: dict, where: str = "a param group") -> tuple[tuple, dict]:
    """``(static, dynamic)``: the hashable options (with the declaration's flags) and the numbers."""
    routed = routed_options(decl)
    static, dynamic = {}, {}
    for name, value in group.items():
        if name not in routed:
            continue  # a key the chain does not take: a scheduler's initial_lr, a user's own label
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


def _torch_name(decl: Any, parts: tuple) -> Any:
    """The torch name of a chain-state leaf at ``parts`` (its path), ``STEP`` for a step counter."""
    names = _suffixes(tuple(decl.state_names.items()))
    match = [torch_name for torch_name, suffix in names if parts[-len(suffix):] == suffix]
    if len(match) > 1:
        raise TypeError(f"{decl.__name__}.state_names: chain state leaf {'.'.join(parts)!r} matches {match}")
    if match:
        return match[0]
    if parts and parts[-1] == decl.step_field:
        return STEP
    raise TypeError(
        f"{decl.__name__}: the chain's state leaf {'.'.join(parts)!r} has no torch name; add "
        f"'<torch name>': '{parts[-1]}' to {decl.__name__}.state_names so that state_dict() can carry it"
    )


def _check_repeats(decl: Any, names: list) -> None:
    taken = [n for n in names if n is not STEP]
    repeated = sorted({n for n in taken if taken.count(n) > 1})
    if repeated:
        raise TypeError(f"{decl.__name__}.state_names: {repeated} each match several chain state leaves; "
                        "give a longer field path (e.g. '2.mu')")


def layout(decl: Any, template: Any) -> list[Any]:
    """For each leaf of one parameter's chain state, its torch name, or ``STEP`` for a step counter.

    A leaf takes the name whose declared field path (``state_names``, e.g.
    ``"mu"`` or ``"2.nu"``) ends its path; an unnamed leaf whose field is the
    declaration's ``step_field`` (``count``) is the step. Any other unnamed leaf is a declaration error.
    """
    result = [_torch_name(decl, path_parts(path)) for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
    _check_repeats(decl, result)
    return result


# --- buckets: parameters whose shared state (the step) is equal step through one chain state ------------------


@dataclasses.dataclass(frozen=True)
class BucketKey:
    """The key of a parameter in a :class:`Bucket` (a pytree key, as ``SequenceKey`` is a list's)."""

    idx: int

    def __str__(self) -> str:
        return f"<{self.idx}>"


class Bucket(list):
    """Parameters that step through one chain state: the pytree of parameters the chain is applied to.

    torch keeps a step count per parameter; parameters whose counts (and any
    other state the chain keeps for the whole tree) are equal share one chain
    state, as optax's functional face shares one over a whole tree. A node type
    of its own makes the parameter axis visible in every state leaf's path
    (:class:`BucketKey`), however the transforms nest their state.
    """


jax.tree_util.register_pytree_with_keys(
    Bucket,
    lambda b: (tuple((BucketKey(i), x) for i, x in enumerate(b)), None),
    lambda _, children: Bucket(children),
    flatten_func=lambda b: (tuple(b), None),
)


def bucket_layout(decl: Any, template: Any) -> list[tuple[Any, int | None]]:
    """For each leaf of a bucket's chain state: its torch name (or ``STEP``) and its parameter's index in the bucket.

    The index is ``None`` for a leaf the chain keeps once for the whole bucket
    (the step count, or a scalar such as a schedule-free weight sum): every
    parameter of the bucket shares it.
    """
    result = []
    for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]:
        where = [key.idx for key in path if isinstance(key, BucketKey)]
        if len(where) > 1:
            raise TypeError(f"{decl.__name__}: a chain state leaf nests the parameters twice ({path})")
        rest = tuple(key for key in path if not isinstance(key, BucketKey))
        result.append((_torch_name(decl, path_parts(rest)), where[0] if where else None))
    for index in sorted({i for _, i in result if i is not None}) + [None]:
        _check_repeats(decl, [name for name, i in result if i == index])
    return result


def _bucket_structure(decl: Any, static: tuple, dynamic: dict, size: int, shape: tuple, dtype: Any) -> tuple:
    def init(params, dynamic):
        return build_chain(decl, static, dynamic).init(Bucket(params))

    param = jax.ShapeDtypeStruct(shape, dtype)
    template = jax.eval_shape(init, [param] * size, dynamic)
    found = bucket_layout(decl, template)
    per_param = tuple(sorted((str(name), i) for name, i in found if i is not None))
    shared = tuple(sorted(str(name) for name, i in found if i is None))
    return per_param, shared, [name for name, i in found if i is None]


def shared_entries(decl: Any, static: tuple, dynamic: dict, shape: tuple, dtype: Any) -> tuple[tuple, bool]:
    """``(names, bucketable)``: the torch names of the state a chain keeps once per bucket, and whether it can share.

    A chain can step several parameters through one state when its state over
    two parameters is its state over one, twice, plus the same shared leaves:
    then every per-parameter computation is the one it makes for one parameter.
    Otherwise (a chain that builds its own per-leaf lists) each parameter keeps
    a bucket of its own. Cached by structure.
    """
    key = ("shared", decl, static, _dynamic_structure(dynamic), shape, dtype)
    if key in _ENTRIES:
        _ENTRIES.move_to_end(key)
        return _ENTRIES[key]
    one_per, one_shared, names = _bucket_structure(decl, static, dynamic, 1, shape, dtype)
    two_per, two_shared, _ = _bucket_structure(decl, static, dynamic, 2, shape, dtype)
    doubled = tuple(sorted(one_per + tuple((name, 1) for name, _ in one_per)))
    bucketable = two_shared == one_shared and two_per == doubled
    step = decl.step_name
    torch_names = tuple(step if name is STEP else name for name in names if not (name is STEP and step is None))
    result = (tuple(dict.fromkeys(torch_names)), bucketable)
    _remember(key, result)
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


def into_chain(value: Any, template: Any, param: Any, key: str) -> Any:
    """A torch-named entry as the chain keeps it (a complex parameter's as its real view), checked against
    ``template``."""
    value = jnp.asarray(value)
    if _is_real_view(template, param) and jnp.iscomplexobj(value):
        value = jnp.stack([jnp.real(value), jnp.imag(value)], axis=-1)
    if value.shape != template.shape:
        expected, _ = torch_shape_dtype(template, param)
        raise ValueError(f"state entry {key!r} has shape {tuple(jnp.asarray(value).shape)}, but this optimizer "
                         f"keeps it with shape {expected} for a parameter of shape {tuple(param.shape)}")
    return value.astype(template.dtype)


def out_of_chain(leaf: Any, param: Any) -> Any:
    """A chain-state leaf as torch keeps the entry (complex for a complex parameter's real view)."""
    if _is_real_view(leaf, param):
        return jax.lax.complex(leaf[..., 0], leaf[..., 1]).astype(param.dtype)
    return leaf


def order_keys(decl: Any) -> list[str]:
    """torch's key order in a state dict: the step first, then ``state_names`` in declaration order."""
    return ([decl.step_name] if decl.step_name else []) + list(decl.state_names)


def _shared_value(decl: Any, name: Any, leaf: Any, shared: dict, param: Any, fresh: Any) -> Any:
    if name is STEP and decl.step_name is None:
        return jnp.where(fresh, 0, 1).astype(leaf.dtype)
    if name is STEP:
        step = shared.get(decl.step_name)
        return leaf if step is None else jnp.asarray(step).reshape(()).astype(leaf.dtype)
    return into_chain(shared[name], leaf, param, name) if name in shared else leaf


def bucket_state(decl: Any, template: Any, found: list, states: list[dict], shared: dict, params: list,
                 fresh: Any) -> Any:
    """The chain state of a bucket from its parameters' torch-named entries and the bucket's shared ones.

    Entries a parameter lacks keep the template's initial values (an option
    switched on later, amsgrad, starts from its initial state, as in torch).
    ``fresh`` (a traced bool) says that the bucket's parameters had no state
    before this step; it matters only where torch keeps no step
    (``step_name = None``): the count is then 0 for fresh parameters and 1 otherwise.
    """
    leaves, treedef = jax.tree.flatten(template)
    out = []
    for leaf, (name, i) in zip(leaves, found):
        if i is None:
            out.append(_shared_value(decl, name, leaf, shared, params[0], fresh))
        elif name is not STEP and name in states[i]:
            out.append(into_chain(states[i][name], leaf, params[i], name))
        else:
            out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def split_bucket_state(decl: Any, state: Any, found: list, params: list) -> tuple[list[dict], dict]:
    """A bucket's chain state as each parameter's torch-named entries and the entries the bucket shares."""
    per_param: list[dict] = [{} for _ in params]
    shared: dict = {}
    for leaf, (name, i) in zip(jax.tree.leaves(state), found):
        target = shared if i is None else per_param[i]
        if name is STEP:
            if decl.step_name is not None and decl.step_name not in target:
                target[decl.step_name] = jnp.asarray(leaf, jnp.float32)
        else:
            target[name] = out_of_chain(leaf, params[0] if i is None else params[i])
    return per_param, shared


def to_torch(decl: Any, state: Any, names: list, param: Any) -> dict:
    """One parameter's chain state under torch's names (the step as a float32 scalar, as torch keeps it)."""
    found = {}
    for leaf, name in zip(jax.tree.leaves(state), names):
        if name is STEP:
            if decl.step_name is not None and decl.step_name not in found:
                found[decl.step_name] = jnp.asarray(leaf, jnp.float32)
        else:
            found[name] = out_of_chain(leaf, param)
    return {key: found[key] for key in order_keys(decl) if key in found}


def alike_runs(keys: list, size: float) -> tuple[list[list[int]], list[int]]:
    """Indices of equal ``keys`` in runs of ``size``, and the indices left over (fewer than ``size`` of a key).

    Programs over alike runs (parameters of one shape...) compile once for all
    of them: the step's stores (``_stores``), packs (``_packing``) and programs (``_step``).
    """
    alike: dict = {}
    for i, key in enumerate(keys):
        alike.setdefault(key, []).append(i)
    runs, rest = [], []
    for indices in alike.values():
        if len(indices) < size:
            rest.extend(indices)
            continue
        whole = len(indices) - len(indices) % int(size)
        runs.extend(indices[start:start + int(size)] for start in range(0, whole, int(size)))
        rest.extend(indices[whole:])
    return runs, sorted(rest)


# --- the compiled update ------------------------------------------------------------------------------------


def build_chain(decl: Any, static: tuple, dynamic: dict) -> Any:
    tx = decl.chain_builder(**dict(static), **dynamic)
    return complex_as_real(tx) if decl.complex_as_real else tx


def one_loop_requested() -> bool:
    """Whether ``XLA_FLAGS`` turns on XLA:CPU's multi-output fusion (then the fused tier computes in one loop)."""
    return "xla_cpu_use_multi_output_fusion" in os.environ.get("XLA_FLAGS", "")


def _bucket_update(decl: Any, tx: Any, params: list, grads: list, states: list[dict], shared: dict, fresh: Any,
                   keep: Any = None) -> tuple[list, list[dict], dict]:
    """One bucket's step: the chain applied once to its parameters, with their state and the shared one.

    The parameters' torch-named entries become the bucket's chain state here
    (at trace time: a program's inputs and outputs are torch's entries), and
    the new chain state is split back into them.
    """
    params = Bucket(params)
    template = tx.init(params)
    found = bucket_layout(decl, template)
    state = bucket_state(decl, template, found, states, shared, params, fresh)
    new_params, new_state = _stepped(tx, params, grads, state, keep)
    per_param, new_shared = split_bucket_state(decl, new_state, found, params)
    return new_params, per_param, new_shared


def _stepped(tx: Any, params: list, grads: list, state: Any, keep: Any) -> tuple[list, Any]:
    """A bucket's new parameters and chain state."""
    # jax.grad of a real loss is the conjugate of torch's gradient
    grads = Bucket(jnp.conj(g) if jnp.iscomplexobj(g) else g for g in grads)
    updates, new_state = _chain_update(tx, Bucket(params), grads, state, keep)
    return [jnp.asarray(p + u).astype(p.dtype) for p, u in zip(params, updates)], new_state


def store_update(decl: Any, static: tuple, dynamic: dict, params: list, grads: list, state: Any,
                 keep: Any = None) -> tuple[list, Any]:
    """A store's step: the chain applied once to its parameters, with the chain's own state over them (what
    the store keeps; see :func:`stored_chain_state`), so nothing is translated."""
    global _traces
    _traces += 1
    return _stepped(build_chain(decl, static, dynamic), params, grads, state, keep)


def _chain_update(tx: Any, params: Any, grads: Any, state: Any, keep: Any) -> tuple[Any, Any]:
    """``tx.update`` of a bucket; with ``keep`` (a runtime True), the updates computed a second time.

    XLA:CPU emits one loop per materialised output (the state entries, then the
    parameter re-reading them: about 40 bytes per float32 Adam parameter where
    one loop moves 28). The second computation reads copies of the inputs that
    XLA cannot merge with the originals (``where(keep, x, 0)``), so that its loop
    reads only the inputs; under XLA:CPU's multi-output fusion (an ``XLA_FLAGS``
    option, see ``benchmarks/FINDINGS.md``) all the loops then merge into one.
    """
    updates, new_state = tx.update(grads, state, params)
    if keep is not None:
        grads, state, params = jax.tree.map(lambda x: jnp.where(keep, x, jnp.zeros_like(x)), (grads, state, params))
        updates, _ = tx.update(grads, state, params)
    return updates, new_state


def pack_update(decl: Any, static: tuple, dynamic: dict, pieces: list, grads: list, state: Any,
                keep: Any = None) -> tuple[list, Any]:
    """A pack's step: the chain applied to the concatenation of its parameters, as one parameter.

    ``state`` is the chain's own state over that one flat parameter (what the
    pack keeps; see :func:`stored_chain_state`), so nothing is translated. The
    gradients are concatenated into a temporary buffer (XLA does not fuse a
    concatenation read by several loops); each piece then adds its slice of
    the update, so no updated concatenation is materialised. An elementwise
    chain gives a flat buffer exactly the numbers it gives each slice.
    """
    global _traces
    _traces += 1
    tx = build_chain(decl, static, dynamic)
    updates, new_state = _chain_update(tx, Bucket(_flat(pieces)), Bucket(_flat(grads)), state, keep)
    return _added_slices(pieces, updates[0]), new_state


def stored_chain_state(decl: Any, static: tuple, dynamic: dict, params: list, states: list[dict],
                       shared: dict) -> Any:
    """The chain's state over ``params`` (a store's, or a pack's one flat parameter) from their torch-named
    entries and the shared ones.

    Entries they lack start from the chain's initial state (all of them for
    parameters without state: the chain's ``init``, as torch's lazy
    initialisation). One compiled program does it, reused by alike stores; a
    single parameter's initial state is the chain's ``init`` run as it is (the
    per-parameter tiers would otherwise compile one program per shape).
    """
    if len(params) == 1 and not any(states) and not shared:
        return build_chain(decl, static, dynamic).init(Bucket(params))
    return _compiled_chain_state(decl, static, dynamic, params, states, shared)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _compiled_chain_state(decl: Any, static: tuple, dynamic: dict, params: list, states: list[dict],
                          shared: dict) -> Any:
    template = build_chain(decl, static, dynamic).init(Bucket(params))
    if not any(states) and not shared:
        return template
    return bucket_state(decl, template, bucket_layout(decl, template), states, shared, Bucket(params), False)


def packed_entries(decl: Any, state: Any, found: list, param: Any) -> dict:
    """A pack's chain state under torch's names, in torch's order (the step as a float32 scalar)."""
    (per_param,), shared = split_bucket_state(decl, state, found, [param])
    merged = {**shared, **per_param}
    return {key: merged[key] for key in order_keys(decl) if key in merged}


def group_update(decl: Any, static: tuple, buckets: tuple, dynamic: dict, params: list, grads: list,
                 states: list, shared: list, fresh: Any, keep: Any = None) -> tuple:
    """One group's step: the chain for its options, applied once per bucket of parameters.

    ``buckets`` (static) lists the parameters' indices bucket by bucket;
    ``shared[b]`` and ``fresh[b]`` are bucket ``b``'s shared entries and whether
    its parameters had no state before (see :func:`bucket_state`). A parameter
    without state yet comes with its initial state from :func:`init_states`, so
    that the first step and the later ones are one program. Returns the new
    parameters, their entries and each bucket's shared entries.
    """
    global _traces
    _traces += 1
    tx = build_chain(decl, static, dynamic)
    new_params, new_states, new_shared = [None] * len(params), [None] * len(params), []
    for b, members in enumerate(buckets):
        out_params, out_states, out_shared = _bucket_update(
            decl, tx, [params[i] for i in members], [grads[i] for i in members],
            [states[i] for i in members], shared[b], fresh[b], keep)
        for i, p, s in zip(members, out_params, out_states):
            new_params[i], new_states[i] = p, s
        new_shared.append(out_shared)
    return new_params, new_states, new_shared


def _flat(arrays: list) -> list:
    """A packed unit's parameters or gradients as the one flat vector the chain updates (concatenated in order)."""
    return [jnp.concatenate([jnp.ravel(a) for a in arrays])]


def _added_slices(pieces: list, update: Any) -> list:
    """Each of a pack's arrays plus its slice of the flat ``update``: the pack's new arrays."""
    out, offset = [], 0
    for x in pieces:
        out.append(jnp.asarray(x + jax.lax.slice_in_dim(update, offset, offset + x.size).reshape(x.shape))
                   .astype(x.dtype))
        offset += x.size
    return out


def fused_update(decl: Any, statics: tuple, kinds: tuple, dynamics: list, params: list, grads: list, states: list,
                 keep: Any) -> tuple[list, list]:
    """Every unit's step in one program: each a pack (``kinds[i] == "pack"``: :func:`pack_update`) or a store
    (``"store"``: :func:`store_update`) with its chain state. ``keep`` is a runtime True, used only when
    :func:`one_loop_requested`."""
    keep = keep if one_loop_requested() else None
    results = [(pack_update if kind == "pack" else store_update)(decl, static, dynamic, p, g, s, keep)
               for static, kind, dynamic, p, g, s in zip(statics, kinds, dynamics, params, grads, states)]
    return [r[0] for r in results], [r[1] for r in results]


def _compiler_options(spread: bool, mixed_packs: bool = False) -> dict:
    """XLA options of the facade's programs: no algebraic rewriting on the CPU, so that tiers agree bit for bit.

    XLA's algebraic simplifier rewrites ``m / broadcast(c)`` into a
    multiplication by ``1/c`` or not depending on how many loops read ``c``: a
    bias correction shared by a bucket of parameters would then round unlike
    the one a parameter's own program computes (one ulp apart). Without it, a
    parameter's numbers are the same in one program for all groups, one per
    group and one per parameter; the fused loops run as fast (benchmarks/step_time.py).
    A program over arrays spread across several devices (``spread``) keeps
    it: the SPMD partitioner relies on it to gather sharded state exactly as
    the replicated program computes.

    A program that updates only packs of several shapes (``mixed_packs``) is
    compiled with XLA:CPU's older loop emitter. Each new parameter of a pack
    is a loop that reads a slice of the flat update; the fusion emitters take
    about 10 ms to compile such a loop (15 times a loop without the slice), the
    older emitter about 4 ms. A pack of one shape compiles once for all alike
    packs and keeps the fusion emitters, whose loops ran faster over 100 x 1k;
    a pack of several shapes compiles for itself (Adam's first step over 200
    small tensors of seven shapes: 3.0 s, 1.4 s with the older emitter). The
    numbers are the same (the packed tier equals the foreach tier bit for bit
    either way).
    """
    if jax.default_backend() != "cpu" or spread:
        return {}
    options = {"xla_disable_hlo_passes": "algsimp"}
    if mixed_packs and _older_loop_emitter_available():
        options["xla_cpu_use_fusion_emitters"] = False
    return options


@functools.cache
def _older_loop_emitter_available() -> bool:
    """Whether this XLA:CPU takes ``xla_cpu_use_fusion_emitters`` (jaxlib releases without fusion emitters do not)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options={"xla_cpu_use_fusion_emitters": False}).lower(
            np.zeros(1, np.float32)).compile()
    except Exception:  # noqa: BLE001 - an unknown option: compile with the defaults
        return False
    return True


@functools.cache
def program(donate_params: bool, spread: bool = False, mixed_packs: bool = False) -> Callable:
    """The jitted :func:`fused_update`; the state's buffers are donated, the parameters' optionally.

    The engine passes only buffers that it alone holds (see :mod:`gradtx.optim._step`).
    ``spread``: the arrays live on several devices; ``mixed_packs``: the
    program updates only packs of several shapes (see :func:`_compiler_options`).
    """
    return jax.jit(fused_update, static_argnums=(0, 1, 2), donate_argnums=(4, 6) if donate_params else (6,),
                   compiler_options=_compiler_options(spread, mixed_packs))


_TRACED: collections.OrderedDict = collections.OrderedDict()
_TRACED_LIMIT = 256


def trace(donate: bool, args: tuple, spread: bool = False, mixed_packs: bool = False) -> None:
    """Traces (and so checks) a program before any program of the step runs, once per static signature.

    A chain that cannot be built from a group's options fails here, before any
    group has changed. Signatures already traced are remembered (boundedly).
    """
    key = (donate, spread, mixed_packs, *args[:3])
    if key in _TRACED:
        _TRACED.move_to_end(key)
        return
    program(donate, spread, mixed_packs).trace(*args)
    _TRACED[key] = None
    if len(_TRACED) > _TRACED_LIMIT:
        _TRACED.popitem(last=False)


_ENTRIES: collections.OrderedDict = collections.OrderedDict()
_ENTRIES_LIMIT = 1024


def layout_cache_size() -> int:
    """How many state layouts are cached (bounded; tests check that edited numbers do not add entries)."""
    return len(_ENTRIES)


def _dynamic_structure(dynamic: dict) -> tuple:
    return tuple((k, len(v) if isinstance(v, tuple) else None) for k, v in sorted(dynamic.items()))


def _remember(key: tuple, value: Any) -> None:
    _ENTRIES[key] = value
    if len(_ENTRIES) > _ENTRIES_LIMIT:
        _ENTRIES.popitem(last=False)


def _entries(decl: Any, static: tuple, dynamic: dict, shape: tuple, dtype: Any) -> tuple:
    """The state layout of a chain: cached by structure only (a chain's shapes never depend on its numbers)."""
    key = (decl, static, _dynamic_structure(dynamic), shape, dtype)
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
    _remember(key, result)
    return result


def state_entries(decl: Any, group: dict, param: Any) -> dict[str, tuple]:
    """``{torch name: (shape, dtype)}`` of the state the group's chain keeps for ``param``, the step included.

    Empty for an optimizer that keeps no chain (it checks its own entries).
    """
    if decl.chain_builder is None:
        return {}
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
