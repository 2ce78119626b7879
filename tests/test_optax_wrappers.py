"""optax's wrappers in gradtx, live against optax 0.2.8: the same wrapper around the same inner optimizer.

Each row builds the wrapper from a library (``lib`` is ``gradtx`` or ``optax``), so
the inner transformation is that library's own too.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.harness import assert_trees_close, grad_fn, make_params, run_functional


def _every_other(step):
    return step % 2 == 0


def _after_three(step):
    return step >= 3


def _labels(params):
    return {k: ("a" if k in ("w", "s") else "b") for k in params}


FROZEN = {"w": True, "b": False, "s": False, "nested": [True]}
MASK = {"w": True, "b": False, "s": True, "nested": [False]}

# name -> lib -> transformation; every row runs 12 jitted steps in float64, those in FLOAT32_ROWS in float32 too.
WRAPPERS = {
    "MultiSteps-k3-mean": lambda lib: lib.MultiSteps(lib.adam(0.1), 3).gradient_transformation(),
    "MultiSteps-k2-sum": lambda lib: lib.MultiSteps(lib.sgd(0.05, momentum=0.9), 2, use_grad_mean=False)
    .gradient_transformation(),
    "MultiSteps-schedule": lambda lib: lib.MultiSteps(lib.adam(0.1), lambda step: 1 + step % 3,
                                                      accumulator_dtype=jnp.float64).gradient_transformation(),
    "MultiSteps-skip-large": lambda lib: lib.MultiSteps(
        lib.sgd(0.1), 2, should_skip_update_fn=functools.partial(lib.skip_large_updates, max_squared_norm=30.0)
    ).gradient_transformation(),
    "MultiSteps-skip-not-finite": lambda lib: lib.MultiSteps(lib.adam(0.1), 2,
                                                             should_skip_update_fn=lib.skip_not_finite)
    .gradient_transformation(),
    "freeze": lambda lib: lib.chain(lib.adam(0.1), lib.freeze(FROZEN)),
    "freeze-all": lambda lib: lib.chain(lib.sgd(0.1), lib.freeze(True)),
    "selective_transform": lambda lib: lib.selective_transform(lib.adam(0.1), freeze_mask=FROZEN),
    "flatten-adam": lambda lib: lib.flatten(lib.adam(0.1)),
    "flatten-lion": lambda lib: lib.flatten(lib.chain(lib.clip_by_global_norm(1.0), lib.lion(0.03))),
    "conditionally_transform": lambda lib: lib.chain(lib.conditionally_transform(lib.scale_by_adam(), _every_other),
                                                     lib.scale(-0.1)),
    "conditionally_mask": lambda lib: lib.conditionally_mask(lib.adam(0.1), _after_three),
    "ema-in-chain": lambda lib: lib.chain(lib.ema(0.9), lib.scale(-0.1)),
    "apply_every-in-chain": lambda lib: lib.chain(lib.trace(0.9), lib.apply_every(3), lib.scale(-0.1)),
    "partition": lambda lib: lib.partition({"a": lib.adam(0.1), "b": lib.sgd(0.1)}, _labels),
    "masked-centralize": lambda lib: lib.chain(lib.masked(lib.centralize(), MASK), lib.sgd(0.1)),
    "adaptive_grad_clip-chain": lambda lib: lib.chain(lib.adaptive_grad_clip(0.05), lib.sgd(0.5)),
    "keep_params_nonnegative-chain": lambda lib: lib.chain(lib.sgd(0.3), lib.keep_params_nonnegative()),
    "monitor": lambda lib: lib.chain(
        lib.monitor({"norm": lib.tree.norm if lib is optax else gradtx.global_norm,
                     "norm_ema": lib.measure_with_ema(lambda u: jnp.sum(jax.tree.leaves(u)[0]), 0.9)}),
        lib.adam(0.1)),
    "snapshot": lambda lib: lib.chain(lib.snapshot("first", lambda u: jax.tree.leaves(u)[0]), lib.sgd(0.1)),
    "inject_stateful_hyperparams": lambda lib: lib.inject_stateful_hyperparams(lib.adam)(
        learning_rate=lambda count: 0.1 / (1.0 + count), b1=0.8),
}


FLOAT32_ROWS = ["MultiSteps-k3-mean", "flatten-adam", "monitor", "conditionally_mask"]


@pytest.mark.filterwarnings("ignore:inject_stateful_hyperparams is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name,dtype", [(name, "float64") for name in WRAPPERS]
                         + [(name, "float32") for name in FLOAT32_ROWS])
def test_wrapper_matches_optax(name, dtype):
    params = make_params(dtype)
    build = WRAPPERS[name]
    ours = run_functional(build(gradtx), params, 12)
    theirs = run_functional(build(optax), params, 12)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{name} step {step + 1}")


@pytest.mark.filterwarnings("ignore:inject_stateful_hyperparams is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", ["MultiSteps-k3-mean", "MultiSteps-skip-large", "monitor", "snapshot", "ema-in-chain",
                                  "conditionally_mask", "inject_stateful_hyperparams", "flatten-adam"])
def test_wrapper_state_matches_optax(name):
    """The states hold the same numbers in the same layout (counts, accumulators, measurements)."""
    params = make_params("float64")
    txs = [WRAPPERS[name](lib) for lib in (gradtx, optax)]
    states = [tx.init(params) for tx in txs]
    for _ in range(5):
        grads = grad_fn(params)
        states = [jax.jit(tx.update)(grads, s, params)[1] for tx, s in zip(txs, states)]
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    _assert_same_leaves(states[0], states[1], name)


def _assert_same_leaves(actual, expected, context):
    """Same key paths (field names, dict keys) and numbers; the NamedTuple classes are each library's own."""
    flat = [jax.tree_util.tree_flatten_with_path(t)[0] for t in (actual, expected)]
    assert [jax.tree_util.keystr(p) for p, _ in flat[0]] == [jax.tree_util.keystr(p) for p, _ in flat[1]], context
    assert_trees_close([x for _, x in flat[0]], [x for _, x in flat[1]], "float64", context)


def _run_lookahead(lib, params, steps, **kwargs):
    tx = lib.lookahead(lib.adam(0.1), **kwargs)
    both = lib.LookaheadParams.init_synced(params)
    state = tx.init(both)

    @jax.jit
    def step(both, state):
        updates, state = tx.update(grad_fn(both.fast), state, both)
        return lib.apply_updates(both, updates), state

    trajectory = []
    for _ in range(steps):
        both, state = step(both, state)
        trajectory.append((both, state))
    return trajectory


@pytest.mark.parametrize("kwargs", [dict(sync_period=3, slow_step_size=0.5),
                                    dict(sync_period=2, slow_step_size=0.3, reset_state=True),
                                    dict(sync_period=1, slow_step_size=0.8)])
def test_lookahead_matches_optax(kwargs):
    params = make_params("float64")
    ours = _run_lookahead(gradtx, params, 12, **kwargs)
    theirs = _run_lookahead(optax, params, 12, **kwargs)
    for step, ((pa, sa), (pb, sb)) in enumerate(zip(ours, theirs)):
        assert_trees_close(tuple(pa), tuple(pb), "float64", f"lookahead params step {step + 1}")
        _assert_same_leaves(sa, sb, f"lookahead state step {step + 1}")


def test_lookahead_rejects_bad_sync_period():
    with pytest.raises(ValueError, match="sync_period"):
        gradtx.lookahead(gradtx.sgd(0.1), sync_period=0, slow_step_size=0.5)


@pytest.mark.filterwarnings("ignore:`optimistic_adam` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kwargs", [dict(learning_rate=0.05), dict(learning_rate=0.05, optimism=0.1, b1=0.8)])
def test_optimistic_adam_matches_optax(kwargs):
    params = make_params("float64")
    ours = run_functional(gradtx.optimistic_adam(**kwargs), params, 12)
    theirs = run_functional(optax.optimistic_adam(**kwargs), params, 12)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"optimistic_adam step {step + 1}")


def test_multisteps_skips_non_finite_mini_steps_like_optax():
    params = make_params("float64")
    grads = [grad_fn(params), jax.tree.map(lambda g: g * jnp.nan, grad_fn(params)), grad_fn(params)]
    outs = []
    for lib in (gradtx, optax):
        tx = lib.MultiSteps(lib.adam(0.1), 2, should_skip_update_fn=lib.skip_not_finite)
        state, updates = tx.init(params), []
        for g in grads:
            u, state = jax.jit(tx.update)(g, state, params)
            updates.append(u)
        outs.append((updates, state, tx.has_updated(state)))
    assert_trees_close(outs[0][0], outs[1][0], "float64", "updates")
    _assert_same_leaves(outs[0][1], outs[1][1], "state")
    assert bool(outs[0][2]) == bool(outs[1][2])


@pytest.mark.parametrize("clip", [0.5, 3.0])
def test_per_example_clipping_matches_optax(clip):
    rng = np.random.default_rng(1)
    grads = {"w": jnp.asarray(rng.normal(size=(6, 4, 3))), "b": jnp.asarray(rng.normal(size=(6, 5)))}
    assert_trees_close(gradtx.per_example_global_norm_clip(grads, clip),
                       optax.per_example_global_norm_clip(grads, clip), "float64", "global")
    for uniform in (True, False):
        assert_trees_close(gradtx.per_example_layer_norm_clip(grads, clip, uniform),
                           optax.per_example_layer_norm_clip(grads, clip, uniform), "float64", f"layer {uniform}")


def test_per_example_clipping_needs_a_batch_axis():
    with pytest.raises(ValueError, match="batch dimension"):
        gradtx.per_example_global_norm_clip({"s": jnp.ones(())}, 1.0)


@pytest.mark.parametrize("shape,axis", [((3,), None), ((4, 3), None), ((2, 4, 3), None), ((3, 3, 2, 4), None),
                                        ((2, 2, 2, 3, 4), None), ((4, 3), 1), ((6, 2, 3, 2, 1, 2), (0, 2))])
def test_unitwise_norm_and_clip_match_optax(shape, axis):
    x = jnp.asarray(np.random.default_rng(2).normal(size=shape))
    ours, theirs = gradtx.transforms.unitwise_norm(x, axis), optax.transforms._clipping.unitwise_norm(x, axis)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(gradtx.transforms.unitwise_clip(ours, 0.7 * ours + 0.1, x),
                               optax.transforms._clipping.unitwise_clip(theirs, 0.7 * theirs + 0.1, x), rtol=1e-12)


def test_incremental_and_periodic_update_match_optax():
    new, old = make_params("float64", 1), make_params("float64", 2)
    assert_trees_close(gradtx.incremental_update(new, old, 0.3), optax.incremental_update(new, old, 0.3), "float64")
    for steps in (0, 3, 4):
        assert_trees_close(gradtx.periodic_update(new, old, steps, 2), optax.periodic_update(new, old, steps, 2),
                           "float64", f"periodic step {steps}")
    with_none = {"a": None, "b": jnp.ones(2)}
    assert gradtx.incremental_update(with_none, with_none, 0.5)["a"] is None


def test_zero_nans_records_where_it_found_nans():
    tx = gradtx.zero_nans()
    updates = {"a": jnp.array([1.0, jnp.nan]), "b": jnp.ones(2)}
    out, state = tx.update(updates, tx.init(updates))
    np.testing.assert_array_equal(out["a"], [1.0, 0.0])
    assert bool(state.found_nan["a"]) and not bool(state.found_nan["b"])


@pytest.mark.parametrize("kwargs", [dict(min_norm=0.1), dict(min_norm=10.0), dict(min_norm=0.5, ord=1, axis=1),
                                    dict(min_norm=1.0, axis=0, keepdims=True)])
def test_safe_norm_and_its_gradient_match_optax(kwargs):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)))
    values = [lib.safe_norm(x, **kwargs) for lib in (gradtx, optax)]
    grads = [jax.grad(lambda v, lib=lib: jnp.sum(lib.safe_norm(v, **kwargs)))(x) for lib in (gradtx, optax)]
    assert_trees_close(values[0], values[1], "float64", "value")
    assert_trees_close(grads[0], grads[1], "float64", "gradient")


def test_numerical_helpers_match_optax():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(5,)))
    for min_rms in (0.1, 5.0):
        np.testing.assert_allclose(gradtx.safe_root_mean_squares(x, min_rms), optax.safe_root_mean_squares(x, min_rms))
        np.testing.assert_allclose(jax.grad(lambda v: gradtx.safe_root_mean_squares(v, min_rms))(x),
                                   jax.grad(lambda v: optax.safe_root_mean_squares(v, min_rms))(x))
    g, m = make_params("float64", 5), make_params("float64", 6)
    assert_trees_close(gradtx.update_infinity_moment(g, m, 0.9, 1e-3), optax.update_infinity_moment(g, m, 0.9, 1e-3),
                       "float64")
    assert_trees_close(gradtx.bias_correction(m, 0.9, 3), optax.bias_correction(m, 0.9, 3), "float64")
    top = jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32)
    assert int(gradtx.safe_int32_increment(top)) == int(optax.safe_int32_increment(top))
    for scale in (0.0, 1.0, 0.3):
        grads = [jax.grad(lambda v, lib=lib: jnp.sum(lib.scale_gradient(v, scale) ** 2))(x) for lib in (gradtx, optax)]
        np.testing.assert_allclose(grads[0], grads[1])


def test_value_and_grad_from_state_reuses_the_line_search_value():
    from tests.harness import loss

    params = make_params("float64")
    outs = []
    for lib in (gradtx, optax):
        tx = lib.lbfgs()
        value_and_grad = lib.value_and_grad_from_state(loss)
        update = jax.jit(tx.update, static_argnames="value_fn")  # the zoom line search op by op takes a minute
        state, p, trace = tx.init(params), params, []
        for _ in range(4):
            value, grad = value_and_grad(p, state=state)
            updates, state = update(grad, state, p, value=value, grad=grad, value_fn=loss)
            p = lib.apply_updates(p, updates)
            trace.append((value, p))
        outs.append(trace)
    for step, (a, b) in enumerate(zip(*outs)):
        assert_trees_close(a, b, "float64", f"step {step + 1}")
