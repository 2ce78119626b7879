"""Shared machinery of the parity suites: a test problem, trajectory runners and tolerances.

Every parity test runs the same problem through two implementations and
compares the parameters after every step. Gradients always come from JAX, from
each trajectory's own current parameters, so the two runs see the same function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Relative/absolute tolerances per dtype. float64 is the contract (~1e-7 relative).
TOLERANCES = {
    "float64": dict(rtol=1e-7, atol=1e-10),
    "float32": dict(rtol=2e-5, atol=2e-6),
    "bfloat16": dict(rtol=2e-2, atol=2e-2),
}


def make_params(dtype: str = "float64", seed: int = 0) -> dict:
    """A small tree with a matrix, a vector, a 0-d leaf and a nested list."""
    rng = np.random.default_rng(seed)
    leaves = {
        "w": rng.normal(size=(4, 3)),
        "b": rng.normal(size=(5,)),
        "s": np.asarray(rng.normal()),
        "nested": [rng.normal(size=(2, 2))],
    }
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=dtype), leaves)


def loss(params: Any) -> jax.Array:
    """A smooth, non-quadratic loss whose gradient changes sign and scale across leaves."""
    total = 0.0
    for i, x in enumerate(jax.tree.leaves(params)):
        x = x.astype(jnp.float64) if x.dtype == jnp.float64 else x.astype(jnp.float32)
        total = total + jnp.sum(0.5 * (i + 1) * x**2 + jnp.sin(3.0 * x) - 0.3 * x)
    return total


grad_fn = jax.jit(jax.grad(loss))


def assert_trees_close(actual: Any, expected: Any, dtype: str, context: str = "") -> None:
    """Leafwise ``assert_allclose`` with the dtype's tolerance, naming the failing leaf."""
    tol = TOLERANCES[dtype]
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(actual)
    flat_e, tree_e = jax.tree_util.tree_flatten_with_path(expected)
    assert tree_a == tree_e, f"{context}: structures differ: {tree_a} vs {tree_e}"
    for (path, a), (_, e) in zip(flat_a, flat_e):
        np.testing.assert_allclose(
            np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64),
            err_msg=f"{context} at {jax.tree_util.keystr(path)}", **tol,
        )


def run_functional(tx: Any, params: Any, steps: int, *, jit: bool = True,
                   extra_args: Callable[[Any, Any], dict] | None = None) -> list[Any]:
    """Runs ``steps`` updates of ``tx`` (any init/update pair) and returns the params after each."""
    state = tx.init(params)

    def step(params, state):
        grads = grad_fn(params)
        extra = extra_args(params, grads) if extra_args else {}
        updates, state = tx.update(grads, state, params, **extra)
        new = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
        return new, state

    step = jax.jit(step) if jit else step
    trajectory = []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def run_torch(torch_name: str, kwargs: dict, params: Any, steps: int, *, closure_steps: bool = False,
              module: str = "torch.optim", train_mode: bool = False) -> list[Any]:
    """Runs ``<module>.<torch_name>(leaves, **kwargs)`` with JAX's gradients; returns params after each step.

    ``module`` is torch.optim or a torch-based reference package (``schedulefree``, ``prodigyopt``,
    ``pytorch_optimizer``) whose class takes a list of tensors as torch.optim's do.
    """
    import importlib

    import torch

    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.asarray(x, dtype=np.float64 if x.dtype == jnp.float64 else np.float32),
                            requires_grad=True) for x in leaves]
    opt = getattr(importlib.import_module(module), torch_name)(tensors, **kwargs)
    if train_mode:
        opt.train()
    dtypes = [x.dtype for x in leaves]

    def current():
        return jax.tree.unflatten(treedef, [jnp.array(t.detach().numpy().copy(), dtype=d) for t, d in zip(tensors, dtypes)])

    def set_grads():
        grads = jax.tree.leaves(grad_fn(current()))
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(np.asarray(g))
        return float(loss(current()))

    trajectory = []
    for _ in range(steps):
        if closure_steps:
            opt.step(set_grads)
        else:
            set_grads()
            opt.step()
        trajectory.append(current())
    return trajectory


def dtype_rows(cases) -> list:
    """``pytest.param(case, dtype)`` for every dtype each case names (only the valid combinations), id'd
    ``<case.id>-<dtype>`` so that test ids stay deterministic."""
    import pytest

    return [pytest.param(case, dtype, id=f"{case.id}-{dtype}") for case in cases for dtype in case.dtypes]


@dataclass(frozen=True)
class OptaxCase:
    """An alias or transform that optax has too, called with the same arguments in both."""

    name: str  # attribute name in both gradtx and optax (dotted for submodules, e.g. "contrib.muon")
    kwargs: dict = field(default_factory=dict)
    steps: int = 12
    extra_args: Callable[[Any, Any], dict] | None = None  # (params, grads) -> extra update args
    dtypes: tuple = ("float64", "float32")
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or f"{self.name}-" + ",".join(f"{k}={v}" for k, v in self.kwargs.items())


@dataclass(frozen=True)
class TorchCase:
    """A torch optimizer class with one option set, and the gradtx chain that must reproduce it.

    ``chain`` receives ``kwargs`` and returns a GradientTransformation whose
    updates, applied per parameter, equal torch's steps. The rows belong to the
    optimizer records (tests/cases/optimizers.py), which the facade suites iterate
    with ``gradtx.optim.<torch_name>``. ``module`` names where the reference class
    lives: torch.optim, or a torch-based package pinned in the test extra
    (schedulefree, prodigyopt, pytorch_optimizer).
    """

    torch_name: str
    kwargs: dict
    chain: Callable[..., Any] | None = None
    steps: int = 12
    dtypes: tuple = ("float64", "float32")
    closure: bool = False  # torch's step needs a closure (LBFGS)
    params: Callable[[str], Any] | None = None  # dtype -> params, when make_params does not suit
    extra_args: Callable[[Any, Any], dict] | None = None  # (params, grads) -> extra update args
    label: str = ""
    module: str = "torch.optim"  # where the reference class lives

    @property
    def id(self) -> str:
        return self.label or f"{self.torch_name}-" + ",".join(f"{k}={v}" for k, v in self.kwargs.items())


def check_complex_facade_against_torch(name: str, kwargs: dict, steps: int = 5, seed: int = 1) -> None:
    """Runs gradtx.optim.<name> and torch.optim.<name> on one complex parameter (loss sum |z - t|^4) and compares
    the parameter after every step, then the state: the same keys in torch's order, dtypes and values."""
    import torch

    from gradtx import optim

    rng = np.random.default_rng(seed)
    z0 = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))
    target = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))
    zt = torch.tensor(z0, requires_grad=True)
    theirs = getattr(torch.optim, name)([zt], **kwargs)
    ours = getattr(optim, name)({"z": jnp.asarray(z0)}, **kwargs)
    complex_loss = jax.jit(lambda p: jnp.sum(jnp.abs(p["z"] - target) ** 4))
    for _ in range(steps):
        theirs.zero_grad()
        torch.sum(torch.abs(zt - torch.tensor(target)) ** 4).backward()
        theirs.step()
        ours.step(closure=complex_loss)  # JAX's gradient; the engine descends along its conjugate, as torch does
        np.testing.assert_allclose(np.asarray(ours.params["z"]), zt.detach().numpy(), rtol=1e-7, atol=1e-10)
    box = ours.param_groups[0]["params"][0]
    assert list(ours.state[box]) == list(theirs.state[zt])
    for key, value in theirs.state[zt].items():
        assert ours.state[box][key].dtype == jnp.dtype(str(value.dtype).replace("torch.", "")), key
        np.testing.assert_allclose(np.asarray(ours.state[box][key]), value.numpy(), rtol=1e-6, err_msg=key)


def snapshot(opt):
    """Copies of everything a failed call must leave unchanged."""
    params = [np.array(p.data) for g in opt.param_groups for p in g["params"]]
    state = {id(p): {k: np.array(v) for k, v in s.items()} for p, s in opt.state.items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return params, state, copy.deepcopy(groups), opt._step_count


def assert_unchanged(opt, before):
    params, state, groups, count = snapshot(opt)
    for a, b in zip(params, before[0]):
        np.testing.assert_array_equal(a, b)
    assert state.keys() == before[1].keys() and repr(groups) == repr(before[2]) and count == before[3]
    for key in state:
        assert state[key].keys() == before[1][key].keys()
        for name in state[key]:
            np.testing.assert_array_equal(state[key][name], before[1][key][name])
