"""Properties over random pytrees and hyperparameters (hypothesis): jit == no-jit, identities, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx
from tests.harness import assert_trees_close

SETTINGS = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)
dtypes = st.sampled_from(["float32", "float64"])


@st.composite
def trees(draw):
    dtype = draw(dtypes)
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return dtype, {f"p{i}": jnp.asarray(rng.normal(size=draw(shapes)), dtype) for i in range(n)}


optimizers = st.one_of(
    st.builds(lambda lr, m: gradtx.sgd(lr, momentum=m), st.floats(1e-3, 0.5), st.floats(0.0, 0.99)),
    st.builds(lambda lr, b1, b2: gradtx.adam(lr, b1=b1, b2=b2), st.floats(1e-3, 0.5), st.floats(0.0, 0.99),
              st.floats(0.5, 0.999)),
    st.builds(lambda lr, wd: gradtx.adamw(lr, weight_decay=wd), st.floats(1e-3, 0.5), st.floats(0.0, 0.5)),
    st.builds(lambda c: gradtx.chain(gradtx.clip_by_global_norm(c), gradtx.amsgrad(0.1)), st.floats(0.1, 5.0)),
)


def _run(tx, params, steps, jit):
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for i in range(steps):
        grads = jax.tree.map(lambda x: jnp.sin(x + i), params)
        updates, state = update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    return params, state


@SETTINGS
@given(trees(), optimizers)
def test_jit_equals_no_jit(tree, tx):
    dtype, params = tree
    a, _ = _run(tx, params, 3, jit=True)
    b, _ = _run(tx, params, 3, jit=False)
    assert_trees_close(a, b, dtype)


@SETTINGS
@given(trees(), st.integers(1, 5))
def test_chain_of_identities_is_identity(tree, n):
    _, params = tree
    tx = gradtx.chain(*[gradtx.identity() for _ in range(n)])
    out, _ = tx.update(params, tx.init(params), params)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), out, params))


@SETTINGS
@given(trees(), optimizers)
def test_scaling_by_zero_leaves_params_unchanged(tree, tx):
    _, params = tree
    out, _ = _run(gradtx.chain(tx, gradtx.scale(0.0)), params, 2, jit=True)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), out, params))


@SETTINGS
@given(trees(), optimizers)
def test_state_dtypes_follow_params(tree, tx):
    dtype, params = tree
    _, state = _run(tx, params, 1, jit=True)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.dtype(dtype), jnp.dtype(jnp.int32)), leaf.dtype
