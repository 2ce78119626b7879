"""What the parity tables cannot show for the step rules: optax's lagging Rprop, keys, errors, odd trees, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.optim.chains import asgd_chain, rprop_chain
from tests.harness import make_params


def test_rprop_applies_each_step_at_once():
    tx = gradtx.scale_by_rprop(0.1, lagged=False)
    state = tx.init(jnp.zeros(1))
    got = []
    for g in [1.0, 1.0, 1.0, -1.0, 1.0]:
        u, state = tx.update(jnp.array([g]), state)
        got.append(float(u[0]))
    np.testing.assert_allclose(got, [0.1, 0.12, 0.144, 0.0, 0.072], rtol=1e-6)


def _noise_keys():
    return [0, jax.random.key(0), jax.random.PRNGKey(0)]


@pytest.mark.parametrize("key", _noise_keys(), ids=["int", "typed", "raw"])
def test_add_noise_accepts_every_key_form(key):
    params = {"a": jnp.ones(3), "b": None, "c": jnp.ones((2, 2))}
    expected, _ = optax.add_noise(0.1, 0.5, key=0).update(params, optax.add_noise(0.1, 0.5, key=0).init(params))
    tx = gradtx.add_noise(0.1, 0.5, key)
    updates, state = tx.update(params, tx.init(params))
    assert updates["b"] is None
    np.testing.assert_array_equal(updates["a"], expected["a"])
    np.testing.assert_array_equal(updates["c"], expected["c"])
    assert state.count.dtype == jnp.int32


def test_add_noise_seed_is_the_key_and_not_both():
    params = jnp.ones(4)
    a, _ = gradtx.add_noise(0.1, 0.5, seed=3).update(params, gradtx.add_noise(0.1, 0.5, seed=3).init(params))
    b, _ = gradtx.add_noise(0.1, 0.5, key=3).update(params, gradtx.add_noise(0.1, 0.5, key=3).init(params))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not both"):
        gradtx.add_noise(0.1, 0.5, key=1, seed=1)
    with pytest.warns(UserWarning, match="no `key`"):
        gradtx.noisy_sgd(0.1)


def test_polyak_needs_value_and_a_known_variant():
    tx = gradtx.polyak_sgd()
    params = jnp.ones(3)
    with pytest.raises(TypeError, match="value=loss"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="variant"):
        gradtx.scale_by_polyak(variant="sps-")


def test_polyak_zero_gradient_gives_zero_step():
    tx = gradtx.scale_by_polyak()
    zeros = {"a": jnp.zeros(2, jnp.float32), "b": None}
    updates, _ = tx.update(zeros, tx.init(zeros), value=jnp.float32(3.0))
    assert updates["b"] is None
    assert updates["a"].dtype == jnp.float32
    np.testing.assert_array_equal(updates["a"], 0.0)


@pytest.mark.parametrize("factory, kwargs", [
    (gradtx.scale_by_rprop, dict(learning_rate=-1.0)),
    (gradtx.scale_by_rprop, dict(learning_rate=0.1, eta_minus=0.0)),
    (gradtx.scale_by_asgd, dict(learning_rate=-0.1)),
    (gradtx.add_noise, dict(eta=-1.0, gamma=0.5, key=0)),
])
def test_invalid_hyperparameters_raise(factory, kwargs):
    with pytest.raises(ValueError, match="must be in"):
        factory(**kwargs)


def test_asgd_needs_params():
    tx = gradtx.scale_by_asgd()
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(params, tx.init(params))


def _mixed_params():
    return {"f32": jnp.ones((2, 3), jnp.float32), "f64": jnp.full((3,), -2.0, jnp.float64),
            "scalar": jnp.asarray(0.5, jnp.float32), "empty": jnp.zeros((0,), jnp.float32), "none": None}


@pytest.mark.parametrize("tx", [
    gradtx.signum(0.1), gradtx.noisy_sgd(0.1, key=0), gradtx.polyak_sgd(), gradtx.optimistic_gradient_descent(0.1),
    gradtx.rprop(0.1), rprop_chain(0.1, maximize=True),
    asgd_chain(0.1, t0=0, weight_decay=0.1, maximize=True),
], ids=["signum", "noisy_sgd", "polyak_sgd", "ogd", "rprop", "Rprop", "ASGD"])
def test_dtypes_and_odd_leaves_survive_jit(tx):
    params = _mixed_params()
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(lambda p: jnp.sin(p) + 0.3, params)
        updates, state = tx.update(grads, state, params, value=jnp.float32(2.0))
        return gradtx.apply_updates(params, updates), updates, state

    for _ in range(3):
        new_params, updates, new_state = step(params, state)
        for tree in (new_params, updates):
            assert tree["none"] is None
            for name in ("f32", "f64", "scalar", "empty"):
                assert tree[name].dtype == params[name].dtype, name
                assert tree[name].shape == params[name].shape, name
        old_leaves = jax.tree.leaves(state)
        new_leaves = jax.tree.leaves(new_state)
        assert [jnp.result_type(x) for x in new_leaves] == [jnp.result_type(x) for x in old_leaves]
        params, state = new_params, new_state


def test_traced_hyperparameters():
    params = make_params("float32")
    grads = jax.tree.map(jnp.cos, params)

    @jax.jit
    def run(lr, lambd, alpha, t0, eta_minus, beta, f_min):
        out = []
        for tx in (asgd_chain(lr, lambd, alpha, t0, weight_decay=lambd, use_weight_decay=True),
                   rprop_chain(lr, (eta_minus, 1.2)), gradtx.signum(lr, beta),
                   gradtx.optimistic_gradient_descent(lr, beta, beta), gradtx.noisy_sgd(lr, beta, alpha, key=1),
                   gradtx.polyak_sgd(lr, beta, f_min)):
            state = tx.init(params)
            for _ in range(2):
                updates, state = tx.update(grads, state, params, value=jnp.float32(1.0))
            out.append(updates)
        return out

    traced = run(*(jnp.float32(x) for x in (0.1, 0.01, 0.75, 1.0, 0.5, 0.9, -1.0)))
    for updates in traced:
        for leaf in jax.tree.leaves(updates):
            assert leaf.dtype == jnp.float32
            assert bool(jnp.all(jnp.isfinite(leaf)))


def test_asgd_state_holds_torch_names_and_averages():
    params = jnp.array([1.0, -1.0])
    tx = gradtx.scale_by_asgd(learning_rate=0.1, lambd=0.0, t0=0)
    state = tx.init(params)
    assert state._fields == ("count", "eta", "mu", "ax")
    assert state.eta.dtype == jnp.float32 and state.mu.dtype == jnp.float32
    history = []
    for _ in range(4):
        updates, state = tx.update(jnp.ones(2), state, params)
        params = params + updates
        history.append(params)
    # with t0=0, mu is 1 on steps 1-2 and 1/(t-1) after, so ax is the mean of the iterates from step 2 on
    np.testing.assert_allclose(state.ax, np.mean(history[1:], axis=0), rtol=1e-6)  # mu=1/3 is stored in float32, as in torch


def test_schedules_are_read_at_the_step_count():
    params = jnp.ones(3)
    tx = gradtx.optimistic_gradient_descent(0.1, alpha=lambda c: 1.0 + c, beta=0.0)
    state = tx.init(params)
    got = []
    for _ in range(3):
        u, state = tx.update(jnp.ones(3), state)
        got.append(float(u[0]))
    np.testing.assert_allclose(got, [-0.1, -0.2, -0.3])
