"""Muon beyond torch 2.13: adjust_lr_fn="spectral_unclamped" (torch 2.15) and stacks of matrices (batched=True).

torch 2.15's ``_adjust_lr`` gives ``"spectral_unclamped"`` the ratio ``sqrt(A / B)`` for an
``A x B`` weight (``A, B = param.shape[:2]``; pytorch/pytorch#187402). torch 2.13, installed
here, does not know the name, so the reference is torch 2.13's own Muon step
(``torch.optim._muon``: its bfloat16 Newton–Schulz, momentum and decay) with its
``_adjust_lr`` replaced by torch 2.15's formula. A batched parameter ``[..., A, B]`` is
compared with torch's Muon stepping each trailing matrix as its own 2-D parameter.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx.optim as optim
from tests.cases.factored import matrices
from tests.harness import assert_trees_close, grad_fn, run_torch

STEPS = 6
ORIGINAL_ADJUST_LR = torch.optim._muon._adjust_lr


def _adjust_lr_torch_215(lr, adjust_lr_fn, param_shape):
    """torch 2.15's ``_adjust_lr``: 2.13's, plus "spectral_unclamped"."""
    a, b = param_shape[:2]
    if adjust_lr_fn == "spectral_unclamped":
        return lr * math.sqrt(a / b)
    return ORIGINAL_ADJUST_LR(lr, adjust_lr_fn, param_shape)


@pytest.fixture
def torch_215_adjust_lr(monkeypatch):
    monkeypatch.setattr(torch.optim._muon, "_adjust_lr", _adjust_lr_torch_215)


def _torch_muon(params: list[torch.Tensor], kwargs: dict) -> torch.optim.Muon:
    """torch 2.13's Muon; an adjust_lr_fn it does not accept is set on the groups after construction."""
    adjust = kwargs.get("adjust_lr_fn")
    opt = torch.optim.Muon(params, **{**kwargs, "adjust_lr_fn": None})
    for group in opt.param_groups:
        group["adjust_lr_fn"] = adjust
    return opt


def square_and_wide(dtype):
    """A tall, a wide and a square matrix: sqrt(A/B) is above, below and at 1."""
    rng = np.random.default_rng(3)
    return {**matrices(dtype), "sq": jnp.asarray(rng.normal(size=(4, 4)), dtype)}


@pytest.mark.usefixtures("torch_215_adjust_lr")
@pytest.mark.parametrize(("kwargs", "dtype"), [
    (dict(lr=0.05, adjust_lr_fn="spectral_unclamped"), "float64"),
    (dict(lr=0.1, momentum=0.8, nesterov=False, weight_decay=0.2, adjust_lr_fn="spectral_unclamped"), "float64"),
], ids=["defaults-float64", "no-nesterov,decay-float64"])
def test_spectral_unclamped_matches_torch_215_formula_on_torch_213_muon(kwargs, dtype):
    params = square_and_wide(dtype)
    assert torch.optim._muon._adjust_lr(1.0, "spectral_unclamped", (3, 5)) == math.sqrt(3 / 5)
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    theirs = _torch_muon(tensors, kwargs)
    ours = optim.Muon(params, **kwargs)
    for step in range(STEPS):
        torch_params = jax.tree.unflatten(treedef, [jnp.asarray(t.detach().numpy()) for t in tensors])
        for t, g in zip(tensors, jax.tree.leaves(grad_fn(torch_params))):
            t.grad = torch.tensor(np.asarray(g))
        theirs.step()
        ours.step(grad_fn(ours.params))
        expected = jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors])
        assert_trees_close(ours.params, expected, dtype, f"Muon {kwargs} step {step + 1}")


def test_spectral_unclamped_differs_from_original_only_on_wide_matrices():
    params = square_and_wide("float64")
    runs = {}
    for adjust in ("original", "spectral_unclamped"):
        opt = optim.Muon(jax.tree.map(jnp.array, params), lr=0.05, weight_decay=0.0, adjust_lr_fn=adjust)
        opt.step(grad_fn(opt.params))
        runs[adjust] = jax.tree.map(lambda new, old: new - old, opt.params, params)
    np.testing.assert_array_equal(runs["original"]["a"], runs["spectral_unclamped"]["a"])  # 4 x 3: tall
    np.testing.assert_array_equal(runs["original"]["sq"], runs["spectral_unclamped"]["sq"])
    np.testing.assert_allclose(runs["spectral_unclamped"]["b"][0], runs["original"]["b"][0] * math.sqrt(3 / 5),
                               rtol=1e-12)  # 3 x 5: wide, scaled down by sqrt(A/B) instead of clamped at 1


def stacks(dtype):
    """Per-head (3 x [4, 5]) and per-expert (2 x 2 x [6, 3]) stacks, and a plain matrix."""
    rng = np.random.default_rng(4)
    shapes = {"heads": (3, 4, 5), "experts": (2, 2, 6, 3), "w": (4, 3)}
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def _slices(x: np.ndarray) -> list[np.ndarray]:
    return list(np.asarray(x).reshape(-1, *x.shape[-2:]))


@pytest.mark.usefixtures("torch_215_adjust_lr")
@pytest.mark.parametrize(("adjust_lr_fn", "dtype"), [("match_rms_adamw", "float64"),
                                                     ("spectral_unclamped", "float64"), (None, "float32")])
def test_batched_muon_steps_each_matrix_as_torchs_2d_muon(adjust_lr_fn, dtype):
    kwargs = dict(lr=0.05, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn)
    params = stacks(dtype)
    ours = optim.Muon(params, batched=True, **kwargs)
    assert ours.param_groups[0]["batched"] is True
    leaves, treedef = jax.tree.flatten(params)
    tensors = [[torch.tensor(m, requires_grad=True) for m in _slices(x)] for x in leaves]
    theirs = _torch_muon([t for per_leaf in tensors for t in per_leaf], kwargs)

    def torch_tree():
        return jax.tree.unflatten(treedef, [jnp.asarray(np.stack([t.detach().numpy() for t in per_leaf]).reshape(x.shape))
                                            for per_leaf, x in zip(tensors, leaves)])

    for step in range(STEPS):
        for per_leaf, g in zip(tensors, jax.tree.leaves(grad_fn(torch_tree()))):
            for t, gm in zip(per_leaf, _slices(g)):
                t.grad = torch.tensor(gm)
        theirs.step()
        ours.step(grad_fn(ours.params))
        assert_trees_close(ours.params, torch_tree(), dtype, f"batched Muon {adjust_lr_fn} step {step + 1}")
    box = ours.param_groups[0]["params"][0]
    assert ours.state[box]["momentum_buffer"].shape == box.shape


def test_stacks_need_batched_and_torchs_2d_parameters_are_unchanged():
    # the first parameter as written ("heads"), as torch numbers a module's parameters
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters.*\(3, 4, 5\); .*batched=True"):
        optim.Muon(stacks("float64"))
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters whereas we found a parameter with size: \(5,\)$"):
        optim.Muon([jnp.ones(5)], batched=True)
    with pytest.raises(ValueError, match="Adjust learning rate function spectral is not supported"):
        optim.Muon([jnp.ones((2, 2))], adjust_lr_fn="spectral")
    assert "batched" not in optim.Muon([jnp.ones((2, 2))]).param_groups[0]  # torch's group keys unless asked
    # 2-D parameters take the same path with batched=True as without.
    a = run_torch("Muon", dict(lr=0.05), matrices("float64"), 3)
    opt = optim.Muon(matrices("float64"), lr=0.05, batched=True)
    for expected in a:
        opt.step(grad_fn(opt.params))
        assert_trees_close(opt.params, expected, "float64", "2-D with batched=True")


def test_batched_muon_gives_the_same_numbers_in_every_tier():
    runs = []
    for tier in ({}, {"foreach": True}, {"foreach": False}):
        opt = optim.Muon(stacks("float64"), lr=0.05, batched=True, adjust_lr_fn="spectral_unclamped", **tier)
        for _ in range(2):
            opt.step(grad_fn(opt.params))
        runs.append(opt.params)
    for other in runs[1:]:
        assert_trees_close(other, runs[0], "float64", "batched Muon tiers")
