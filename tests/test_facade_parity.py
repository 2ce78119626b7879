"""gradtx.optim against torch.optim, driven by the one table of cases (tests/cases): every case whose class exists.

Each case runs the facade class with the case's torch keyword arguments, in
float64 and float32 on the default (fused) tier, against torch.optim step by step.
For one case per class (the one with the most options) the foreach and for-loop
tiers must give the fused tier's numbers bit for bit.
"""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx.optim as optim
from tests import harness
from tests.cases import TORCH_CASES
from tests.harness import assert_trees_close, make_params, run_torch

CASES = [case for case in TORCH_CASES if hasattr(optim, case.torch_name)]
IDS = [case.id for case in CASES]
TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
# One compiled gradient for every run (the harness's eager one costs ~0.2 s a step); same function, same numbers.
jit_grad = jax.jit(harness.grad_fn)
jit_loss = jax.jit(harness.loss)


def case_params(case, dtype):
    return case.params(dtype) if case.params else make_params(dtype)


def run_facade(case, dtype, tier="fused"):
    """The facade's parameters after each step (NumPy copies: the next step consumes the arrays)."""
    params = jax.tree.map(jnp.array, case_params(case, dtype))  # copies: the facade donates its buffers
    opt = getattr(optim, case.torch_name)(params, **case.kwargs, **TIERS[tier])
    if hasattr(opt, "train"):  # schedule-free optimizers step only in train mode
        opt.train()
    trajectory = []
    for _ in range(case.steps):
        if case.closure:
            opt.step(closure=jit_loss)
        else:
            opt.step(jit_grad(opt.params))
        trajectory.append(jax.tree.map(np.array, opt.params))
    return trajectory


@functools.cache
def fused_trajectory(index, dtype):
    return run_facade(CASES[index], dtype)


def torch_trajectory(index, dtype):
    case = CASES[index]
    with mock.patch.object(harness, "grad_fn", jit_grad), mock.patch.object(harness, "loss", jit_loss):
        return run_torch(case.torch_name, case.kwargs, case_params(case, dtype), case.steps,
                         closure_steps=case.closure, module=case.module)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_facade_matches_torch(index, dtype):
    case = CASES[index]
    if dtype not in case.dtypes:
        pytest.skip(f"{case.torch_name} is not compared in {dtype}")
    for step, (a, b) in enumerate(zip(fused_trajectory(index, dtype), torch_trajectory(index, dtype))):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")


def _richest_case_per_class():
    best = {}
    for index, case in enumerate(CASES):
        if case.torch_name not in best or len(case.kwargs) > len(CASES[best[case.torch_name]].kwargs):
            best[case.torch_name] = index
    return sorted(best.values())


@pytest.mark.parametrize("index", _richest_case_per_class(), ids=lambda i: IDS[i])
def test_tiers_agree_bit_for_bit(index):
    case = CASES[index]
    dtype = case.dtypes[0]
    fused = fused_trajectory(index, dtype)
    for tier in ("foreach", "for-loop"):
        for step, (a, b) in enumerate(zip(run_facade(case, dtype, tier), fused)):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_array_equal(x, y, err_msg=f"{case.id}: {tier} vs fused at step {step + 1}")
