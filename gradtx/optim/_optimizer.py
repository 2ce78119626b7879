r"""The ``Optimizer`` base class: torch.optim's contract over gradtx's chains.

A facade optimizer is a *declaration*: a subclass of :class:`Optimizer` that says
how one param group's options become a chain of transforms
(``chain_builder``), what torch calls that chain's state (``state_names``),
torch's signature and defaults, and torch's checks (``check_options``). The base
class does the rest once for every optimizer: grouping, checking, the compiled
step and its three tiers (:mod:`gradtx.optim._step`), per-parameter state,
``state_dict`` in torch's layout, pickling, ``__repr__`` and hooks.
docs/declaring.md walks through a complete declaration (``SGD``) and every
option a declaration has.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx._base import GradientTransformation
from gradtx._tree import all_finite
from gradtx.optim import _engine, _grads, _options, _packing, _pickling, _state_dict, _step
from gradtx.optim._groups import ParamGroups
from gradtx.optim._hooks import HookRegistry, with_step_hooks
from gradtx.optim._parameter import Parameter
from gradtx.optim._params import Taken, group_params, split_param_groups, tree_values
from gradtx.optim._required import number, required

__all__ = ["Optimizer", "number", "required"]


_all_finite = jax.jit(all_finite)


class Optimizer(HookRegistry):
    """Base class of the torch-style optimizers (docs/declaring.md shows how to declare one).

    ``params`` may be, as in torch 2.13, an iterable of parameters (here
    :class:`Parameter` boxes or arrays, which are boxed), an iterable of
    ``(name, parameter)`` pairs, or an iterable of param-group dicts whose
    ``"params"`` take any of these forms. It may also be a pytree of arrays
    (a dict, a flax or equinox tree...): its floating/complex array leaves are
    boxed and named by their path joined with ``"."``; other leaves are passed over.

    Names (``param_groups[i]["param_names"]``, used by ``state_dict`` and by
    ``load_state_dict(match="name")``) come from ``(name, parameter)`` pairs and
    from pytree paths; a plain list is unnamed, as in torch.

    ``opt.params`` gives the current values back in the structure they were given
    in (a list for a list, a ``{name: array}`` dict for named pairs, the tree for a
    tree; with several groups, a list with one entry per group), and
    ``opt.step(grads)`` takes gradients in that structure (``None`` leaves: no
    gradient). ``opt.step(closure=fn)`` differentiates ``fn(params) -> loss`` with
    JAX; a closure without arguments is called as torch calls it.

    Implementation tiers, per group: ``fused=True``, or both ``fused`` and
    ``foreach`` None (the default), puts the step of every such group in one
    compiled program; ``foreach=True`` compiles one per group (larger groups:
    see ``program_max_params`` below); ``foreach=False``
    or ``fused=False`` runs a compiled per-parameter update in a loop. All give
    the same numbers. Arrays a user holds are never invalidated: what was given
    to the constructor or read from ``p.data``, ``opt.params`` or ``opt.state``
    keeps its value after a step. The programs reuse (donate) the buffers only
    the optimizer holds and copy first any that someone else holds (see
    :mod:`gradtx.optim._step`); ``opt.donate_params = False`` never donates
    parameter buffers. ``step()`` is refused under ``jax.jit``/``grad``/``vmap``
    (jit the functional face instead); a failing step changes nothing in any
    group; steps from several threads are serialized.

    State: every tier keeps a group's state as the chain's own state over its
    parameters, and ``opt.state`` is a view of it under torch's names
    (:mod:`gradtx.optim._stores`); in the default tier an elementwise optimizer
    keeps its small parameters' state (at most ``opt.pack_max_numel`` elements,
    8192 by default; 0 turns it off) as if they were one flat parameter
    (:mod:`gradtx.optim._packing`). A program updates at most
    ``opt.program_max_params`` parameters of one shape (32 by default; None: no
    limit), and alike programs compile once. The numbers are the same in every tier.

    Other engine attributes: ``opt.skip_nonfinite = True`` checks every gradient
    before a step and skips the whole step (parameters, state and step counts
    untouched) when one holds a NaN or an infinity, counting it in
    ``opt.skipped_steps``; :meth:`current_hyperparams` gives each group's numeric
    options, schedules evaluated, for logging.

    Args:
      params: the parameters, in any of the forms above.
      defaults: the default options of every param group.
    """

    # The declaration (see docs/declaring.md).
    # One param group's options -> the chain; None for an optimizer that overrides _step (LBFGS, Kron, Prodigy).
    chain_builder: Callable[..., GradientTransformation] | None = None
    # The options the builder takes: chain_options (keys of the defaults; every declaration with a builder lists
    # them) and group_options (other per-group keys it takes); no other group key reaches the chain.
    group_options: tuple[str, ...] = ()
    # Options whose being zero removes a stage of the chain: the builder gets use_<option> (see flags).
    switches: tuple[str, ...] = ()
    state_names: dict[str, str] = {}
    step_name: str | None = "step"
    step_field: str = "count"  # the chain-state field that counts steps (torch's ``step_name`` entry)
    static_options: tuple[str, ...] = ()
    complex_as_real: bool = True
    # The chain treats every element on its own (no norms, no matrix products, no per-tensor scalars): the default
    # tier may then pack a group's small parameters into one flat buffer (gradtx.optim._packing).
    elementwise: bool = False
    pack_max_numel: int = 1 << 13  # larger parameters keep their own state buffers (their updates cost per byte)
    program_max_params: int = 32  # a larger group runs as programs over this many parameters (see _stores.group_stores)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:  # a subclass's own step still runs the hooks (once)
            cls.step = with_step_hooks(cls.__dict__["step"])

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._init_attributes()
        if not any(v is required for v in defaults.values()):
            self.check_options(defaults)
        self._state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, ParamGroups):  # gradtx.optim.path_groups(...): groups from path patterns, one tree
            groups, self._single = list(params.groups), False
        else:
            groups, self._single = split_param_groups(params)
        taken = Taken() if type(self).add_param_group is Optimizer.add_param_group else None  # else its own
        for group in groups:
            if taken is None:
                self.add_param_group(group)
            else:  # the earlier groups' parameters gathered once, not once per group
                self._add_param_group(group, taken)
                taken.add(self.param_groups[-1]["params"])
        if isinstance(params, ParamGroups):
            self._whole_tree = (params.tree, len(self.param_groups))
        if defaults.get("fused"):
            if defaults.get("differentiable"):
                raise RuntimeError("`fused` does not support `differentiable`")
            if defaults.get("foreach"):
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def _init_attributes(self) -> None:
        """Engine attributes, also restored on unpickling objects that lack them."""
        defaults = dict(_optimizer_step_pre_hooks=OrderedDict, _optimizer_step_post_hooks=OrderedDict,
                        _optimizer_state_dict_pre_hooks=OrderedDict, _optimizer_state_dict_post_hooks=OrderedDict,
                        _optimizer_load_state_dict_pre_hooks=OrderedDict,
                        _optimizer_load_state_dict_post_hooks=OrderedDict,
                        _trees=list, _single=lambda: False, _step_count=lambda: 0, _opt_called=lambda: False,
                        _in_step=lambda: False, donate_params=lambda: True, skip_nonfinite=lambda: False,
                        skipped_steps=lambda: 0, _packs=list, _plans=dict, _whole_tree=lambda: None,
                        _step_lock=threading.RLock)
        for name, make in defaults.items():
            if name not in self.__dict__:
                setattr(self, name, make())

    # --- the declaration's hooks ----------------------------------------------------------------------------

    @classmethod
    def check_options(cls, group: dict[str, Any]) -> None:
        """Raises torch's errors for invalid options (declarations override)."""

    def check_loaded_state(self, p: Parameter, entry: dict[str, Any], where: str) -> None:
        """Raises ValueError/TypeError for a loaded state entry this optimizer could not step from.

        ``load_state_dict`` calls it for each parameter's converted entry, before
        anything changes. Entries named in ``state_names`` are already checked
        (shape and dtype); declarations that keep other state (LBFGS) override it.
        """

    @classmethod
    def flags(cls, group: dict[str, Any]) -> dict[str, Any]:
        """The chain's structure from concrete option values: ``use_<option> = group[option] != 0`` per ``switches``.

        The flags reach the builder as static arguments, so that a stage that
        would multiply by zero is not compiled at all (torch's ``if weight_decay != 0``).
        """
        return _engine.switch_flags(cls.switches, group)

    # --- groups and parameters ------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group; options it does not give are filled from ``defaults``.

        ``param_group["params"]`` takes the forms the constructor accepts. A
        parameter already in another group, or listed twice in this one, is an
        error (torch only warns for the latter and then updates it twice).
        """
        self._add_param_group(param_group, Taken(self.param_groups))

    def _add_param_group(self, param_group: dict[str, Any], taken: Taken) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        if "params" not in param_group:
            raise KeyError("param_group must have a 'params' entry with the parameters to optimize")
        group = dict(param_group)
        boxed = group_params(group["params"], taken)
        group["params"] = boxed.params
        if boxed.names is not None and "param_names" not in group:
            group["param_names"] = boxed.names
        elif "param_names" in group and len(group["param_names"]) != len(boxed.params):
            raise ValueError(f"param_names has {len(group['param_names'])} names for {len(boxed.params)} parameters")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        params = group["params"]
        if len(params) != len(set(params)):
            raise ValueError("optimizer contains a parameter group with duplicate parameters; torch would update "
                             "such a parameter twice per step: list each parameter once")
        if self.param_groups and ("param_names" in group) != ("param_names" in self.param_groups[0]):
            text = "with names" if "param_names" in group else "without names"
            raise ValueError("all optimizer param groups should be with/without names. "
                             f"cannot add param group {text} to the optimizer")
        if not taken.boxes.isdisjoint(params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.check_options(group)
        self.param_groups.append(group)
        self._trees.append(boxed.tree)

    @property
    def params(self) -> Any:
        """The current parameter values, in the structure they were given in (a list of groups' if several)."""
        return tree_values(self._structure())

    def _structure(self) -> Any:
        if self._whole_tree is not None:
            tree, n = self._whole_tree
            return tree if len(self._trees) == n else [tree, *self._trees[n:]]
        if self._single and len(self._trees) == 1:
            return self._trees[0]
        return list(self._trees)

    def current_hyperparams(self) -> list[dict[str, Any]]:
        """The numeric options of every param group as the next step will use them: one line to log.

        Numbers and tuples of numbers (``lr``, ``betas``, ``eps``, ``weight_decay``,
        ``momentum``...) are returned as floats; a schedule is evaluated at the
        group's step count (the count torch would keep: the steps taken so far).
        Flags and strings are left out.

        Example::

            wandb.log({f"group{i}/{k}": v for i, g in enumerate(opt.current_hyperparams()) for k, v in g.items()})
        """
        return _options.current_hyperparams(self)

    @property
    def state(self) -> _packing.StateView:
        """Per-parameter state, ``{Parameter: {torch name: array}}``, as torch's ``optimizer.state``.

        A live view over the optimizer's storage (the chain's own state, or
        per-parameter dicts): reading never changes it, and assigning
        ``opt.state[p][name] = array`` writes through to the next step (see
        :mod:`gradtx.optim._packing` and :mod:`gradtx.optim._stores`).
        """
        return _packing.StateView(self)

    @state.setter
    def state(self, value: Any) -> None:
        _packing.release_packs(self)
        self._state = defaultdict(dict, {p: dict(entry) for p, entry in dict(value).items()})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears every ``p.grad``: to None (the default), or to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = None if set_to_none else jnp.zeros_like(p.grad)

    # --- the step -------------------------------------------------------------------------------------------

    def step(self, grads: Any = None, closure: Callable | None = None) -> Any:
        """Performs one optimization step; returns the closure's loss (or None).

        Args:
          grads: gradients in the structure of ``opt.params`` (``None`` leaves: no
            gradient). When omitted, each parameter's ``.grad`` is used.
          closure: ``closure(params) -> loss``, differentiated with JAX to set the
            gradients; or a closure without arguments, called as torch calls it.
            It may be passed positionally, as in ``opt.step(closure)``.
        """
        return self._step(grads, closure)

    step = with_step_hooks(step)

    def compile_step(self, loss_fn: Callable, has_aux: bool = False, max_grad_norm: float | None = None) -> Any:
        """A training step, gradients and update, as one compiled program: ``loss = step_fn(x, y)``.

        ``step_fn(*batch, **kw)`` computes ``loss_fn(opt.params, *batch, **kw)``, its
        gradient, optionally clips it (torch's ``clip_grad_norm_`` with
        ``max_grad_norm``; the pre-clip norm is ``step_fn.last_grad_norm``) and steps,
        with the numbers of ``loss, g = jax.value_and_grad(loss_fn)(opt.params, *batch);
        opt.step(g)``. Returns the loss, or ``(loss, aux)`` when ``has_aux``. See
        :mod:`gradtx.optim._compiled_step` and docs/facade.md.
        """
        from gradtx.optim._compiled_step import CompiledStep

        return CompiledStep(self, loss_fn, has_aux=has_aux, max_grad_norm=max_grad_norm)

    def _value_and_grad(self, closure: Callable) -> Callable[[list], tuple[Any, list]]:
        """``closure(params) -> loss`` as ``f(arrays) -> (loss, grads)``, with the parameters' arrays listed
        in ``param_groups`` order (what a driver such as LBFGS evaluates at trial points)."""
        return _grads.value_and_grad(self, closure)

    def _evaluate(self, closure: Callable) -> Any:
        """Evaluates the closure; a closure of the params is differentiated and its gradients set on every box."""
        return _grads.evaluate(self, closure)

    def _set_grads(self, grads: Any) -> None:
        """Sets every ``p.grad`` from a tree in the structure of ``opt.params``."""
        _grads.set_grads(self, grads)

    def _describe(self, p: Parameter) -> str:
        return _grads.describe(self, p)

    def _step(self, grads: Any = None, closure: Callable | None = None) -> Any:
        loss = self._take_gradients(grads, closure)
        self._update()
        return loss

    def _take_gradients(self, grads: Any = None, closure: Callable | None = None) -> Any:
        """Sets every ``p.grad`` from ``step``'s arguments (a gradient tree, or a closure, also given
        positionally) and returns the closure's loss (or None); declarations that override ``_step`` start here."""
        if closure is None and _grads.is_closure(grads):
            grads, closure = None, grads
        if grads is not None and closure is not None:
            raise ValueError("step() takes gradients or a closure, not both")
        if closure is not None:
            return self._evaluate(closure)
        if grads is not None:
            self._set_grads(grads)
        return None

    def _tier(self, group: dict[str, Any]) -> str:
        fused, foreach = group.get("fused"), group.get("foreach")
        if fused or (fused is None and foreach is None):
            return "fused"
        return "foreach" if foreach else "for-loop"

    def _update(self) -> None:
        """Runs the compiled update on every parameter that has a gradient (see :mod:`gradtx.optim._step`)."""
        if type(self).chain_builder is None:
            raise NotImplementedError(f"{type(self).__name__} declares no chain_builder; docs/declaring.md "
                                      "shows how to declare an optimizer (or override _step)")
        units = _step.plan(self)
        if self.skip_nonfinite and not bool(_all_finite([g for tier in units.values() for u in tier
                                                          for g in u.grads])):
            self.skipped_steps += 1
            return
        _step.run(self, units)

    # --- state_dict, pickling, repr ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The state in torch's layout, with NumPy copies of the arrays (see :mod:`gradtx.optim._state_dict`)."""
        return _state_dict.state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any], match: str = "position",
                        strict: bool = True) -> _state_dict.LoadResult:
        """Loads a state dict from :meth:`state_dict` or from torch (arrays as NumPy or anything array-like).

        Everything is checked before anything changes: a rejected dict leaves the
        optimizer as it was.

        Args:
          state_dict: ``{"state": {index: {name: array}}, "param_groups": [...]}``.
          match: ``"position"`` pairs parameters by their order, as torch does;
            ``"name"`` pairs them by name (``param_names``), so that reordered or
            edited models keep each parameter's state.
          strict: with ``match="name"``, whether names on one side only are an
            error; when False they are skipped and reported.

        Returns:
          ``(missing_keys, unexpected_keys)``: our parameter names without saved
          state, and saved names without a parameter here.
        """
        return _state_dict.load_state_dict(self, state_dict, match=match, strict=strict)

    def __getstate__(self) -> dict[str, Any]:
        """What pickling keeps, with every jax array as NumPy (:mod:`gradtx.optim._pickling`)."""
        return _pickling.optimizer_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        _pickling.restore_optimizer(self, state)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"
