"""gradtx.optim against its reference class, driven by the optimizer records (tests/cases/optimizers.py).

Each dense-gradient record's option sets run the facade class with the case's keyword arguments, in
each dtype the case names, on the default (fused) tier, against the reference step by step. For one
case per record (the one with the most options) every other tier the record lists, and the default tier
split into programs of one parameter shape ("chunked"), must give the fused tier's numbers bit for bit.
"""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import harness
from tests.cases import OPTIMIZERS
from tests.harness import assert_trees_close, make_params, run_torch

TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False), "chunked": {}}
# The "chunked" rows: the default tier with nothing packed and a program per parameter shape (the records' trees
# have one parameter of each shape; tests/test_program_chunks.py splits larger groups).
CHUNK = 1
# (record, case) for every dense-gradient option set; the index into it keys the cached fused trajectories.
ROWS = [(info, case) for info in OPTIMIZERS if info.gradients == "dense" for case in info.cases]
# One compiled gradient for every run (the harness's eager one costs ~0.2 s a step); same function, same numbers.
jit_grad = jax.jit(harness.grad_fn)
jit_loss = jax.jit(harness.loss)


def case_params(case, dtype):
    return case.params(dtype) if case.params else make_params(dtype)


def run_facade(index, dtype, tier="fused"):
    """The facade's parameters after each step (NumPy copies: the next step consumes the arrays)."""
    info, case = ROWS[index]
    params = jax.tree.map(jnp.array, case_params(case, dtype))  # copies: the facade donates its buffers
    opt = info.cls(params, **case.kwargs, **TIERS[tier])
    if tier == "chunked":
        opt.pack_max_numel, opt.program_max_params = 0, CHUNK
    if info.train_mode:
        opt.train()
    trajectory = []
    for _ in range(case.steps):
        if info.closure:
            opt.step(closure=jit_loss)
        else:
            opt.step(jit_grad(opt.params))
        trajectory.append(jax.tree.map(np.array, opt.params))
    return trajectory


@functools.cache
def fused_trajectory(index, dtype):
    return run_facade(index, dtype)


def reference_trajectory(index, dtype):
    info, case = ROWS[index]
    with mock.patch.object(harness, "grad_fn", jit_grad), mock.patch.object(harness, "loss", jit_loss):
        return run_torch(info.name, case.kwargs, case_params(case, dtype), case.steps, closure_steps=info.closure,
                         module=info.module, train_mode=info.train_mode)


PARITY = [(index, dtype) for index, (_, case) in enumerate(ROWS) for dtype in case.dtypes]


@pytest.mark.parametrize("index,dtype", PARITY, ids=[f"{ROWS[i][1].id}-{dtype}" for i, dtype in PARITY])
def test_facade_matches_reference(index, dtype):
    case = ROWS[index][1]
    for step, (a, b) in enumerate(zip(fused_trajectory(index, dtype), reference_trajectory(index, dtype))):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")


def _richest_case_per_record():
    """(index, other tier) for the case with the most options of each record that lists more than one tier."""
    best = {}
    for index, (info, case) in enumerate(ROWS):
        if len(info.tiers) > 1 and (info.name not in best or len(case.kwargs) > len(ROWS[best[info.name]][1].kwargs)):
            best[info.name] = index
    return [(index, tier) for index in sorted(best.values()) for tier in (*ROWS[index][0].tiers, "chunked")
            if tier != "fused"]


TIER_ROWS = _richest_case_per_record()


@pytest.mark.parametrize("index,tier", TIER_ROWS, ids=[f"{ROWS[i][1].id}-{tier}" for i, tier in TIER_ROWS])
def test_tiers_agree_bit_for_bit(index, tier):
    case = ROWS[index][1]
    dtype = case.dtypes[0]
    for step, (a, b) in enumerate(zip(run_facade(index, dtype, tier), fused_trajectory(index, dtype))):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y, err_msg=f"{case.id}: {tier} vs fused at step {step + 1}")
