"""gradtx against the installed optax: same names, same arguments, same numbers, step by step."""

import functools
import operator

import optax
import pytest

import gradtx
from tests.cases import OPTAX_CASES, core
from tests.harness import assert_trees_close, make_params, run_functional


# Without jit every op dispatches on its own, which is slow: the core cases prove no-jit parity once.
NO_JIT_CASES = {case.id for case in core.OPTAX_CASES}


def _resolve(module, dotted):
    return functools.reduce(getattr, dotted.split("."), module)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "nojit"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", OPTAX_CASES, ids=operator.attrgetter("id"))
def test_matches_optax(case, dtype, jit):
    if dtype not in case.dtypes:
        pytest.skip(f"{case.name} is not defined for {dtype}")
    if not jit and (dtype == "float32" or case.id not in NO_JIT_CASES):
        pytest.skip("no-jit runs for the core cases, in float64")
    params = make_params(dtype)
    ours = run_functional(_resolve(gradtx, case.name)(**case.kwargs), params, case.steps, jit=jit,
                          extra_args=case.extra_args)
    theirs = run_functional(_resolve(optax, case.name)(**case.kwargs), params, case.steps, jit=True,
                            extra_args=case.extra_args)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")
