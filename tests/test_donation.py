"""Every functional optimizer's eager ``init`` gives a state a user's jitted step can donate with the params.

A state leaf that is a parameter's own array (optax's prodigy keeps ``params0 = params``), or one array at two
places of the state (two memories made from one zeros array), would be donated twice: XLA refuses the step
("Attempt to donate the same buffer twice"). The records of the parity tables drive it.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

import gradtx
from tests.cases import CONTRIB_CASES, OPTAX_CASES, WRAPPER_CASES, beyond
from tests.harness import assert_trees_close, grad_fn, make_params, run_functional


def _resolve(module, dotted):
    return functools.reduce(getattr, dotted.split("."), module)


ROWS = ([(case.id, lambda case=case: _resolve(gradtx, case.name)(**case.kwargs), case.extra_args)
         for case in OPTAX_CASES + CONTRIB_CASES + beyond.CONTRIB_CASES if "float32" in case.dtypes]
        + [(case.id, lambda case=case: case.build(gradtx, gradtx), case.extra_args)
           for case in WRAPPER_CASES if "float32" in case.dtypes])


def _shared_leaves(params, state) -> list[str]:
    """The paths of state leaves that are a parameter's array or another state leaf's array."""
    seen = {id(leaf): "params" for leaf in jax.tree.leaves(params)}
    shared = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if not isinstance(leaf, jax.Array):
            continue
        if id(leaf) in seen:
            shared.append(f"{jax.tree_util.keystr(path)} (the same array as {seen[id(leaf)]})")
        seen.setdefault(id(leaf), jax.tree_util.keystr(path))
    return shared


@pytest.mark.parametrize("label,build,extra_args", ROWS, ids=[row[0] for row in ROWS])
def test_a_jitted_step_may_donate_the_params_and_the_eager_state(label, build, extra_args):
    params = make_params("float32")
    tx = build()
    state = tx.init(params)
    shared = _shared_leaves(params, state)
    assert not shared, f"{label}: {shared}"
    expected = run_functional(tx, params, 2, extra_args=extra_args)[-1]

    def step(params, state):
        grads = grad_fn(params)
        extra = extra_args(params, grads) if extra_args else {}
        updates, state = tx.update(grads, state, params, **extra)
        return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates), state

    donated = jax.jit(step, donate_argnums=(0, 1))
    params = jax.tree.map(jnp.copy, params)  # the caller's own copy, which the step consumes
    for _ in range(2):
        params, state = donated(params, state)
    assert_trees_close(params, expected, "float32", label)
