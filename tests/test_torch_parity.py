"""gradtx's functional chains against torch.optim (2.13, CPU), step by step, through a thin adapter."""

import operator

import pytest

from tests.cases import TORCH_CASES
from tests.harness import assert_trees_close, make_params, run_functional, run_torch


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", [c for c in TORCH_CASES if c.chain is not None], ids=operator.attrgetter("id"))
def test_chain_matches_torch(case, dtype):
    if dtype not in case.dtypes:
        pytest.skip(f"{case.torch_name} is not compared in {dtype}")
    params = case.params(dtype) if case.params else make_params(dtype)
    ours = run_functional(case.chain(**case.kwargs), params, case.steps, extra_args=case.extra_args)
    theirs = run_torch(case.torch_name, case.kwargs, params, case.steps, closure_steps=case.closure,
                       module=case.module)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")
