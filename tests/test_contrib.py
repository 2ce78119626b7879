"""optax.contrib's optimizers in gradtx against the installed optax.contrib: same names, arguments, state and
numbers, step by step (jitted), and the wrappers, complex splitting and DP-SGD on their own problems."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from tests.cases import CONTRIB_CASES, WRAPPER_CASES
from tests.harness import assert_trees_close, dtype_rows, loss, make_params, run_functional


def _resolve(module, dotted):
    return functools.reduce(getattr, dotted.split("."), module)


def _assert_same_trajectory(ours, theirs, dtype, context):
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{context} step {step + 1}")


# A row in float64 only: the float32 run of its other option set covers it.
@pytest.mark.parametrize("case,dtype", dtype_rows(CONTRIB_CASES))
def test_matches_optax_contrib(case, dtype):
    params = make_params(dtype)
    ours = run_functional(_resolve(gradtx, case.name)(**case.kwargs), params, case.steps, extra_args=case.extra_args)
    theirs = run_functional(_resolve(optax.contrib, case.name)(**case.kwargs), params, case.steps,
                            extra_args=case.extra_args)
    _assert_same_trajectory(ours, theirs, dtype, case.id)


@pytest.mark.parametrize("case,dtype", dtype_rows(WRAPPER_CASES))
def test_wrapper_matches_optax_contrib(case, dtype):
    params = make_params(dtype)
    ours = run_functional(case.build(gradtx, gradtx), params, case.steps, extra_args=case.extra_args)
    theirs = run_functional(case.build(optax, optax.contrib), params, case.steps, extra_args=case.extra_args)
    _assert_same_trajectory(ours, theirs, dtype, case.id)


STATE_TYPES = ["COCOBState", "DoGState", "DoWGState", "DAdaptAdamWState", "MomoState", "MomoAdamState",
               "MadgradState", "SAMState", "MechanicState", "SplitRealAndImaginaryState",
               "DifferentiallyPrivateAggregateState"]


@pytest.mark.parametrize("name", STATE_TYPES)
def test_state_types_have_optax_fields(name):
    assert getattr(gradtx, name)._fields == getattr(optax.contrib, name)._fields


def test_states_match_optax_after_steps():
    """The whole state, not only the parameters: same structure, dtypes and values after a few steps."""
    params = make_params("float64")
    for build in (lambda m: m.dadapt_adamw(), lambda m: m.dog(), lambda m: m.madgrad(0.05)):
        states = []
        for module in (gradtx, optax.contrib):
            tx, p = build(module), params
            state, update = tx.init(p), jax.jit(tx.update)
            for _ in range(3):
                updates, state = update(jax.tree.map(jnp.cos, p), state, p)
                p = jax.tree.map(jnp.add, p, updates)
            states.append(state)
        ours, theirs = states
        assert [type(s).__name__ for s in jax.tree.leaves(ours, is_leaf=lambda x: hasattr(x, "_fields"))] == \
            [type(s).__name__ for s in jax.tree.leaves(theirs, is_leaf=lambda x: hasattr(x, "_fields"))]
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            assert jnp.result_type(a) == jnp.result_type(b)
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-12)


def _complex_params(dtype):
    rng = np.random.default_rng(3)
    return {"z": jnp.asarray(rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), dtype),
            "r": jnp.asarray(rng.normal(size=(4,)), "float64" if dtype == "complex128" else "float32")}


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_split_real_and_imaginary_matches_optax(dtype):
    target = _complex_params(dtype)

    def complex_loss(p):
        return sum(jnp.sum(jnp.abs(x - t) ** 4) for x, t in zip(jax.tree.leaves(p), jax.tree.leaves(target)))

    grads_at = jax.jit(lambda p: jax.tree.map(jnp.conj, jax.grad(complex_loss)(p)))
    trajectories = []
    for top, contrib in ((gradtx, gradtx), (optax, optax.contrib)):
        tx = contrib.split_real_and_imaginary(top.adam(0.05))
        params = jax.tree.map(lambda x: x * 0.5 + 0.3, target)
        state = tx.init(params)
        update = jax.jit(tx.update)
        trajectory = []
        for _ in range(10):
            updates, state = update(grads_at(params), state, params)
            params = jax.tree.map(jnp.add, params, updates)
            trajectory.append(params)
        trajectories.append(trajectory)
    as_pairs = [[jax.tree.map(lambda x: jnp.stack([x.real, x.imag]), p) for p in t] for t in trajectories]
    _assert_same_trajectory(*as_pairs, "float64" if dtype == "complex128" else "float32", dtype)


def _per_example_run(tx, params, steps=10, batch=4):
    """DP-SGD's problem: each leaf's gradient comes per example (a leading batch axis)."""
    scales = jnp.linspace(0.5, 3.0, batch)

    @jax.jit
    def step(params, state):
        full = jax.grad(lambda p: sum(jnp.sum(jnp.sin(3 * x) + x**2) for x in jax.tree.leaves(p)))(params)
        grads = jax.tree.map(lambda g: scales.reshape((batch,) + (1,) * g.ndim).astype(g.dtype) * g, full)
        updates, state = tx.update(grads, state, params)
        return jax.tree.map(jnp.add, params, updates), state

    state, trajectory = tx.init(params), []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


DP_CASES = [
    dict(learning_rate=0.05, l2_norm_clip=1.0, noise_multiplier=0.1, seed=0),
    dict(learning_rate=0.05, l2_norm_clip=0.5, noise_multiplier=0.5, seed=3, momentum=0.9, nesterov=True),
]


@pytest.mark.filterwarnings("ignore:.*seed.*is deprecated:DeprecationWarning")  # optax's dpsgd passes `seed`
@pytest.mark.parametrize("kwargs,dtype", [(DP_CASES[0], "float32"), (DP_CASES[1], "float64")], ids=str)
def test_dpsgd_matches_optax(kwargs, dtype):
    params = make_params(dtype)
    ours = _per_example_run(gradtx.dpsgd(**kwargs), params)
    theirs = _per_example_run(optax.contrib.dpsgd(**kwargs), params)
    _assert_same_trajectory(ours, theirs, dtype, f"dpsgd {kwargs}")


def test_differentially_private_aggregate_matches_optax():
    key, params = jax.random.key(11), make_params("float64")
    ours = _per_example_run(gradtx.chain(gradtx.differentially_private_aggregate(2.0, 0.3, key), gradtx.sgd(0.1)),
                            params)
    theirs = _per_example_run(optax.chain(optax.contrib.differentially_private_aggregate(2.0, 0.3, key),
                                          optax.sgd(0.1)), params)
    _assert_same_trajectory(ours, theirs, "float64", "differentially_private_aggregate")


ERRORS = [
    (lambda: gradtx.sam(gradtx.sgd(0.1), gradtx.sgd(0.1), sync_period=0), "sync_period=0"),
    (lambda: gradtx.dog(init_step=("guess", 1.0)).init(make_params()), "init_step_type='guess'"),
    (lambda: gradtx.momo().update(make_params(), gradtx.momo().init(make_params()), make_params()), "value=loss"),
    (lambda: gradtx.dadapt_adamw().update(make_params(), gradtx.dadapt_adamw().init(make_params())), "params"),
    (lambda: gradtx.sam(gradtx.sgd(0.1), gradtx.sgd(0.1), opaque_mode=True).update(
        make_params(), gradtx.sam(gradtx.sgd(0.1), gradtx.sgd(0.1), opaque_mode=True).init(make_params()),
        make_params()), "grad_fn"),
    (lambda: gradtx.differentially_private_aggregate(1.0, 1.0, key=0, seed=0), "not both"),
    (lambda: gradtx.differentially_private_aggregate(1.0, 1.0, key=0).update(
        {"a": jnp.ones((3, 2)), "b": jnp.ones((2,))}, gradtx.differentially_private_aggregate(1.0, 1.0, 0).init(None)),
     "batch dimension"),
]


@pytest.mark.filterwarnings("ignore:.*seed.*:DeprecationWarning")
@pytest.mark.parametrize("call,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_say_what_was_wrong(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()


INJECTED = [
    ("momo", dict(learning_rate=0.1, beta=0.8, weight_decay=0.05), dict(extra_args=lambda p, g: dict(value=loss(p)))),
    ("dadapt_adamw", dict(learning_rate=0.5, eps=1e-6, weight_decay=0.1), {}),
    ("acprop", dict(learning_rate=0.05, b1=0.8, b2=0.99), {}),
    ("cocob", dict(learning_rate=0.5, alpha=10.0), {}),
]


@pytest.mark.parametrize("name,hyperparams,run_kwargs", INJECTED, ids=[n for n, _, _ in INJECTED])
def test_traced_hyperparameters_match_optax(name, hyperparams, run_kwargs):
    """Hyperparameters held in the state as arrays (inject_hyperparams) give optax's numbers."""
    params = make_params("float64")
    ours = run_functional(gradtx.inject_hyperparams(getattr(gradtx, name))(**hyperparams), params, 10, **run_kwargs)
    theirs = run_functional(optax.inject_hyperparams(getattr(optax.contrib, name))(**hyperparams), params, 10,
                            **run_kwargs)
    _assert_same_trajectory(ours, theirs, "float64", f"injected {name}")
