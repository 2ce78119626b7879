"""gradtx against the installed optax: same names, same arguments, same numbers, step by step.

Every row runs jitted in each dtype it names; the core rows run without jit too, in float64 (without jit
every op dispatches on its own, which is slow: the core rows prove no-jit parity once).
"""

import functools

import optax
import pytest

import gradtx
from tests.cases import OPTAX_CASES, core
from tests.harness import assert_trees_close, make_params, run_functional

ROWS = [(case, dtype, True) for case in OPTAX_CASES for dtype in case.dtypes]
ROWS += [(case, "float64", False) for case in core.OPTAX_CASES if "float64" in case.dtypes]


def _resolve(module, dotted):
    return functools.reduce(getattr, dotted.split("."), module)


@pytest.mark.parametrize("case,dtype,jit", ROWS,
                         ids=[f"{case.id}-{dtype}-{'jit' if jit else 'nojit'}" for case, dtype, jit in ROWS])
def test_matches_optax(case, dtype, jit):
    params = make_params(dtype)
    ours = run_functional(_resolve(gradtx, case.name)(**case.kwargs), params, case.steps, jit=jit,
                          extra_args=case.extra_args)
    theirs = run_functional(_resolve(optax, case.name)(**case.kwargs), params, case.steps, jit=True,
                            extra_args=case.extra_args)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")
