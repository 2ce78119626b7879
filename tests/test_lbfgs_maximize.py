"""LBFGS(maximize=True) (torch 2.14): ascending f is, step for step, torch 2.13's LBFGS descending -f.

torch 2.14 negates the objective's value and gradient wherever LBFGS evaluates them
(pytorch/pytorch#191674) and returns the closure's own value; torch 2.13, installed
here, has no ``maximize``, so the reference is its LBFGS on ``-f``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradtx.optim as optim
from gradtx.optim._second_order import lbfgs_driver
from tests.harness import TOLERANCES, assert_trees_close, loss, make_params
from tests.test_second_order import _torch_lbfgs

STEPS = 3
CASES = [dict(lr=0.5, max_iter=5, history_size=3),
         dict(lr=0.8, max_iter=7, max_eval=9, history_size=2, line_search_fn="strong_wolfe")]


def objective(params):
    """The function maximised: -loss, bounded above."""
    return -loss(params)


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_facade_maximize_is_torchs_lbfgs_on_the_negated_objective(kwargs):
    params = make_params("float64")
    theirs, torch_state = _torch_lbfgs(kwargs, params, STEPS)  # torch 2.13 minimising loss = -objective
    opt = optim.LBFGS(jax.tree.map(jnp.array, params), maximize=True, **kwargs)
    assert opt.param_groups[0]["maximize"] is True and opt.defaults["maximize"] is True
    closure = jax.jit(objective)
    for step in range(STEPS):
        before = opt.params
        returned = opt.step(closure)
        # step returns the closure's own value at the incoming parameters, not the negated one.
        np.testing.assert_allclose(returned, objective(before), **TOLERANCES["float64"])
        assert_trees_close(opt.params, theirs[step], "float64", f"LBFGS maximize {kwargs} step {step + 1}")
    state = opt.state_dict()["state"][0]
    assert state["n_iter"] == torch_state["n_iter"] and state["func_evals"] == torch_state["func_evals"]
    for key in ("d", "prev_flat_grad", "prev_loss", "H_diag"):  # the state of the run on -f, as torch 2.14 keeps
        np.testing.assert_allclose(np.asarray(state[key]), np.asarray(torch_state[key]), err_msg=key,
                                   **TOLERANCES["float64"])


def test_driver_maximize_equals_minimizing_the_negation():
    flat, unravel = ravel_pytree(make_params("float64"))
    up = lbfgs_driver(lr=0.5, max_iter=5, history_size=3, maximize=True)
    down = lbfgs_driver(lr=0.5, max_iter=5, history_size=3)
    f = jax.value_and_grad(lambda x: objective(unravel(x)))
    neg_f = jax.value_and_grad(lambda x: -objective(unravel(x)))
    step_up = jax.jit(lambda x, s: up.step(f, x, s))
    step_down = jax.jit(lambda x, s: down.step(neg_f, x, s))
    x_up, s_up = flat, up.init(flat)
    x_down, s_down = flat, down.init(flat)
    for _ in range(STEPS):
        x_up, s_up, v_up = step_up(x_up, s_up)
        x_down, s_down, v_down = step_down(x_down, s_down)
        np.testing.assert_array_equal(x_up, x_down)
        np.testing.assert_array_equal(v_up, -v_down)
    jax.tree.map(np.testing.assert_array_equal, s_up, s_down)


def test_maximize_is_keyword_only_and_a_torch_213_state_dict_still_loads():
    params = make_params("float64")
    with pytest.raises(TypeError):
        optim.LBFGS(params, 1, 20, None, 1e-7, 1e-9, 100, None, True)
    opt = optim.LBFGS(jax.tree.map(jnp.array, params), lr=0.5, max_iter=3)
    saved = opt.state_dict()
    del saved["param_groups"][0]["maximize"]  # as torch 2.13 writes it
    fresh = optim.LBFGS(jax.tree.map(jnp.array, params), lr=0.5, max_iter=3)
    fresh.load_state_dict(saved)
    fresh.step(jax.jit(loss))
    opt.step(jax.jit(loss))
    assert_trees_close(fresh.params, opt.params, "float64", "after loading a state_dict without maximize")
