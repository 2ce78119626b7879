"""gradtx's functional chains against torch.optim (2.13, CPU), step by step, through a thin adapter.

The rows are the optimizer records' option sets that name a chain, in each dtype the row names.
"""

import pytest

from tests.cases import TORCH_CASES
from tests.harness import assert_trees_close, dtype_rows, make_params, run_functional, run_torch


@pytest.mark.parametrize("case,dtype", dtype_rows([case for case in TORCH_CASES if case.chain is not None]))
def test_chain_matches_torch(case, dtype):
    params = case.params(dtype) if case.params else make_params(dtype)
    ours = run_functional(case.chain(**case.kwargs), params, case.steps, extra_args=case.extra_args)
    theirs = run_torch(case.torch_name, case.kwargs, params, case.steps, closure_steps=case.closure,
                       module=case.module)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")
