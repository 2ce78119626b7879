"""Adam's relatives beyond the parity tables: traced hyperparameters, dtypes, odd leaves, errors, limits."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.optim.chains import nadam_chain, radam_chain
from tests.harness import assert_trees_close, make_params, run_functional

# Every transform of the family, with options that reach its less common branches (the aliases only chain them).
TRANSFORMS = {
    "nadam_torch": lambda: gradtx.scale_by_nadam(momentum_decay=0.1),
    "radam": lambda: gradtx.scale_by_radam(nesterov=True),
    "radam_torch": lambda: gradtx.scale_by_radam(eps_on_raw=True, strict_threshold=True),
    "belief": lambda: gradtx.scale_by_belief(nesterov=True),
    "yogi": lambda: gradtx.scale_by_yogi(),
    "novograd": lambda: gradtx.scale_by_novograd(weight_decay=0.1, mu_dtype=None),
    "lion": lambda: gradtx.scale_by_lion(mode="smooth"),
    "adan": lambda: gradtx.scale_by_adan(),
    "trust_ratio": lambda: gradtx.scale_by_trust_ratio(min_norm=1e-3),
}


OPTAX_NAMES = ["nadam", "nadamw", "radam", "adabelief", "yogi", "novograd", "lion", "adan", "lamb", "lars", "fromage",
               "scale_by_radam", "scale_by_belief", "scale_by_yogi", "scale_by_novograd", "scale_by_lion",
               "scale_by_adan", "scale_by_trust_ratio"]


def test_signatures_and_defaults_are_optaxs():
    import inspect

    import optax

    def parameters(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    for name in OPTAX_NAMES:
        ours, theirs = parameters(getattr(gradtx, name)), parameters(getattr(optax, name))
        assert ours[:len(theirs)] == theirs, name  # gradtx may add keyword-only options after optax's
        assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in ours[len(theirs):]), name


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_float32_none_and_empty_leaves(name):
    # x64 is on in the tests, so a float64 leak would show; None leaves stay None; extra args are ignored.
    params = {"w": jnp.ones((2, 3), jnp.float32), "s": jnp.float32(-2.0), "empty": jnp.zeros((0, 4), jnp.float32),
              "frozen": None}
    grads = {"w": jnp.full((2, 3), 0.5, jnp.float32), "s": jnp.float32(0.3), "empty": jnp.zeros((0, 4), jnp.float32),
             "frozen": None}
    tx = TRANSFORMS[name]()
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=jnp.ones([])))
    updates, state = step(grads, tx.init(params), params)
    updates, state = step(grads, state, params)
    assert updates["frozen"] is None and updates["empty"].shape == (0, 4)
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(state)} <= {jnp.dtype("float32"), jnp.dtype("int32")}
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(updates))


@pytest.mark.parametrize("factory,kwargs", [
    (gradtx.radam, dict(learning_rate=0.05, b2=0.99, threshold=4.0)),
    (gradtx.adabelief, dict(learning_rate=0.05, nesterov=True)),
    (gradtx.yogi, dict(learning_rate=0.05)),
    (gradtx.novograd, dict(learning_rate=0.05, weight_decay=0.1)),
    (gradtx.lion, dict(learning_rate=0.01)),
    (gradtx.adan, dict(learning_rate=0.05, weight_decay=0.1)),
    (gradtx.lamb, dict(learning_rate=0.05, weight_decay=0.1)),
    (gradtx.lars, dict(learning_rate=0.5, weight_decay=0.1)),
    (gradtx.fromage, dict(learning_rate=0.05)),
    (nadam_chain, dict(lr=0.05, eps=1e-6, momentum_decay=0.05, weight_decay=0.1, use_weight_decay=True)),
    (radam_chain, dict(lr=0.05, eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True, use_weight_decay=True)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_hyperparameters_may_be_traced_arrays(factory, kwargs):
    params = make_params()
    injected = gradtx.inject_hyperparams(factory)(**kwargs)
    assert_trees_close(run_functional(injected, params, 4)[-1], run_functional(factory(**kwargs), params, 4)[-1],
                       "float64", factory.__name__)


def test_schedules_are_evaluated_at_the_step_count():
    params = make_params()
    constant = gradtx.scale_by_nadam(b1=0.8, momentum_decay=0.05)
    scheduled = gradtx.scale_by_nadam(b1=lambda count: 0.8 + 0.0 * count, momentum_decay=lambda count: 0.05)
    assert_trees_close(run_functional(scheduled, params, 4)[-1], run_functional(constant, params, 4)[-1], "float64")


def test_torch_nadam_limit_is_optax_nadam():
    # mu_t -> b1 as momentum_decay -> inf; with an exact product this is scale_by_adam(nesterov=True).
    params = make_params()
    torch_form = gradtx.scale_by_nadam(b1=0.8, momentum_decay=float("inf"), mu_product_dtype="float64")
    optax_form = gradtx.scale_by_adam(b1=0.8, nesterov=True)
    for a, b in zip(run_functional(torch_form, params, 6), run_functional(optax_form, params, 6)):
        assert_trees_close(a, b, "float64")


def test_nadam_keeps_torchs_mu_product():
    params = {"w": jnp.ones(3)}
    tx = gradtx.scale_by_nadam(b1=0.9, momentum_decay=4e-3)
    state = tx.init(params)
    assert state.mu_product.dtype == jnp.float32 and float(state.mu_product) == 1.0
    for _ in range(3):
        _, state = jax.jit(tx.update)(params, state)
    expected = np.float32(1.0)
    for t in (1, 2, 3):
        expected = np.float32(expected * np.float32(0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3))))
    assert float(state.mu_product) == float(expected)


def test_radam_rectification_switches_on_at_the_threshold():
    # b2 = 0.999: rho_t < 5 for t <= 5, so the first five steps are plain bias-corrected momentum.
    g = {"x": jnp.array([2.0, -3.0])}
    tx = gradtx.scale_by_radam(b1=0.0)
    state, update = tx.init(g), jax.jit(tx.update)
    for step in range(1, 8):
        updates, state = update(g, state)
        if step <= 5:
            np.testing.assert_allclose(updates["x"], g["x"])
        else:
            assert np.all(np.abs(updates["x"]) < 2.0)


def test_trust_ratio_is_one_for_zero_norms():
    tx = gradtx.scale_by_trust_ratio()
    params = {"zero": jnp.zeros(3), "w": jnp.ones(4)}
    updates = {"zero": jnp.ones(3), "w": jnp.zeros(4)}
    out, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_array_equal(out["zero"], updates["zero"])
    np.testing.assert_array_equal(out["w"], updates["w"])


def test_trust_ratio_gradient_is_finite_at_zero():
    tx = gradtx.scale_by_trust_ratio(min_norm=1e-3)

    def f(p):
        out, _ = tx.update({"w": jnp.ones(3)}, tx.init({"w": p}), {"w": p})
        return jnp.sum(out["w"])

    assert np.all(np.isfinite(jax.grad(f)(jnp.zeros(3))))


def test_complex_params_get_real_second_moments():
    params = {"z": jnp.array([1.0 + 2.0j, -0.5j], dtype=jnp.complex64)}
    for make in (gradtx.scale_by_yogi, gradtx.scale_by_belief, gradtx.scale_by_radam, gradtx.scale_by_nadam,
                 gradtx.scale_by_adan, gradtx.scale_by_novograd):
        tx = make()
        updates, state = jax.jit(tx.update)(params, tx.init(params), params)
        assert updates["z"].dtype == jnp.complex64
        second = state.n if make is gradtx.scale_by_adan else state.nu
        assert second["z"].dtype == jnp.float32, make.__name__


def _first_update(tx):
    grads = jnp.ones(2)
    return tx.update(grads, tx.init(grads))


@pytest.mark.parametrize("build,match", [
    (lambda: gradtx.scale_by_radam(b2=1.0), "b2 must be in"),
    (lambda: gradtx.scale_by_nadam(momentum_decay=-1.0), "momentum_decay must be in"),
    (lambda: gradtx.scale_by_adan(b3=1.5), "b3 must be in"),
    (lambda: gradtx.scale_by_yogi(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    # As optax, Lion's mode is checked at the first update.
    (lambda: _first_update(gradtx.scale_by_lion(mode="soft")), "mode must be one of"),
    (lambda: gradtx.scale_by_trust_ratio(min_norm=-1.0), "min_norm must be in"),
])
def test_invalid_arguments_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_params_are_required_where_used():
    grads = {"w": jnp.ones(3)}
    for tx in (gradtx.scale_by_trust_ratio(), gradtx.scale_by_novograd(weight_decay=0.1)):
        with pytest.raises(ValueError, match="needs the current parameters"):
            tx.update(grads, tx.init(grads))
    tx = gradtx.scale_by_novograd()  # no decay: params are not needed
    tx.update(grads, tx.init(grads))


@pytest.mark.parametrize("name,kwargs", [("NAdam", dict(lr=0.1, weight_decay=0.1, momentum_decay=0.01)),
                                         ("RAdam", dict(lr=0.1, decoupled_weight_decay=True, weight_decay=0.1))])
def test_facade_state_dict_is_torchs(name, kwargs):
    import torch

    import gradtx.optim as optim

    x = np.array([1.0, -2.0, 3.0])
    ours = getattr(optim, name)([jnp.asarray(x)], **kwargs)
    tensor = torch.tensor(x, requires_grad=True)
    theirs = getattr(torch.optim, name)([tensor], **kwargs)
    for _ in range(2):
        ours.step([ours.params[0] * 2.0])
        tensor.grad = tensor.detach() * 2.0
        theirs.step()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert list(a["state"][0]) == list(b["state"][0])  # same keys, in torch's order
    for key, value in b["state"][0].items():
        assert np.asarray(a["state"][0][key]).dtype == value.numpy().dtype, key
        np.testing.assert_allclose(np.asarray(a["state"][0][key]), value.numpy(), rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("name,kwargs", [
    ("NAdam", dict(lr=-1.0)), ("NAdam", dict(eps=-1.0)), ("NAdam", dict(betas=(1.0, 0.9))),
    ("NAdam", dict(betas=(0.9, -0.1))), ("NAdam", dict(weight_decay=-1.0)), ("NAdam", dict(momentum_decay=-1.0)),
    ("RAdam", dict(lr=-1.0)), ("RAdam", dict(betas=(0.9, 1.0))), ("RAdam", dict(weight_decay=-1.0)),
])
def test_facade_validation_says_what_torch_says(name, kwargs):
    import torch

    import gradtx.optim as optim

    with pytest.raises(ValueError) as expected:
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match="^" + re.escape(expected.value.args[0]) + "$"):
        getattr(optim, name)([jnp.zeros(2)], **kwargs)
