"""masked, multi_transform, apply_if_finite and inject_hyperparams: behaviour and optax parity."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gradtx
from tests.harness import assert_trees_close, make_params, run_functional


def _mask(params):
    return jax.tree.map(lambda x: x.ndim >= 1, params)


def test_masked_matches_optax_and_allocates_nothing_for_masked_leaves():
    params = make_params()
    ours = gradtx.masked(gradtx.adam(0.1), _mask)
    theirs = optax.masked(optax.adam(0.1), _mask)
    for a, b in zip(run_functional(ours, params, 6), run_functional(theirs, params, 6)):
        assert_trees_close(a, b, "float64")
    state = ours.init(params)
    assert len(jax.tree.leaves(state.inner_state[0].mu)) == 3  # w, b, nested/0 — not the 0-d leaf


def test_multi_transform_matches_optax():
    params = make_params()
    labels = {"w": "adam", "b": "sgd", "s": "frozen", "nested": ["adam"]}
    ours = gradtx.multi_transform({"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.1, 0.9),
                                   "frozen": gradtx.set_to_zero()}, labels)
    theirs = optax.multi_transform({"adam": optax.adam(0.1), "sgd": optax.sgd(0.1, 0.9),
                                    "frozen": optax.set_to_zero()}, labels)
    for a, b in zip(run_functional(ours, params, 6), run_functional(theirs, params, 6)):
        assert_trees_close(a, b, "float64")


def test_multi_transform_unknown_label():
    tx = gradtx.multi_transform({"a": gradtx.sgd(0.1)}, {"x": "a", "y": "b"})
    with pytest.raises(ValueError, match="'b'"):
        tx.init({"x": jnp.ones(1), "y": jnp.ones(1)})


@pytest.mark.parametrize("jit", [True, False])
def test_apply_if_finite_skips_bad_steps(jit):
    params = {"a": jnp.ones(3)}
    tx = gradtx.apply_if_finite(gradtx.adam(0.1), max_consecutive_errors=2)
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    good = {"a": jnp.ones(3)}
    bad = {"a": jnp.array([1.0, jnp.nan, 1.0])}
    _, state = update(good, state, params)
    inner_before = state.inner_state
    out, state = update(bad, state, params)
    assert jnp.all(out["a"] == 0)
    assert jax.tree.all(jax.tree.map(lambda x, y: jnp.array_equal(x, y), state.inner_state, inner_before))
    assert int(state.total_notfinite) == 1 and not bool(state.last_finite)

    # The same sequence through optax: same counters, same finite updates.
    ref = optax.apply_if_finite(optax.adam(0.1), 2)
    state, rstate = tx.init(params), ref.init(params)
    for g in (good, bad, bad, bad, good):
        o, state = update(g, state, params)
        r, rstate = ref.update(g, rstate, params)
        assert int(state.notfinite_count) == int(rstate.notfinite_count)
        assert bool(jnp.all(jnp.isfinite(o["a"]))) == bool(jnp.all(jnp.isfinite(r["a"])))
        if bool(jnp.all(jnp.isfinite(r["a"]))):
            assert_trees_close(o, r, "float64")


def test_inject_hyperparams_changes_without_recompiling():
    params = make_params()
    tx = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1, b1=0.9)
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        grads = jax.grad(lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p)))(params)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    params, state = step(params, state)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01, state.hyperparams["learning_rate"].dtype)
    params, state = step(params, state)
    assert len(traces) == 1
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.01)


def test_inject_hyperparams_matches_optax_with_schedule():
    params = make_params()
    sched = lambda count: 0.1 / (1.0 + count)  # noqa: E731
    ours = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=sched, momentum=0.9)
    theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=sched, momentum=0.9)
    for a, b in zip(run_functional(ours, params, 8), run_functional(theirs, params, 8)):
        assert_trees_close(a, b, "float64")


@pytest.mark.parametrize("jit", [True, False])
def test_schedule_learning_rate_and_weight_decay(jit):
    params = make_params()
    sched = lambda count: 0.1 * 0.9**count  # noqa: E731
    ours = gradtx.chain(gradtx.add_decayed_weights(sched), gradtx.scale_by_learning_rate(sched))
    theirs = optax.chain(optax.add_decayed_weights(sched), optax.scale_by_learning_rate(sched))
    for a, b in zip(run_functional(ours, params, 6, jit=jit), run_functional(theirs, params, 6)):
        assert_trees_close(a, b, "float64")
