"""The protocol, chain and tree helpers: behaviour, interop with optax both ways, and error messages."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import _tree as gt
from tests.harness import assert_trees_close, make_params, run_functional


@pytest.mark.parametrize("jit", [True, False])
def test_identity_and_set_to_zero(jit):
    params = make_params()
    grads = jax.tree.map(jnp.ones_like, params)
    for tx, expect in [(gradtx.identity(), grads), (gradtx.set_to_zero(), jax.tree.map(jnp.zeros_like, params))]:
        update = jax.jit(tx.update) if jit else tx.update
        out, state = update(grads, tx.init(params), params)
        assert_trees_close(out, expect, "float64")
        assert state == gradtx.EmptyState()


def test_chain_of_identities_is_identity():
    params = make_params()
    tx = gradtx.chain(*[gradtx.identity() for _ in range(4)])
    out, _ = tx.update(params, tx.init(params), params)
    assert_trees_close(out, params, "float64")


def test_stateless_and_tree_map_variant():
    params = make_params()
    a = gradtx.stateless(lambda u, p: jax.tree.map(lambda x, y: x * y, u, p))
    b = gradtx.stateless_with_tree_map(lambda u, p: u * p)
    out_a, _ = a.update(params, a.init(params), params)
    out_b, _ = b.update(params, b.init(params), params)
    assert_trees_close(out_a, out_b, "float64")


def test_gradtx_inside_optax_chain_and_back():
    params = make_params()
    mixed_one = optax.chain(gradtx.scale_by_adam(), optax.scale(-0.1))
    mixed_two = gradtx.chain(optax.scale_by_adam(), gradtx.scale(-0.1))
    reference = optax.chain(optax.scale_by_adam(), optax.scale(-0.1))
    ref = run_functional(reference, params, 5)
    for tx in (mixed_one, mixed_two):
        for a, b in zip(run_functional(tx, params, 5), ref):
            assert_trees_close(a, b, "float64")


def test_extra_args_reach_members_that_accept_them():
    seen = {}

    def init(params):
        return gradtx.EmptyState()

    def update(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    plain = optax.GradientTransformation(lambda p: optax.EmptyState(), lambda u, s, p=None: (u, s))
    tx = gradtx.chain(plain, gradtx.GradientTransformation(init, update))
    tx.update({"a": jnp.ones(2)}, tx.init({"a": jnp.ones(2)}), value=3.0)
    assert seen == {"value": 3.0}


def test_named_chain_state_by_name():
    params = make_params()
    tx = gradtx.named_chain(("clip", gradtx.clip_by_global_norm(1.0)), ("adam", gradtx.scale_by_adam()))
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    assert int(state["adam"].count) == 1
    with pytest.raises(ValueError, match="unique"):
        gradtx.named_chain(("a", gradtx.identity()), ("a", gradtx.identity()))


def test_chain_rejects_foreign_state():
    tx = gradtx.chain(gradtx.identity(), gradtx.identity())
    with pytest.raises(ValueError, match="chain of 2"):
        tx.update({"a": jnp.ones(1)}, (gradtx.EmptyState(),))


def test_mismatched_trees_name_the_path():
    params = {"enc": {"w": jnp.ones((2, 3))}, "head": jnp.ones(3)}
    with pytest.raises(ValueError, match="enc/w"):
        gradtx.apply_updates(params, {"enc": {"w": jnp.ones((3, 2))}, "head": jnp.ones(3)})
    tx = gradtx.adam(1e-3)
    with pytest.raises(ValueError, match="missing from updates: \\['head'\\]"):
        tx.update({"enc": {"w": jnp.ones((2, 3))}}, tx.init(params), params)


def test_apply_updates_keeps_dtype_and_none():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": None, "c": jnp.ones(2, jnp.float32)}
    updates = {"a": jnp.full(2, 0.5, jnp.float32), "b": None, "c": jnp.full(2, 0.5, jnp.float64)}
    out = gradtx.apply_updates(params, updates)
    assert out["a"].dtype == jnp.bfloat16 and out["c"].dtype == jnp.float32 and out["b"] is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_state_follows_param_dtype(dtype):
    params = make_params("float32")
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    for tx in (gradtx.adam(1e-3), gradtx.sgd(1e-3, momentum=0.9), gradtx.adamw(1e-3), gradtx.amsgrad(1e-3)):
        state = tx.init(params)
        for leaf in jax.tree.leaves(state):
            assert leaf.dtype in (jnp.dtype(dtype), jnp.int32), leaf.dtype
        updates, state2 = jax.jit(tx.update)(params, state, params)
        assert jax.tree.map(lambda x: x.dtype, state2) == jax.tree.map(lambda x: x.dtype, state)
        assert all(u.dtype == jnp.dtype(dtype) for u in jax.tree.leaves(updates))


def test_mu_dtype_and_accumulator_dtype():
    params = make_params("bfloat16")
    state = gradtx.adam(1e-3, mu_dtype=jnp.float32).init(params)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state[0].mu))
    state = gradtx.sgd(1e-3, momentum=0.9, accumulator_dtype=jnp.float32).init(params)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state[0].trace))


def test_empty_and_none_and_scalar_trees():
    """adamw steps empty trees, None leaves and a 0-d tree: structures kept, each leaf moved as optax moves it."""
    for params in ({}, [], {"a": None, "b": jnp.asarray(2.0)}, jnp.asarray(1.0)):
        tx, reference = gradtx.adamw(0.1), optax.adamw(0.1)
        updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
        expected, _ = reference.update(params, reference.init(params), params)
        new = gradtx.apply_updates(params, updates)
        assert jax.tree.structure(new, is_leaf=lambda x: x is None) == jax.tree.structure(
            params, is_leaf=lambda x: x is None)
        assert_trees_close(updates, expected, "float64")
        for moved, start in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
            assert moved.shape == start.shape and moved.dtype == start.dtype and moved < start  # a positive gradient


def test_states_pickle():
    params = make_params()
    tx = gradtx.adamw(0.1)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    again = pickle.loads(pickle.dumps(jax.device_get(state)))
    assert jax.tree.structure(again) == jax.tree.structure(state)


def test_safe_increment_saturates():
    top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
    assert int(gt.safe_increment(top)) == np.iinfo(np.int32).max
    assert int(gt.safe_increment(jnp.asarray(1, jnp.int32))) == 2


def test_zeros_like_keeps_sharding():
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices[:2]), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    x = jax.device_put(jnp.ones((4, 2), jnp.float32), sharding)
    z = gt.tree_zeros_like({"x": x})["x"]
    assert z.sharding == x.sharding and z.dtype == jnp.float32


def test_global_norm_matches_optax():
    params = make_params()
    np.testing.assert_allclose(gradtx.global_norm(params), optax.tree.norm(params), rtol=1e-12)


def test_invalid_hyperparameters_rejected():
    with pytest.raises(ValueError, match="b1"):
        gradtx.adam(1e-3, b1=1.0)
    with pytest.raises(ValueError, match="momentum"):
        gradtx.sgd(1e-3, momentum=-0.1)
    with pytest.raises(ValueError, match="max_norm"):
        gradtx.clip_by_global_norm(-1.0)


def test_repr_shows_the_chain_and_its_hyperparameters():
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3, b1=0.8, weight_decay=0.1))
    text = repr(tx)
    assert "clip_by_global_norm(max_norm=1.0)" in text and "scale_by_adam(b1=0.8)" in text
    assert "add_decayed_weights(weight_decay=0.1)" in text and "scale(step_size=-0.001)" in text
    html = tx._repr_html_()
    assert "<ol>" in html and "scale_by_adam" in html and "b1" in html
    assert "scale(step_size=2.0)" in repr(gradtx.chain(optax.scale(2.0)))
