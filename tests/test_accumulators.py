"""The accumulators family beyond the parity tables: validation, traced and scheduled
hyperparameters, dtypes (float32, complex), and trees with None / 0-d / empty leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.optim.chains import adadelta_chain, adagrad_chain, adamax_chain, rmsprop_chain
from tests.harness import assert_trees_close, grad_fn, make_params, run_functional

TRANSFORMS = {
    "scale_by_rss": lambda: gradtx.scale_by_rss(),
    "scale_by_rss_torch": lambda: gradtx.scale_by_rss(0.0, 1e-10, eps_in_sqrt=False),
    "scale_by_rms": lambda: gradtx.scale_by_rms(bias_correction=True),
    "scale_by_stddev": lambda: gradtx.scale_by_stddev(eps_in_sqrt=False),
    "scale_by_adadelta": lambda: gradtx.scale_by_adadelta(),
    "scale_by_adamax": lambda: gradtx.scale_by_adamax(),
}


@pytest.mark.parametrize("factory, kwargs, message", [
    (gradtx.scale_by_rss, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (gradtx.scale_by_rss, dict(eps=-1e-3), "eps"),
    (gradtx.scale_by_rms, dict(decay=1.5), "decay"),
    (gradtx.scale_by_stddev, dict(initial_scale=-0.1), "initial_scale"),
    (gradtx.scale_by_adadelta, dict(rho=-0.1), "rho"),
    (gradtx.scale_by_adamax, dict(b1=1.0), "b1"),
])
def test_invalid_hyperparameters_are_named(factory, kwargs, message):
    with pytest.raises(ValueError, match=f"{factory.__name__}: {message}"):
        factory(**kwargs)


# (builder, python-float options, the same options' static flags)
BUILDERS = [
    (adagrad_chain, dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-3),
     dict(use_weight_decay=True)),
    (rmsprop_chain, dict(lr=0.01, alpha=0.9, eps=1e-3, weight_decay=0.1, momentum=0.9),
     dict(use_weight_decay=True, use_momentum=True)),
    (adadelta_chain, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1), dict(use_weight_decay=True)),
    (adamax_chain, dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1), dict(use_weight_decay=True)),
]


@pytest.mark.parametrize("builder, options, flags", BUILDERS, ids=[b.__name__ for b, _, _ in BUILDERS])
def test_chain_builders_accept_traced_hyperparameters(builder, options, flags):
    """The facade passes every number as an array inside jit (float64 ones here: float32 params must not leak)."""
    dtype = "float32"
    params = make_params(dtype)
    expected = run_functional(builder(**options), params, 3)
    arrays = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), options)

    @jax.jit
    def run(hyper, params):
        tx = builder(**hyper, **flags)
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grad_fn(params), state, params)
            params = gradtx.apply_updates(params, updates)
        return params, state

    got, state = run(arrays, params)
    assert_trees_close(got, expected[-1], dtype, builder.__name__)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.dtype(dtype), jnp.int32), f"{builder.__name__} state leaked {leaf.dtype}"


@pytest.mark.parametrize("alias, kwargs", [
    pytest.param(gradtx.rmsprop, dict(learning_rate=0.01, decay=0.9, eps=1e-8, momentum=0.9, centered=True),
                 id="rmsprop"),
    pytest.param(gradtx.adamaxw, dict(learning_rate=0.05, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
                 id="adamaxw"),
])
def test_aliases_under_inject_hyperparams(alias, kwargs):
    params = make_params("float32")
    expected = run_functional(alias(**kwargs), params, 3)
    got = run_functional(gradtx.inject_hyperparams(alias)(**kwargs), params, 3)
    assert_trees_close(got[-1], expected[-1], "float32", alias.__name__)


def test_hyperparameters_may_be_schedules():
    params = make_params()
    constant = run_functional(gradtx.scale_by_adamax(b1=0.8, eps=1e-3), params, 4)
    scheduled = run_functional(gradtx.scale_by_adamax(b1=lambda count: 0.8 + 0.0 * count, eps=lambda count: 1e-3),
                               params, 4)
    assert_trees_close(scheduled[-1], constant[-1], "float64")
    # Adagrad's torch step size lr / (1 + (t-1) * lr_decay), with lr itself a schedule
    params = {"s": jnp.asarray(0.3)}
    grads = {"s": jnp.asarray(1.0)}
    tx = adagrad_chain(lr=lambda count: 0.1 * 2.0**count, lr_decay=0.5, initial_accumulator_value=1.0, eps=0.0)
    state = tx.init(params)
    for step in range(1, 4):
        updates, state = tx.update(grads, state, params)
        expected = -0.1 * 2.0 ** (step - 1) / (1 + (step - 1) * 0.5) / np.sqrt(1.0 + step)
        np.testing.assert_allclose(np.asarray(updates["s"]), expected, rtol=1e-12)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_complex_params_keep_real_second_moments(name):
    params = {"z": jnp.asarray([1 + 2j, -0.5j, 3.0], jnp.complex64)}
    grads = {"z": jnp.asarray([0.3 - 1j, 2j, -1.0], jnp.complex64)}
    tx = TRANSFORMS[name]()
    state = tx.init(params)
    for _ in range(2):
        updates, state = jax.jit(tx.update)(grads, state, params)
    assert updates["z"].dtype == jnp.complex64
    assert np.all(np.isfinite(np.asarray(updates["z"])))
    for field, value in state._asdict().items():
        if field != "count" and field != "mu":
            assert value["z"].dtype == jnp.float32, f"{name}.{field} is {value['z'].dtype}"
    # a real gradient seen as complex gives the real result
    real = {"z": jnp.asarray([0.3, -2.0, 1.0], jnp.float32)}
    as_complex = {"z": real["z"].astype(jnp.complex64)}
    out_r, _ = tx.update(real, tx.init(real), real)
    out_c, _ = tx.update(as_complex, tx.init(as_complex), as_complex)
    np.testing.assert_allclose(np.asarray(out_c["z"]), np.asarray(out_r["z"]), rtol=1e-6)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_none_zero_dim_and_empty_leaves(name):
    params = {"none": None, "scalar": jnp.asarray(0.5, jnp.float32), "empty": jnp.zeros((0, 3), jnp.float32),
              "w": jnp.ones((2,), jnp.float32)}
    grads = {"none": None, "scalar": jnp.asarray(-1.0, jnp.float32), "empty": jnp.zeros((0, 3), jnp.float32),
             "w": jnp.asarray([0.5, 0.0], jnp.float32)}
    tx = TRANSFORMS[name]()
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert updates["none"] is None
    assert updates["scalar"].shape == () and updates["empty"].shape == (0, 3)
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(state))
    assert np.all(np.isfinite(np.asarray(updates["w"]))) and float(updates["w"][1]) == 0.0


def test_adadelta_without_learning_rate_ascends_as_optax_does():
    """optax.adadelta(None) has no learning-rate stage, so the update is +delta; we keep that."""
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([0.5, 0.25])}
    alias, _ = gradtx.adadelta().update(grads, gradtx.adadelta().init(params), params)
    assert np.all(np.asarray(alias["w"]) > 0)


def test_chain_builders_skip_stages_like_torch():
    """No momentum buffer or decay stage when the value is 0 (torch keeps no momentum_buffer then)."""
    params = make_params()
    plain = rmsprop_chain(lr=0.01).init(params)
    with_momentum = rmsprop_chain(lr=0.01, momentum=0.9).init(params)
    assert sum(isinstance(s, gradtx.TraceState) for s in plain) == 0
    assert sum(isinstance(s, gradtx.TraceState) for s in with_momentum) == 1
    assert isinstance(rmsprop_chain(centered=True).init(params)[2], gradtx.ScaleByRStdDevState)


# --- the facade classes (their numbers, complex parameters and rejected options against torch: the records in
# tests/cases/optimizers.py, run by tests/test_facade_parity.py and tests/test_optimizer_records.py) -----------

def test_adagrad_state_exists_before_the_first_step_like_torch():
    """torch's Adagrad fills state at construction, from the defaults' initial_accumulator_value (not a group's)."""
    import torch

    import gradtx.optim as optim

    a, b, c = np.ones((2,)), np.full((3,), -1.0), np.full((2,), 0.5)
    ta, tb, tc = (torch.tensor(x, requires_grad=True) for x in (a, b, c))
    theirs = torch.optim.Adagrad([{"params": [ta], "initial_accumulator_value": 2.0}, {"params": [tb]}],
                                 lr=0.1, initial_accumulator_value=0.5)
    boxes = [optim.Parameter(jnp.asarray(x)) for x in (a, b, c)]
    ours = optim.Adagrad([{"params": [boxes[0]], "initial_accumulator_value": 2.0}, {"params": [boxes[1]]}],
                         lr=0.1, initial_accumulator_value=0.5)
    theirs.add_param_group({"params": [tc], "initial_accumulator_value": 3.0})
    ours.add_param_group({"params": [boxes[2]], "initial_accumulator_value": 3.0})
    expected = theirs.state_dict()["state"]
    got = ours.state_dict()["state"]
    assert sorted(got) == [0, 1, 2] and sorted(expected) == [0, 1]  # torch fills a later group at its first step
    for i in expected:
        assert list(got[i]) == list(expected[i]) == ["step", "sum"]
        np.testing.assert_array_equal(got[i]["sum"], expected[i]["sum"].numpy())
    for _ in range(2):
        for t, box in zip((ta, tb, tc), boxes):
            t.grad = torch.ones_like(t)
            box.grad = jnp.ones_like(box.data)
        theirs.step()
        ours.step()
    for t, box in zip((ta, tb, tc), boxes):
        np.testing.assert_allclose(np.asarray(box.data), t.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(ours.state[box]["sum"]), theirs.state[t]["sum"].numpy(), rtol=1e-12)
