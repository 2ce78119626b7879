"""``opt.compile_step(loss_fn)``: the gradients and the update of a training step in one compiled program.

The torch-style loop ``loss, g = jax.value_and_grad(loss_fn)(opt.params, x, y);
opt.step(g)`` runs two programs, each parameter crossing the jit boundary twice
and the gradients materialised between them. :class:`CompiledStep` traces
``loss_fn``, its gradient, the optional clipping and the optimizer's update (the
engine's pure :func:`gradtx.optim._engine.group_update`) into one ``jax.jit``
program, whose inputs are

- the parameters' arrays and their per-parameter states (donated, as
  ``step()`` donates them: only buffers that the optimizer alone holds, see
  :func:`gradtx.optim._step.owned`),
- the dynamic option numbers of every param group (``lr``, ``betas``,
  ``weight_decay``...: editing them, or an ``lr_scheduler``, never recompiles),
- the arrays of the tree that are no parameters (frozen leaves of
  :func:`gradtx.optim.path_groups`: used by ``loss_fn``, never differentiated),
- the batch (never donated).

One program is compiled per batch shape and per static signature of the groups
(the same signatures ``step()`` compiles for). The numbers are those of the
two-call loop, step for step.

A call costs little Python beyond the program: what it gives the program (a
:class:`_Plan`) is kept, with the identities of the options, arrays and state
entries it last saw and stored, and a call that finds them all unchanged (no
step hooks, no bookkeeping around the update, a batch of arrays or numbers)
reads, checks and stores them with C-level iteration and passes option numbers
converted to arrays once. Anything else takes the full call, which checks and
plans again.

Optimizers whose step is the engine's update, possibly after Python bookkeeping
of group values (schedule-free, ADOPT, AdEMAMix), run in one program. Those that
drive their own step (Prodigy, SophiaH, Kron, GaLore, LBFGS) run the compiled
``loss_fn`` as the closure of their own ``step`` (``opt.step(closure)``): two
programs, but the same numbers (LBFGS evaluates that closure at its trial
points inside its own single program); ``step_fn.one_program`` tells which.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import operator
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from gradtx.optim import _dict_state, _engine, _hooks, _packing, _step
from gradtx.optim._hooks import _global_step_post_hooks, _global_step_pre_hooks
from gradtx.optim._options import check_group_options
from gradtx.optim._parameter import Parameter

try:
    from jax._src.core import trace_state_clean as _trace_state_clean
except ImportError:  # pragma: no cover - a JAX without it: every call is a full one, which checks it its own way
    _trace_state_clean = None

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer

__all__ = ["CompiledStep"]

_chain = chain.from_iterable
_DATA = operator.attrgetter("_data")
_consume = deque(maxlen=0).extend
_CHANGED = object()  # what a call that found something changed since the last one returns: the full call runs


# Names a ``_step`` override that only does Python bookkeeping around the base step never uses: one that reads
# gradients or evaluates closures itself drives its own step, and is run through ``opt.step(closure)``.
_OWN_STEP_NAMES = frozenset({"grad", "_take_gradients", "_evaluate", "_set_grads", "_value_and_grad"})


def _one_program(cls: type) -> bool:
    """Whether ``cls``'s step is the engine's update (one compiled program can replace it).

    True when ``step``, ``_update`` and ``_take_gradients`` are the base class's, and
    every ``_step`` override on the way calls ``super()._step`` without touching
    gradients (group bookkeeping in Python, as the schedule-free optimizers do).
    """
    from gradtx.optim._optimizer import Optimizer

    if getattr(cls, "chain_builder", None) is None:
        return False
    if any(getattr(cls, name) is not getattr(Optimizer, name) for name in ("step", "_update", "_take_gradients")):
        return False
    for klass in cls.__mro__:
        if klass is Optimizer:
            return True
        own = klass.__dict__.get("_step")
        if own is None:
            continue
        code = getattr(own, "__code__", None)
        names = set(code.co_names) if code is not None else set()
        if not {"super", "_step"} <= names or names & _OWN_STEP_NAMES:
            return False
    return True


def _static_leaf(leaf: Any) -> Any:
    """A leaf of the parameter tree that is no array, as part of the compile key (by value, else by identity)."""
    try:
        hash(leaf)
        return ("value", leaf)
    except TypeError:
        return ("id", id(leaf))


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _sharding(array: jax.Array) -> Any:
    """The sharding a new parameter is constrained to: its old one when it spans several devices."""
    sharding = getattr(array, "sharding", None)
    return sharding if sharding is not None and len(sharding.device_set) > 1 else None


def _check_one_placement(opt: Optimizer, boxes: list[Parameter]) -> None:
    """One program takes arrays of one device or one mesh: parameters committed to different ones are an error
    that names two of them and the ways out, raised before anything runs."""
    seen: dict[tuple, Parameter] = {}
    for p in boxes:
        if isinstance(p._data, jax.Array) and p._data.committed:
            seen.setdefault(_step.device_key(p._data), p)  # the key step() groups its programs by
    if len(seen) > 1:
        p, q = list(seen.values())[:2]
        where = lambda box: ", ".join(sorted(map(str, box._data.sharding.device_set)))  # noqa: E731
        raise ValueError(f"compile_step: the parameters live on different devices ({opt._describe(p)} on "
                         f"{where(p)}, {opt._describe(q)} on {where(q)}); one compiled program takes "
                         "arrays of one device or one mesh. Put them on one device or shard them over one mesh "
                         "(jax.device_put), or step with opt.step(grads), which steps each device's parameters "
                         "with programs of their own")


def _leaked_tracer_error(error: Exception) -> RuntimeError:
    """JAX's error for a tracer that ``loss_fn`` closes over, with what to change (raised while tracing, before
    the program runs: nothing has changed)."""
    return RuntimeError(
        "compile_step: loss_fn uses a value traced by another JAX transformation (it closes over a tracer, e.g. "
        "an array made inside a jitted function or a jax.grad); pass that value in the batch instead, "
        f"step_fn(x, y, value), and take it as an argument of loss_fn. JAX said: {error}")


@contextlib.contextmanager
def _leaked_tracers_explained() -> Iterator[None]:
    try:
        yield
    except jax.errors.UnexpectedTracerError as error:
        raise _leaked_tracer_error(error) from None


def _constrained(array: jax.Array, sharding: Any) -> jax.Array:
    """``array`` kept in ``sharding`` (the input's, when that spans several devices) rather than XLA's choice."""
    return array if sharding is None else jax.lax.with_sharding_constraint(array, sharding)


def _loss_and_aux(out: Any, has_aux: bool) -> tuple[Any, Any]:
    """``loss_fn``'s result as ``(loss, aux)``, after checking the loss is a real scalar."""
    if has_aux:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError("compile_step(loss_fn, has_aux=True): loss_fn must return a pair (loss, aux), got "
                            f"{type(out).__name__}; return (loss, aux), or compile with has_aux=False")
        loss, aux = out
    else:
        loss, aux = out, None
    if not hasattr(loss, "shape") or jnp.shape(loss) != ():
        shape = jnp.shape(loss) if hasattr(loss, "shape") else type(loss).__name__
        hint = " (with has_aux=False, loss_fn must return the loss alone)" if isinstance(loss, (tuple, list)) else ""
        raise TypeError(f"compile_step: loss_fn must return a scalar loss, got {shape}{hint}; reduce it first, e.g. "
                        "return jnp.mean(losses)")
    return loss, aux


def _as_arrays(dynamic: dict, before: dict | None = None, arrays: dict | None = None) -> dict:
    """A group's option numbers as device arrays (what jit makes of a Python float, weakly typed), converted once:
    a number equal to the one ``arrays`` was made from keeps its array."""
    out = {}
    for name, value in dynamic.items():
        if before is not None and name in before and before[name] == value:
            out[name] = arrays[name]
        else:
            out[name] = jax.tree.map(jnp.asarray, value)
    return out


class _Plan:
    """What a call gives the program, kept while nothing changes that it was made from.

    It is remade when a group's static options, the parameters, their arrays or
    state entries (assigned by a user, a ``load_state_dict``, an ``opt.step()``
    in between), ``skip_nonfinite``, ``donate_params``, the clipping or float64
    mode change; edited option numbers (a scheduler's ``lr``) are checked and
    converted again, with the same program. Arrays are recognised by identity
    (``id``), not held: a held array would be copied rather than donated. The
    entries a bucket shares (the step, never donated) are held between calls.
    """

    def __init__(self) -> None:
        self.states: list | None = None
        self.ids: list | None = None

    @classmethod
    def make(cls, opt: Optimizer, step: CompiledStep) -> _Plan:
        _check_one_placement(opt, [p for g in opt.param_groups for p in g["params"]])
        plan = cls()
        decl = type(opt)
        keys = set(_engine.order_keys(decl))
        statics, dynamics, fresh, states, sizes = [], [], [], [], []
        plan.buckets, plan.members, plan.shared, param_fresh = [], [], [], []
        for index, group in enumerate(opt.param_groups):
            check_group_options(opt, group, index)
            static, dynamic = _engine.split_options(decl, group, where=f"param group {index}")
            group_states = [{k: v if isinstance(v, jax.Array) else jnp.asarray(v)
                             for k, v in opt._state.get(p, {}).items() if k in keys} for p in group["params"]]
            flags = [not s for s in group_states]
            if any(flags):  # torch's lazy initialisation, as step() does it
                inits = iter(_engine.init_states(decl, static, dynamic,
                                                 [p.data for p, f in zip(group["params"], flags) if f]))
                group_states = [next(inits) if f else s for s, f in zip(group_states, flags)]
            first = group["params"][0] if group["params"] else None
            names, bucketable = ((), True) if first is None else _engine.shared_entries(
                decl, static, dynamic, tuple(first.shape), jnp.dtype(first.dtype))
            buckets, shared = _dict_state.buckets(group_states, flags, names, bucketable)
            plan.members.append([[len(states) + i for i in members] for members in buckets])
            plan.shared.append(shared)
            statics.append(static)
            dynamics.append(dynamic)
            fresh.append(jnp.asarray([flags[members[0]] for members in buckets], dtype=bool))
            param_fresh += flags
            states += group_states
            sizes.append(len(group["params"]))
            plan.buckets.append(buckets)
        where, static_others, others, treedef = step._tree_parts()
        plan.boxes = [p for g in opt.param_groups for p in g["params"]]
        plan.state_names = state_names = tuple(tuple(s) for s in states)  # (a bucket's shared entries apart)
        plan.states = [s[k] for s, names in zip(states, state_names) for k in names]  # the program's state order
        plan.bucket_of = [0] * len(states)  # each parameter's bucket, counted over all groups
        for b, members in enumerate(m for group_members in plan.members for m in group_members):
            for i in members:
                plan.bucket_of[i] = b
        plan.statics, plan.dynamics, plan.others = statics, dynamics, others
        plan.arrays = [_as_arrays(d) for d in dynamics]
        plan.fresh = fresh
        plan.all_fresh = np.asarray(param_fresh, dtype=bool)
        plan.any_fresh = bool(plan.all_fresh.any())
        plan.max_grad_norm = step.max_grad_norm
        plan.clip = plan.max_grad_norm is not None
        plan.max_norm = jnp.asarray(float(plan.max_grad_norm)) if plan.clip else None
        plan.donate, plan.skip = bool(opt.donate_params), bool(opt.skip_nonfinite)
        plan.x64 = jax.config.jax_enable_x64
        key = (decl, (where, static_others, treedef), tuple(sizes), tuple(statics), tuple(plan.buckets),
               state_names, plan.skip, plan.clip, tuple(_sharding(p._data) for p in plan.boxes),
               tuple(tuple(sorted((k, _sharding(v)) for k, v in s.items())) for s in states))
        plan.program = step._program_for(key, plan.donate)
        plan.groups = [(group["params"], len(group["params"]), *_step.options_of(group)) for group in opt.param_groups]
        plan._options_seen(opt)
        return plan

    def _options_seen(self, opt: Optimizer) -> None:
        """Records every group's keys and values, and the parameter counts, for :meth:`current`'s first check."""
        groups = opt.param_groups
        self.option_keys = list(_chain(groups))
        self.option_values = list(_chain(map(dict.values, groups)))
        self.params_lists = [group["params"] for group in groups]
        self.sizes = list(map(len, self.params_lists))

    def current(self, opt: Optimizer, step: CompiledStep) -> tuple[list, list, list] | None:
        """``(state dicts, parameter arrays, state entries in the program's order)`` for the next call, or None when
        this plan no longer describes ``opt``: an array or entry that is not the one the last call stored
        (assigned, loaded, or stepped by ``opt.step()`` since), other groups, parameters, static options or
        settings. Edited option numbers and a new clipping threshold are taken (the same program)."""
        if self.ids is None or jax.config.jax_enable_x64 != self.x64:
            return None
        if opt.donate_params is not self.donate_seen or opt.skip_nonfinite is not self.skip_seen:
            if bool(opt.donate_params) != self.donate or bool(opt.skip_nonfinite) != self.skip:
                return None
            self.donate_seen, self.skip_seen = opt.donate_params, opt.skip_nonfinite
        if step.max_grad_norm is not self.max_grad_norm:
            step._check_max_grad_norm()
            if (step.max_grad_norm is None) != (self.max_grad_norm is None):
                return None
            self.max_grad_norm = step.max_grad_norm
            self.max_norm = None if step.max_grad_norm is None else jnp.asarray(float(step.max_grad_norm))
        groups = opt.param_groups
        values = list(_chain(map(dict.values, groups)))  # (the parameter lists are among the values)
        if not (len(values) == len(self.option_values) and all(map(operator.is_, values, self.option_values))
                and list(_chain(groups)) == self.option_keys and list(map(len, self.params_lists)) == self.sizes
                ) and not self._groups_fit(opt):
            return None
        entries = list(map(opt._state.get, self.boxes))
        if None in entries:
            return None
        params = list(map(_DATA, self.boxes))
        try:
            values = list(_chain(map(dict.values, entries)))
        except TypeError:  # an entry replaced by another kind of mapping
            return None
        if list(map(id, params)) != self.ids[0] or list(map(id, values)) != self.ids[1]:
            return None
        return entries, params, self.pick(values)  # (values dropped: the program's lists hold the only references)

    def _groups_fit(self, opt: Optimizer) -> bool:
        """Whether the groups are those of the plan, with only option numbers edited (then taken, checked)."""
        groups = opt.param_groups
        if len(groups) != len(self.groups):
            return False
        for index, (group, (params, n, keys, values)) in enumerate(zip(groups, self.groups)):
            if group["params"] is not params or len(params) != n:
                return False
            if not _step.same_options(group, keys, values) and not self._new_numbers(opt, index):
                return False
        self._options_seen(opt)
        return True

    def _new_numbers(self, opt: Optimizer, index: int) -> bool:
        """Takes group ``index``'s edited options (checked) when only their numbers changed: no new program."""
        group, decl = opt.param_groups[index], type(opt)
        check_group_options(opt, group, index)
        static, dynamic = _engine.split_options(decl, group, where=f"param group {index}")
        if static != self.statics[index] or dynamic.keys() != self.dynamics[index].keys():
            return False
        self.arrays[index] = _as_arrays(dynamic, self.dynamics[index], self.arrays[index])
        self.dynamics[index] = dynamic
        self.groups[index] = (group["params"], len(group["params"]), *_step.options_of(group))
        return True

    def stored(self, opt: Optimizer, entries: list, params: list) -> None:
        """Records the arrays the step stored, recognised by identity on the next call."""
        if self.ids is None:  # where each of the program's state entries sits among a parameter's entries
            positions, offset = [], 0
            for entry, names in zip(entries, self.state_names):
                keys = list(entry)
                positions += [offset + keys.index(k) for k in names]
                offset += len(keys)
            self.pick = _picker(positions)
        self.ids = [list(map(id, params)), list(map(id, _chain(map(dict.values, entries))))]
        self.donate_seen, self.skip_seen = opt.donate_params, opt.skip_nonfinite


def _picker(positions: list[int]) -> Callable[[list], list]:
    """``values -> [values[i] for i in positions]``, as one C call."""
    if not positions:
        return lambda values: []
    get = operator.itemgetter(*positions)
    return (lambda values: [get(values)]) if len(positions) == 1 else (lambda values: list(get(values)))


class CompiledStep:
    """What :meth:`Optimizer.compile_step` returns: ``step_fn(*batch, **kw)`` trains one step.

    Each call computes ``loss_fn(opt.params, *batch, **kw)``, its gradient with
    respect to the optimizer's parameters, optionally clips it (``max_grad_norm``,
    torch's ``clip_grad_norm_``), and steps the optimizer: opt.params, opt.state
    and the step counts change as ``opt.step(grads)`` changes them. Returns the
    loss, or ``(loss, aux)`` with ``has_aux=True``.

    Attributes:
      one_program: whether the step is one compiled program (False for optimizers
        that drive their own step: they get the compiled ``loss_fn`` as their closure).
      max_grad_norm: the clipping threshold (None: no clipping); may be edited
        between calls without recompiling (None <-> a number recompiles once).
      last_grad_norm: the total 2-norm of the gradients before clipping of the last
        call (a scalar array; None before the first call or without clipping).
    """

    def __init__(self, opt: Optimizer, loss_fn: Callable, has_aux: bool = False,
                 max_grad_norm: float | None = None) -> None:
        if not callable(loss_fn):
            raise TypeError(f"compile_step: loss_fn must be a function loss_fn(params, *batch) -> loss, got "
                            f"{type(loss_fn).__name__}")
        self.optimizer = opt
        self.loss_fn = loss_fn
        self.has_aux = bool(has_aux)
        self.one_program = _one_program(type(opt))
        self.max_grad_norm = max_grad_norm
        self._check_max_grad_norm()
        self.last_grad_norm = None
        self._batch_tree = None
        self._flat_batch = -1  # the number of batch arguments when the batch is arrays or numbers, none nested
        self._plain_leaves = frozenset({type(jnp.zeros(())), np.ndarray, float, int, bool, complex})
        from gradtx.optim._optimizer import Optimizer

        self._plain = self.one_program and type(opt)._step is Optimizer._step  # no bookkeeping around the update
        self._programs: dict = {}
        self._forward = jax.jit(self._evaluate)
        self._closure: tuple = ((), None)
        self._plan: _Plan | None = None
        self._pending: tuple = ((), {})
        self._hooked = _hooks.with_step_hooks(lambda opt: self._step(*self._pending))

    def _check_max_grad_norm(self) -> None:
        value = self.max_grad_norm
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, jax.Array)):
            raise TypeError(f"compile_step: max_grad_norm must be a number or None, got {value!r}")
        if not self.one_program:
            raise ValueError(f"compile_step: max_grad_norm is not available for {type(self.optimizer).__name__}, "
                             "which evaluates its closure itself (its step is not the engine's update); compute the "
                             "gradients, clip them with gradtx.clip_grad_norm and call opt.step(grads) instead")

    # --- the call -------------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and self._plain:
            out = self._unchanged_call(args)
            if out is not _CHANGED:
                return out
        opt = self.optimizer
        self._check_batch(args, kwargs)
        self._check_max_grad_norm()
        if not self.one_program:
            return self._two_programs(args, kwargs)
        self._pending = (args, kwargs)
        try:
            return self._hooked(opt)  # hooks see step()'s arguments: none (the gradients are made in the program)
        finally:
            self._pending = ((), {})

    def _check_batch(self, args: tuple, kwargs: dict) -> None:
        """Refuses tracers and a batch whose tree structure differs from the first call's, before anything runs."""
        leaves, tree = jax.tree.flatten((args, kwargs))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves) or _hooks._under_transformation():
            raise RuntimeError(
                "a compiled step was called under a JAX transformation (jax.jit, jax.grad, jax.vmap...) or with "
                "traced arrays; it is itself one compiled program and changes the optimizer's Python objects: call "
                "step_fn(*batch) outside the transformation, with concrete arrays")
        for i, leaf in enumerate(leaves):
            if not (_is_array(leaf) or isinstance(leaf, (bool, int, float, complex))):
                raise TypeError(f"compile_step: batch leaf {i} is a {type(leaf).__name__}; the batch may hold arrays "
                                "and numbers only (put other settings in loss_fn, e.g. with functools.partial)")
        if self._batch_tree is None:
            self._batch_tree = tree
            if not kwargs and all(type(arg) in self._plain_leaves for arg in args):
                self._flat_batch = len(args)
        elif tree != self._batch_tree:
            raise ValueError(f"compile_step: the batch's tree structure changed from {self._batch_tree} to {tree}; "
                             "one compiled step takes batches of one structure (shapes may change: each new shape "
                             "compiles once). Call opt.compile_step(loss_fn) again for batches of the other structure")

    def _tree_parts(self) -> tuple[list, list[tuple], list, Any]:
        """The parameter tree as leaves: ``(boxes' slots, others' slots, other arrays, treedef)``."""
        opt = self.optimizer
        leaves, treedef = jax.tree.flatten(opt._structure(), is_leaf=lambda x: isinstance(x, Parameter))
        slot = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
        where = tuple((j, slot[id(leaf)]) for j, leaf in enumerate(leaves) if isinstance(leaf, Parameter))
        others = [leaf for leaf in leaves if not isinstance(leaf, Parameter)]
        static_others = tuple(None if _is_array(leaf) else _static_leaf(leaf) for leaf in others)
        arrays = [leaf for leaf in others if _is_array(leaf)]
        return where, static_others, arrays, (treedef, len(leaves))

    def _full_tree(self, layout: tuple, params: list, others: list) -> Any:
        where, static_others, (treedef, n) = layout
        full: list = [None] * n
        taken = {j for j, _ in where}
        for j, i in where:
            full[j] = params[i]
        arrays, rest = iter(others), iter(static_others)
        for j in range(n):
            if j not in taken:
                kind = next(rest)
                full[j] = next(arrays) if kind is None else kind[1]
        return jax.tree.unflatten(treedef, full)

    def _loss_and_grads(self, layout: tuple, params: list, others: list, args: tuple, kwargs: dict) -> tuple:
        def loss_of(params):
            return _loss_and_aux(self.loss_fn(self._full_tree(layout, params, others), *args, **kwargs),
                                 self.has_aux)

        return jax.value_and_grad(loss_of, has_aux=True)(params)

    # --- one program ----------------------------------------------------------------------------------------

    def _program_for(self, key: tuple, donate: bool) -> Callable:
        """The jitted program for a plan's static ``key`` (one per key: a call hashes no key)."""
        program = self._programs.get((key, donate))
        if program is None:  # the entries a bucket shares (argument 2) are never donated: every member holds them
            program = jax.jit(functools.partial(self._program, key), donate_argnums=(0, 1) if donate else (1,))
            self._programs[(key, donate)] = program
        return program

    def _program(self, key: tuple, params: list, states: list, shared: list, fresh: list, dynamics: list,
                 others: list, max_norm: Any, args: tuple, kwargs: dict) -> tuple:
        cls, layout, sizes, statics, buckets, state_names, skip, clip, shardings, state_shardings = key
        entries = iter(states)
        states = [{k: next(entries) for k in names} for names in state_names]
        (loss, aux), grads = self._loss_and_grads(layout, params, others, args, kwargs)
        norm = None
        if clip:
            grads, norm = gradtx.clip_grad_norm(grads, max_norm)
        new_params, new_states, new_shared, start = [], [], [], 0
        for size, static, group_buckets, dynamic, group_shared, flags in zip(sizes, statics, buckets, dynamics,
                                                                           shared, fresh):
            end = start + size
            ps, ss, sh = _engine.group_update(cls, static, group_buckets, dynamic, params[start:end],
                                              grads[start:end], states[start:end], group_shared, flags)
            new_params += ps
            new_states += ss
            new_shared.append(sh)
            start = end
        finite = None
        if skip:  # a non-finite gradient keeps everything as it was (the host then stores no fresh state)
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in grads])) if grads else jnp.bool_(True)
            new_params = [jnp.where(finite, n, o) for n, o in zip(new_params, params)]
            new_states = [{k: jnp.where(finite, v, s[k]) for k, v in n.items()} for n, s in zip(new_states, states)]
            new_shared = [[{k: jnp.where(finite, v, o[k]) if k in o else v for k, v in n.items()}
                           for n, o in zip(group_new, group_old)] for group_new, group_old in zip(new_shared, shared)]
        new_params = [_constrained(p, s) for p, s in zip(new_params, shardings)]
        new_states = [{k: _constrained(v, dict(s).get(k)) for k, v in n.items()}
                      for n, s in zip(new_states, state_shardings)]
        return new_params, new_states, new_shared, loss, aux, norm, finite

    def _unchanged_call(self, args: tuple) -> Any:
        """The call when nothing but option numbers changed since the last one (no hooks, no bookkeeping around the
        update, a batch of the first call's flat structure): the checks a full call makes, cheaply. ``_CHANGED``
        when something else changed (the full call then runs)."""
        plan, opt = self._plan, self.optimizer
        if (plan is None or plan.ids is None or len(args) != self._flat_batch or opt._packs
                or _global_step_pre_hooks or _global_step_post_hooks
                or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or not all(map(self._plain_leaves.__contains__, map(type, args)))  # (a tracer: the full call)
                or _trace_state_clean is None or not _trace_state_clean()):  # (under a transformation: refused)
            return _CHANGED
        with opt._step_lock:
            read = plan.current(opt, self)
            if read is None:
                return _CHANGED
            out = self._run(plan, *read, plan.shared, args, {})
            opt._step_count += 1
            opt._opt_called = True
        return out

    def _step(self, args: tuple, kwargs: dict) -> Any:
        opt = self.optimizer
        saved = opt.__dict__.get("_update")
        outcome: list = []
        opt._update = lambda: outcome.append(self._update(args, kwargs))
        try:
            loss = opt._step(None, None)  # a declaration's bookkeeping around the update runs as in step()
        finally:
            if saved is None:
                del opt._update
            else:
                opt._update = saved
        if not outcome:
            raise RuntimeError(f"{type(opt).__name__}'s step did not reach the engine's update; "
                               "this compiled step cannot run it")
        loss_aux = outcome[0]
        return loss_aux if loss is None else loss

    def _update(self, args: tuple, kwargs: dict) -> Any:
        """The engine's update with the gradients made in the same program; returns the loss (and aux)."""
        opt = self.optimizer
        _packing.release_packs(opt)  # the program steps separate arrays (the numbers are the packed ones')
        plan = self._plan
        read = None if plan is None else plan.current(opt, self)
        if read is None:
            plan = self._plan = _Plan.make(opt, self)
            states, plan.states = plan.states, None  # the plan holds no array of the step (a held one is copied)
            return self._run(plan, None, [p._data for p in plan.boxes], states, plan.shared, args, kwargs)
        return self._run(plan, *read, plan.shared, args, kwargs)

    def _run(self, plan: _Plan, entries: list | None, params: list, states: list, shared: list, args: tuple,
             kwargs: dict) -> Any:
        """Runs the plan's program and stores what it returns; ``entries``: the parameters' state dicts (None: read
        them)."""
        opt = self.optimizer
        params, states = _step.owned(params), _step.owned(states)  # one someone else holds is copied
        try:
            out = plan.program(params, states, shared, plan.fresh, plan.arrays, plan.others, plan.max_norm, args,
                               kwargs)
        except jax.errors.UnexpectedTracerError as error:
            raise _leaked_tracer_error(error) from None
        del params, states, shared
        new_params, new_states, new_shared, loss, aux, norm, finite = out
        skipped = finite is not None and not bool(finite)
        self.last_grad_norm = norm
        if skipped:
            opt.skipped_steps += 1
        if plan.any_fresh:
            self._store_fresh(plan, new_params, new_states, new_shared, skipped)
        else:  # every entry exists: its values replaced in place, the order kept
            entries = [opt._state[p] for p in plan.boxes] if entries is None else entries
            _consume(map(setattr, plan.boxes, repeat("_data"), new_params))
            _consume(map(dict.update, entries, new_states))
            shared = [bucket for group_shared in new_shared for bucket in group_shared]
            # one array per shared entry in every member's state: the bucket stays one
            _consume(map(dict.update, entries, map(shared.__getitem__, plan.bucket_of)))
            plan.stored(opt, entries, new_params)
            plan.shared = new_shared
        return (loss, aux) if self.has_aux else loss

    def _store_fresh(self, plan: _Plan, new_params: list, states: list, new_shared: list, skipped: bool) -> None:
        """Stores a step that created state entries, in torch's key order (the plan is made again next call)."""
        for members, group_shared in zip(plan.members, new_shared):
            for m, entries in zip(members, group_shared):
                if not (skipped and plan.all_fresh[m[0]]):
                    for i in m:
                        states[i] = {**states[i], **entries}
        if skipped:
            states = [{} if f else s for s, f in zip(states, plan.all_fresh)]
        _dict_state.store(self.optimizer, plan.boxes, new_params, states)
        plan.ids = None

    # --- the optimizer's own step, with the compiled loss as its closure ------------------------------------

    def _evaluate(self, params: Any, args: tuple, kwargs: dict) -> Any:
        return _loss_and_aux(self.loss_fn(params, *args, **kwargs), self.has_aux)

    def _closure_for(self, args: tuple, kwargs: dict) -> Callable:
        """``closure(params) -> loss`` over this batch; the same object for the same batch arrays (LBFGS compiles
        its step once per closure object)."""
        leaves = jax.tree.leaves((args, kwargs))
        ids = tuple(id(leaf) for leaf in leaves)
        held, closure = self._closure
        if closure is not None and tuple(id(leaf) for leaf in held) == ids:
            return closure

        def closure(params):
            return self._forward(params, args, kwargs)[0]

        self._closure = (leaves, closure)
        return closure

    def _two_programs(self, args: tuple, kwargs: dict) -> Any:
        opt = self.optimizer
        with _leaked_tracers_explained():
            aux = self._forward(opt.params, args, kwargs)[1] if self.has_aux else None
            loss = opt.step(self._closure_for(args, kwargs))
        return (loss, aux) if self.has_aux else loss
