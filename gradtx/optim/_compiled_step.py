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

Optimizers whose step is the engine's update, possibly after Python bookkeeping
of group values (schedule-free, ADOPT, AdEMAMix), run in one program. Those that
drive their own step (Prodigy, SophiaH, Kron, GaLore, LBFGS) run the compiled
``loss_fn`` as the closure of their own ``step`` (``opt.step(closure)``): two
programs, but the same numbers (LBFGS evaluates that closure at its trial
points inside its own single program); ``step_fn.one_program`` tells which.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from gradtx.optim import _engine, _hooks, _packing, _step
from gradtx.optim._options import check_group_options
from gradtx.optim._parameter import Parameter

if TYPE_CHECKING:
    from gradtx.optim._optimizer import Optimizer

__all__ = ["CompiledStep"]

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


@contextlib.contextmanager
def _leaked_tracers_explained() -> Iterator[None]:
    """Re-raises JAX's error for a tracer that ``loss_fn`` closes over with what to change (raised while tracing,
    before the program runs: nothing has changed)."""
    try:
        yield
    except jax.errors.UnexpectedTracerError as error:
        raise RuntimeError(
            "compile_step: loss_fn uses a value traced by another JAX transformation (it closes over a tracer, e.g. "
            "an array made inside a jitted function or a jax.grad); pass that value in the batch instead, "
            f"step_fn(x, y, value), and take it as an argument of loss_fn. JAX said: {error}") from None


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


def _fingerprint(group: dict) -> tuple:
    """A group's options as a comparable tuple: numbers, strings and tuples of them by value, the rest by identity."""
    simple = (int, float, bool, str, type(None))
    out = []
    for k, v in group.items():
        if k in ("params", "param_names"):
            continue
        if type(v) in simple or (type(v) is tuple and all(type(x) in simple for x in v)):
            out.append((k, type(v), v))
        else:
            out.append((k, "id", id(v)))
    return tuple(out)


class _Key:
    """The static argument of the program: a tuple whose hash is computed once (jit hashes it on every call)."""

    __slots__ = ("_hash", "value")

    def __init__(self, value: tuple) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Key) and self._hash == other._hash and self.value == other.value)


class _Plan:
    """What a call gives the program, kept while nothing changes that it was made from (checked cheaply).

    It is remade when a group's options (a scheduler's new ``lr``, say: then checked
    again), the parameters, their arrays or state entries (assigned by a user, or a
    ``load_state_dict``), ``skip_nonfinite``, ``donate_params`` or the clipping
    change. Arrays are recognised by identity (``id``), not held: a held array
    would be copied rather than donated.
    """

    def __init__(self) -> None:
        self.boxes: list = []
        self.states: list | None = None

    @classmethod
    def make(cls, opt: Optimizer, step: CompiledStep) -> _Plan:
        plan = cls()
        decl = type(opt)
        keys = set(_engine.order_keys(decl))
        statics, dynamics, fresh, states, sizes = [], [], [], [], []
        plan.buckets, plan.shared, plan.shared_names, plan.members, param_fresh = [], [], [], [], []
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
            buckets, shared = _step._buckets(group_states, flags, names, bucketable)  # as step() buckets them
            plan.members.append([[len(states) + i for i in members] for members in buckets])
            plan.buckets.append(buckets)
            plan.shared.append(shared)
            plan.shared_names.append(names)
            statics.append(static)
            dynamics.append(dynamic)
            fresh.append(np.asarray([flags[members[0]] for members in buckets], dtype=bool))
            param_fresh += flags
            states += group_states
            sizes.append(len(group["params"]))
        where, static_others, others, treedef = step._tree_parts()
        plan.boxes = [p for g in opt.param_groups for p in g["params"]]
        plan.states = states
        plan.state_names = [tuple(s) for s in states]  # per-parameter entries (a bucket's shared ones apart)
        plan.check_names = [names + tuple(shared) for names, shared in
                            zip(plan.state_names, (n for g, n in zip(sizes, plan.shared_names) for _ in range(g)))]
        plan.fresh, plan.dynamics, plan.others, plan.statics = fresh, dynamics, others, statics
        plan.all_fresh = np.asarray(param_fresh, dtype=bool)
        plan.any_fresh = bool(plan.all_fresh.any())
        plan.clip = step.max_grad_norm is not None
        plan.max_norm = float(step.max_grad_norm) if plan.clip else None
        plan.donate, plan.skip = bool(opt.donate_params), bool(opt.skip_nonfinite)
        plan.key = _Key((decl, (where, static_others, treedef), tuple(sizes), tuple(statics), tuple(plan.buckets),
                         plan.skip, plan.clip,
                         tuple(_sharding(p._data) for p in plan.boxes),
                         tuple(tuple(sorted((k, _sharding(v)) for k, v in s.items())) for s in states)))
        plan.groups = [(group["params"], len(group["params"]), _fingerprint(group)) for group in opt.param_groups]
        plan.ids = None
        return plan

    def holds(self, opt: Optimizer, step: CompiledStep) -> bool:
        """Whether this plan still describes ``opt`` (after :meth:`stored`)."""
        if self.ids is None or len(opt.param_groups) != len(self.groups):
            return False
        if bool(opt.donate_params) != self.donate or bool(opt.skip_nonfinite) != self.skip:
            return False
        max_norm = step.max_grad_norm
        if (max_norm is not None) != self.clip or (self.clip and float(max_norm) != self.max_norm):
            return False
        for index, (group, (params, n, fingerprint)) in enumerate(zip(opt.param_groups, self.groups)):
            if group["params"] is not params or len(params) != n:
                return False
            if _fingerprint(group) != fingerprint and not self._new_numbers(opt, index):
                return False
        state = opt._state
        for p, names, ids in zip(self.boxes, self.check_names, self.ids):
            entry = state.get(p)
            if entry is None or id(p._data) != ids[0] or _packing.pack_of(p) is not None:
                return False
            if tuple(id(entry.get(k)) for k in names) != ids[1]:
                return False
        return True

    def _new_numbers(self, opt: Optimizer, index: int) -> bool:
        """Takes group ``index``'s edited options (checked) when only their numbers changed: no new program."""
        group, decl = opt.param_groups[index], type(opt)
        check_group_options(opt, group, index)
        static, dynamic = _engine.split_options(decl, group, where=f"param group {index}")
        if static != self.statics[index] or dynamic.keys() != self.dynamics[index].keys():
            return False
        self.dynamics[index] = dynamic
        self.groups[index] = (group["params"], len(group["params"]), _fingerprint(group))
        return True

    def stored(self, opt: Optimizer) -> None:
        """Records the arrays the step stored; a plan made for fresh parameters is not reused (their state
        entries now exist)."""
        if self.any_fresh:
            self.ids = None
            return
        state = opt._state
        self.ids = [(id(p._data), tuple(id(state[p].get(k)) for k in names))
                    for p, names in zip(self.boxes, self.check_names)]


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
        self._jits = {donate: jax.jit(self._program, static_argnums=(0,),
                                      donate_argnums=(1, 2) if donate else (2,)) for donate in (True, False)}
        # (the entries a bucket shares, argument 3, are never donated: every member's state holds them)
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

    def _program(self, key: tuple, params: list, states: list, shared: list, fresh: list, dynamics: list,
                 others: list, max_norm: Any, args: tuple, kwargs: dict) -> tuple:
        cls, layout, sizes, statics, buckets, skip, clip, shardings, state_shardings = key.value
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
        if plan is None or not plan.holds(opt, self):
            plan = self._plan = _Plan.make(opt, self)
        boxes = plan.boxes
        params = _step.owned([p._data for p in boxes])
        states = plan.states if plan.states is not None else [
            {k: opt._state[p][k] for k in names} for p, names in zip(boxes, plan.state_names)]
        shared = plan.shared if plan.shared is not None else [
            [{k: opt._state[boxes[m[0]]][k] for k in names if k in opt._state[boxes[m[0]]]} for m in members]
            for members, names in zip(plan.members, plan.shared_names)]
        plan.states = plan.shared = None  # the plan holds no array of the step (a held one would be copied)
        states = _step._owned_states(states)
        program = self._jits[plan.donate]
        with _leaked_tracers_explained():
            new_params, new_states, new_shared, loss, aux, norm, finite = program(
                plan.key, params, states, shared, plan.fresh, plan.dynamics, plan.others, plan.max_norm, args, kwargs)
        del params, states, shared
        skipped = finite is not None and not bool(finite)
        for members, group_shared in zip(plan.members, new_shared):
            for m, entries in zip(members, group_shared):
                if not (skipped and plan.all_fresh[m[0]]):
                    for i in m:  # one array per shared entry in every member's state: the bucket stays one
                        new_states[i] = {**new_states[i], **entries}
        self.last_grad_norm = norm
        if skipped:
            opt.skipped_steps += 1
            new_states = [{} if f else s for s, f in zip(new_states, plan.all_fresh)]
        if plan.any_fresh:
            opt._store(boxes, new_params, new_states)  # new entries in torch's key order
        else:  # every entry exists: its values replaced in place, the order kept
            state = opt._state
            for p, data, new in zip(boxes, new_params, new_states):
                p._data = data
                state[p].update(new)
        plan.stored(opt)
        return (loss, aux) if self.has_aux else loss

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
