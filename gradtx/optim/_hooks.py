"""Hook registries: removable handles and the global step hooks shared by every optimizer (torch's semantics)."""

from __future__ import annotations

import functools
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["RemovableHandle", "register_optimizer_step_pre_hook", "register_optimizer_step_post_hook"]

_ids = itertools.count()


class RemovableHandle:
    """Removes the hook it was returned for: ``handle.remove()``, or use it as a context manager.

    Follows ``torch.utils.hooks.RemovableHandle``: the handle holds the registry
    weakly, and removing twice (or after the optimizer is gone) does nothing.
    """

    def __init__(self, registry: OrderedDict) -> None:
        self._registry = weakref.ref(registry)
        self.id = next(_ids)

    def remove(self) -> None:
        registry = self._registry()
        if registry is not None:
            registry.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def register(registry: OrderedDict, hook: Callable, prepend: bool = False) -> RemovableHandle:
    """Adds ``hook`` to ``registry`` (first when ``prepend``) and returns its handle."""
    handle = RemovableHandle(registry)
    registry[handle.id] = hook
    if prepend:
        registry.move_to_end(handle.id, last=False)
    return handle


_global_step_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
_global_step_post_hooks: OrderedDict[int, Callable] = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable) -> RemovableHandle:
    """Registers ``hook(optimizer, args, kwargs) -> None | (args, kwargs)`` before every optimizer's ``step``.

    As ``torch.optim.optimizer.register_optimizer_step_pre_hook``: global hooks
    run before each optimizer's own pre hooks; a hook may return new
    ``(args, kwargs)`` for ``step``.
    """
    return register(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable) -> RemovableHandle:
    """Registers ``hook(optimizer, args, kwargs) -> None`` after every optimizer's ``step``.

    Global post hooks run after each optimizer's own post hooks (torch's order).
    """
    return register(_global_step_post_hooks, hook)


def with_step_hooks(step: Callable) -> Callable:
    """Wraps a ``step`` method with the step hooks, the step counter and the scheduler flag.

    Pre hooks (global, then the optimizer's) may return ``(args, kwargs)`` to
    replace ``step``'s arguments; post hooks (the optimizer's, then global) see
    the arguments ``step`` ran with. A successful call increments
    ``optimizer._step_count`` and sets ``optimizer._opt_called`` (what lr
    schedulers check). Nested calls (a subclass's ``step`` calling the base one)
    run the hooks once.
    """
    if getattr(step, "_with_step_hooks", False):
        return step

    @functools.wraps(step)
    def hooked(self, *args: Any, **kwargs: Any) -> Any:
        refuse_under_transformation(self, args, kwargs)
        with self._step_lock:  # steps from several threads run one after another, each landing
            return _run_hooked(step, self, args, kwargs)

    hooked._with_step_hooks = True  # type: ignore[attr-defined]
    return hooked


def _run_hooked(step: Callable, self: Any, args: tuple, kwargs: dict) -> Any:
    if getattr(self, "_in_step", False):
        return step(self, *args, **kwargs)
    for hook in itertools.chain(list(_global_step_pre_hooks.values()), list(self._optimizer_step_pre_hooks.values())):
        result = hook(self, args, kwargs)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(
                    f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                )
            args, kwargs = result
    self._in_step = True
    try:
        out = step(self, *args, **kwargs)
    finally:
        self._in_step = False
    self._step_count += 1
    self._opt_called = True
    for hook in itertools.chain(list(self._optimizer_step_post_hooks.values()), list(_global_step_post_hooks.values())):
        hook(self, args, kwargs)
    return out


def _under_transformation() -> bool:
    """Whether JAX is tracing (inside jit, grad, vmap...): the facade's step cannot run there."""
    try:
        from jax._src import core
    except ImportError:  # pragma: no cover - a JAX without the private module: rely on the tracer check
        return False
    return not core.trace_state_clean()


def refuse_under_transformation(optimizer: Any, args: tuple, kwargs: dict) -> None:
    """Raises RuntimeError, before anything changes, when ``step`` is traced or given traced arrays."""
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))
    if traced or _under_transformation():
        raise RuntimeError(
            f"{type(optimizer).__name__}.step() was called under a JAX transformation (jax.jit, jax.grad, "
            "jax.vmap...). The facade's step changes Python objects (the parameters' boxes, the state, the step "
            "counts), which a traced function cannot do. Call opt.step(grads) outside the transformation, or "
            "write the jitted step with the functional face: tx = gradtx.adam(...); "
            "updates, state = tx.update(grads, state, params); params = gradtx.apply_updates(params, updates)."
        )


class HookRegistry:
    """The optimizer's own hook registries, as torch.optim.Optimizer's ``register_*_hook`` methods.

    The registries (``_optimizer_step_pre_hooks``...) are ordered dicts the
    optimizer creates; each method returns a handle that removes its hook.
    """

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs) -> None | (new_args, new_kwargs)``, called before each ``step``."""
        return register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs) -> None``, called after each ``step``."""
        return register(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer) -> None``, called before ``state_dict()`` builds the dict."""
        return register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer, state_dict) -> None | state_dict``; a returned dict replaces the result."""
        return register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer, state_dict) -> None | state_dict``; a returned dict is loaded instead."""
        return register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer) -> None``, called after ``load_state_dict`` has loaded."""
        return register(self._optimizer_load_state_dict_post_hooks, hook, prepend)
