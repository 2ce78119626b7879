"""Factored and matrix optimizers: what the shared parity tables cannot show.

SM3 against optax on trees without 0-d leaves, Muon against ``optax.contrib``,
torch's bfloat16 Newton–Schulz bit for bit, traced hyperparameters, dtypes, holes in
the tree and argument errors.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch

import gradtx
from gradtx.optim.chains import adafactor_chain, muon_chain
from gradtx import orthogonalize_via_newton_schulz
from tests.cases.factored import MUON_CASES, SM3_CASES, matrices, ranks_0_to_3
from tests.harness import assert_trees_close, dtype_rows, make_params, run_functional


def _resolve(module, dotted):
    return functools.reduce(getattr, dotted.split("."), module)


def _compare_with_optax(case, ours_module, theirs_module, params, dtype):
    ours = run_functional(_resolve(ours_module, case.name)(**case.kwargs), params, case.steps)
    theirs = run_functional(_resolve(theirs_module, case.name)(**case.kwargs), params, case.steps)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")


@pytest.mark.parametrize("case,dtype", dtype_rows(SM3_CASES))
def test_sm3_matches_optax(case, dtype):
    _compare_with_optax(case, gradtx, optax, matrices(dtype), dtype)


@pytest.mark.parametrize("case,dtype", dtype_rows(MUON_CASES))
def test_muon_matches_optax_contrib(case, dtype):
    # muon routes non-matrices to AdamW, so it runs on make_params (0-d leaf included).
    _compare_with_optax(case, gradtx, optax.contrib, make_params(dtype), dtype)


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (6, 6), (16, 9)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bfloat16_newton_schulz_is_torchs_bit_for_bit(shape, dtype):
    from torch.optim._muon import _zeropower_via_newtonschulz

    x = np.random.default_rng(sum(shape)).normal(size=shape).astype(dtype)
    coeffs = (3.4445, -4.7750, 2.0315)
    theirs = _zeropower_via_newtonschulz(torch.tensor(x), coeffs, 5, 1e-7).float().numpy()
    ours = jax.jit(lambda m: orthogonalize_via_newton_schulz(m, coeffs, 5, eps=1e-7, compute_dtype=jnp.bfloat16,
                                                             eps_mode="clamp"))(jnp.asarray(x))
    assert ours.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(ours, np.float32), theirs)


def _run(tx, params, steps=3):
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.cos(3 * p), params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    return params, state


TRACEABLE = [
    # (factory, its hyperparameters, params); every hyperparameter is passed once as a
    # Python number and once as a traced array, with the same result.
    (lambda h: adafactor_chain(lr=h["lr"], beta2_decay=h["b2"], eps=(h["e1"], h["e2"]), d=h["d"],
                               weight_decay=h["wd"], use_weight_decay=True),
     dict(lr=0.1, b2=-0.7, e1=1e-3, e2=0.2, d=1.1, wd=0.1), make_params),
    (lambda h: gradtx.adafactor(h["lr"], min_dim_size_to_factor=2, decay_rate=h["dr"], clipping_threshold=h["c"],
                                momentum=h["m"], weight_decay_rate=h["wd"], eps=h["e"]),
     dict(lr=0.1, dr=0.7, c=0.8, m=0.5, wd=0.1, e=1e-6), make_params),
    (lambda h: gradtx.sm3(h["lr"], h["m"]), dict(lr=0.1, m=0.5), matrices),
    (lambda h: gradtx.scale_by_sm3(h["b1"], h["b2"], h["e"]), dict(b1=0.5, b2=0.9, e=1e-4), make_params),
    (lambda h: muon_chain(lr=h["lr"], weight_decay=h["wd"], momentum=h["m"], eps=h["e"],
                          ns_coefficients=(h["a"], h["b"], h["c"]), use_weight_decay=True),
     dict(lr=0.1, wd=0.1, m=0.9, e=1e-3, a=3.0, b=-3.2, c=1.2), matrices),
    (lambda h: gradtx.muon(h["lr"], beta=h["beta"], eps=h["e"], weight_decay=h["wd"], consistent_rms=h["rms"]),
     dict(lr=0.1, beta=0.9, e=1e-3, wd=0.1, rms=0.2), make_params),
]


@pytest.mark.parametrize("make_tx,hyper,make", TRACEABLE, ids=["adafactor_chain", "adafactor", "sm3",
                                                               "scale_by_sm3", "muon_chain", "muon"])
def test_hyperparameters_may_be_traced(make_tx, hyper, make):
    params = make("float64")
    expected, _ = _run(make_tx(hyper), params)
    traced, _ = jax.jit(lambda h: _run(make_tx(h), params))({k: jnp.asarray(v) for k, v in hyper.items()})
    assert_trees_close(traced, expected, "float64", "traced hyperparameters")


@pytest.mark.parametrize("make_tx,params", [
    (lambda: gradtx.adafactor(0.1, min_dim_size_to_factor=2, momentum=0.9), make_params),
    (lambda: adafactor_chain(lr=0.1, weight_decay=0.1), make_params),
    (lambda: adafactor_chain(lr=0.1, eps=(1e-3, 1e-3)), make_params),
    (lambda: gradtx.sm3(0.1), matrices),
    (lambda: muon_chain(lr=0.1), matrices),
    (lambda: gradtx.muon(0.1, adaptive=True), make_params),
], ids=["adafactor", "adafactor_chain", "adafactor_chain-eps1", "sm3", "muon_chain", "muon"])
def test_float32_stays_float32_with_x64_on(make_tx, params):
    new_params, state = jax.jit(lambda p: _run(make_tx(), p))(params("float32"))
    dtypes = {str(x.dtype) for x in jax.tree.leaves((new_params, state)) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {"float32"}, dtypes


def test_factored_rms_axes_torch_last_two_optax_two_largest():
    params = {"t": jnp.ones((4, 3, 2)), "v": jnp.ones((5,))}
    state = adafactor_chain().init(params)[1]
    assert state.v_row["t"].shape == (4, 3, 1) and state.v_col["t"].shape == (4, 1, 2)  # torch's shapes
    assert state.v["v"].shape == (5,) and state.v["t"] is None and state.v_row["v"] is None
    optax_like = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2).init(params)
    assert optax_like.v_row["t"].shape == (3, 2) and optax_like.v_col["t"].shape == (4, 2)  # axis 2 is a batch axis


def test_none_leaves_pass_through():
    params = {"w": jnp.ones((3, 2)), "frozen": None}
    for tx in (gradtx.adafactor(0.1, min_dim_size_to_factor=1), adafactor_chain(), gradtx.sm3(0.1), muon_chain()):
        new, _ = _run(tx, params, steps=1)
        assert new["frozen"] is None and new["w"].shape == (3, 2)


def test_sm3_accepts_scalars_and_rejects_complex():
    new, _ = _run(gradtx.sm3(0.1), {"s": jnp.asarray(2.0), "v": jnp.ones(3)})
    assert np.isfinite(new["s"])
    with pytest.raises(ValueError, match="complex"):
        gradtx.scale_by_sm3().init({"z": jnp.ones(2, jnp.complex64)})


def test_argument_errors_say_what_to_do():
    with pytest.raises(ValueError, match="clamp_eps"):
        gradtx.scale_by_factored_rms(clamp_eps="machine")
    with pytest.raises(ValueError, match="decay_rate"):
        gradtx.scale_by_factored_rms(decay_rate=-1.0)
    with pytest.raises(ValueError, match="preconditioning"):
        orthogonalize_via_newton_schulz(jnp.ones((2, 2)), preconditioning="polar")
    with pytest.raises(ValueError, match="shape"):
        orthogonalize_via_newton_schulz(jnp.ones((2, 2)), ns_coeffs=(1.0, 2.0))
    with pytest.raises(ValueError, match="needs a matrix"):
        _run(gradtx.scale_by_newton_schulz(), {"v": jnp.ones(3)})
    with pytest.raises(ValueError, match="preset"):
        gradtx.muon(0.1, ns_coeffs="polar")
    with pytest.raises(ValueError, match="more than ns_steps"):
        gradtx.scale_by_muon(ns_coeffs=[(3.0, -3.0, 1.0)] * 6, ns_steps=5).init({"w": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="not supported"):
        muon_chain(adjust_lr_fn="spectral")
    with pytest.raises(ValueError, match="params"):
        gradtx.scale_by_param_block_rms().update({"w": jnp.ones(2)}, gradtx.EmptyState())


@pytest.mark.parametrize("name,kwargs,make", [("Adafactor", {"lr": 0.05}, ranks_0_to_3),
                                              ("Muon", {"lr": 0.05}, matrices)])
def test_facade_state_dict_is_torchs(name, kwargs, make):
    import gradtx.optim as optim

    leaves = jax.tree.leaves(make("float64"))
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    theirs = getattr(torch.optim, name)(tensors, **kwargs)
    ours = getattr(optim, name)([jnp.array(x) for x in leaves], **kwargs)
    for _ in range(2):
        grads = [jnp.cos(3 * p) for p in ours.params]
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(np.asarray(g))
        theirs.step()
        ours.step(grads)
    expected, actual = theirs.state_dict(), ours.state_dict()
    assert list(actual["param_groups"][0]) == list(expected["param_groups"][0])
    for i, state in expected["state"].items():
        assert list(actual["state"][i]) == list(state)
        for key, value in state.items():
            np.testing.assert_allclose(np.asarray(actual["state"][i][key]), value.numpy(), rtol=1e-7, atol=1e-12)
    restored = getattr(optim, name)([jnp.array(x) for x in leaves], **kwargs)
    restored.load_state_dict({"state": {i: {k: v.numpy() for k, v in s.items()} for i, s in expected["state"].items()},
                              "param_groups": expected["param_groups"]})
    assert list(restored.state_dict()["state"][0]) == list(expected["state"][0])


@pytest.mark.parametrize("name,kwargs,params", [
    ("Adafactor", {"beta2_decay": 0.5}, [np.ones((2, 2))]),
    ("Adafactor", {"eps": (-1.0, 1e-3)}, [np.ones((2, 2))]),
    ("Adafactor", {"d": 0.5}, [np.ones((2, 2))]),
    ("Muon", {"momentum": -0.1}, [np.ones((2, 2))]),
    ("Muon", {"adjust_lr_fn": "spectral"}, [np.ones((2, 2))]),
    ("Muon", {}, [np.ones(3)]),
])
def test_facade_validation_messages_are_torchs(name, kwargs, params):
    import gradtx.optim as optim

    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, name)([torch.tensor(p) for p in params], **kwargs)
    with pytest.raises(ValueError) as ours:
        getattr(optim, name)([jnp.asarray(p) for p in params], **kwargs)
    expected = str(theirs.value).replace("torch.Size([3])", "(3,)")  # shapes print as tuples here
    assert str(ours.value) == expected
