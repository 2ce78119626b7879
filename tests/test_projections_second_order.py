"""gradtx.projections and gradtx.second_order against optax.projections and optax.second_order."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.projections as op
import pytest

import gradtx
import gradtx.projections as gp
import gradtx.second_order as gs


def _tree(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(3, 2)), dtype), "b": jnp.asarray(rng.normal(size=(4,)), dtype)}


def _assert_same(ours, theirs, context=""):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs), context
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert jnp.result_type(a) == jnp.result_type(b), context
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-12, err_msg=context)


# (name, args(x, a) -> positional args); each is called on gradtx.projections and optax.projections.
PROJECTIONS = [
    ("projection_non_negative", lambda x, a: (x,)),
    ("projection_box", lambda x, a: (x, jax.tree.map(lambda v: v * 0 - 0.3, x), jax.tree.map(lambda v: v * 0 + 0.4,
                                                                                               x))),
    ("projection_hypercube", lambda x, a: (x["b"],)),  # optax takes scalar bounds for a single array only
    ("projection_hypercube", lambda x, a: (x["w"], 0.5)),
    ("projection_simplex", lambda x, a: (x,)),
    ("projection_simplex", lambda x, a: (x, 2.5)),
    ("projection_l1_sphere", lambda x, a: (x, 1.5)),
    ("projection_l1_ball", lambda x, a: (x,)),
    ("projection_l1_ball", lambda x, a: (x, 100.0)),
    ("projection_l2_sphere", lambda x, a: (x, 2.0)),
    ("projection_l2_ball", lambda x, a: (x,)),
    ("projection_l2_ball", lambda x, a: (x, 100.0)),
    ("projection_linf_ball", lambda x, a: (x, 0.5)),
    ("projection_vector", lambda x, a: (x, a)),
    ("projection_hyperplane", lambda x, a: (x, a, 0.7)),
    ("projection_halfspace", lambda x, a: (x, a, -0.7)),
    ("projection_halfspace", lambda x, a: (x, a, 100.0)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,args", PROJECTIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PROJECTIONS)])
def test_projection_matches_optax(name, args, dtype):
    positional = args(_tree(dtype), _tree(dtype, seed=1))
    ours = jax.jit(getattr(gp, name))(*positional)
    if dtype == "float64":
        _assert_same(ours, jax.jit(getattr(op, name))(*positional), name)
        return
    # With x64 on, optax's simplex-based projections promote float32 to float64 (and its l1_ball fails to
    # trace): gradtx keeps float32, and equals optax's float64 numbers to float32 precision.
    theirs = jax.jit(getattr(op, name))(*jax.tree.map(lambda v: v.astype("float64") if isinstance(v, jax.Array) else v,
                                                                positional))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(ours)), name
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-7, err_msg=name)


def test_scalar_bounds_apply_to_every_leaf():
    x = _tree()
    _assert_same(gp.projection_hypercube(x, 0.5), {k: op.projection_hypercube(v, 0.5) for k, v in x.items()})
    _assert_same(gp.projection_box(x, -0.2, 0.3), op.projection_box(x, *(jax.tree.map(lambda v: v * 0 + c, x)
                                                                          for c in (-0.2, 0.3))))


def test_simplex_jvp_matches_optax():
    x, t = _tree(), _tree(seed=2)
    _assert_same(jax.jvp(gp.projection_simplex, (x,), (t,)), jax.jvp(op.projection_simplex, (x,), (t,)))
    loss = lambda proj: lambda p: jnp.sum(jnp.sin(jax.flatten_util.ravel_pytree(proj(p, 2.0))[0]))  # noqa: E731
    _assert_same(jax.grad(loss(gp.projection_l1_sphere))(x), jax.grad(loss(op.projection_l1_sphere))(x))


def test_every_projection_is_provided():
    assert sorted(n for n in dir(op) if not n.startswith("_")) == sorted(gp.__all__)
    assert gradtx.projections is gp


def _mlp_loss(params, inputs, targets):
    hidden = jnp.tanh(inputs @ params["w"] + params["b"])
    return jnp.mean((hidden.sum(axis=1) - targets) ** 2)


def _data():
    rng = np.random.default_rng(5)
    return jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(6,)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # optax deprecates its second_order module
def test_second_order_matches_optax():
    params, (inputs, targets) = {"w": _tree()["w"], "b": jnp.asarray([0.1, -0.2])}, _data()
    v = jnp.linspace(-1.0, 1.0, 8)
    _assert_same(gs.hvp(_mlp_loss, v, params, inputs, targets),
                 optax.second_order.hvp(_mlp_loss, v, params, inputs, targets), "hvp")
    _assert_same(gs.hessian_diag(_mlp_loss, params, inputs, targets),
                 optax.second_order.hessian_diag(_mlp_loss, params, inputs, targets), "hessian_diag")
    _assert_same(gs.fisher_diag(_mlp_loss, params, inputs, targets),
                 optax.second_order.fisher_diag(_mlp_loss, params, inputs, targets), "fisher_diag")
    assert sorted(n for n in dir(optax.second_order) if not n.startswith("_")) == sorted(gs.__all__)
    assert gradtx.second_order is gs
