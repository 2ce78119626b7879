"""Beyond both anchors: complex parameters as torch treats them, mixed precision, differentiating through updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx
from gradtx.optim.chains import adam_chain
from gradtx.optim.chains import sgd_chain
from tests.harness import assert_trees_close, make_params, run_functional


def _complex_problem(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))
    target = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))
    return z, target


@pytest.mark.parametrize("torch_name,chain_fn,kwargs", [
    ("Adam", adam_chain, dict(lr=0.05, weight_decay=0.1)),
    ("Adam", adam_chain, dict(lr=0.05, amsgrad=True)),
    ("SGD", sgd_chain, dict(lr=0.002, momentum=0.9, nesterov=True)),
])
def test_complex_parameters_match_torch(torch_name, chain_fn, kwargs):
    z0, target = _complex_problem()
    # torch: loss = sum |z - t|^4 ; its gradient convention is d/dRe + i d/dIm.
    zt = torch.tensor(z0, requires_grad=True)
    opt = getattr(torch.optim, torch_name)([zt], **kwargs)
    tx = gradtx.complex_as_real(chain_fn(**kwargs))
    z = jnp.asarray(z0)
    state = tx.init(z)

    def loss(z):
        return jnp.sum(jnp.abs(z - target) ** 4)

    for _ in range(8):
        opt.zero_grad()
        torch.sum(torch.abs(zt - torch.tensor(target)) ** 4).backward()
        opt.step()
        grad = jnp.conj(jax.grad(loss)(z))  # JAX's gradient is the conjugate of torch's
        updates, state = jax.jit(tx.update)(grad, state, z)
        z = gradtx.apply_updates(z, updates)
        np.testing.assert_allclose(np.asarray(z), zt.detach().numpy(), rtol=1e-7, atol=1e-10)


def test_promote_to_keeps_float32_state_for_bfloat16_params():
    params = make_params("bfloat16")
    tx = gradtx.promote_to(gradtx.adam(1e-2), jnp.float32)
    state = tx.init(params)
    assert {x.dtype for x in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}
    # Against a float32 reference run: the parameters differ only by bfloat16 rounding of the params.
    ours = run_functional(tx, params, 5)
    reference = run_functional(gradtx.adam(1e-2), jax.tree.map(lambda x: x.astype(jnp.float32), params), 5)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(ours[-1]))
    assert_trees_close(jax.tree.map(lambda x: x.astype(jnp.float32), ours[-1]), reference[-1], "bfloat16")


def test_hypergradient_through_updates_matches_finite_differences():
    params = make_params("float64")

    def loss(p):
        return sum(jnp.sum(jnp.sin(x) + 0.5 * x**2) for x in jax.tree.leaves(p))

    @jax.jit
    def after_training(lr):
        tx = gradtx.chain(gradtx.scale_by_adam(eps_root=1e-12), gradtx.add_decayed_weights(0.01),
                          gradtx.scale_by_learning_rate(lr))
        p, state = params, tx.init(params)
        for _ in range(4):
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            p = gradtx.apply_updates(p, updates)
        return loss(p)

    lr, h = 0.05, 1e-6
    analytic = jax.grad(after_training)(lr)
    numeric = (after_training(lr + h) - after_training(lr - h)) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_every_core_hyperparameter_accepts_a_schedule():
    params = make_params()
    decay = lambda count: 0.9 - 0.1 * 0.5**count  # noqa: E731
    tx = gradtx.chain(gradtx.scale_by_adam(b1=decay, b2=0.99, eps=lambda c: 1e-8 * (1 + c)),
                      gradtx.trace(decay=decay), gradtx.add_decayed_weights(lambda c: 1e-3 * c),
                      gradtx.scale_by_learning_rate(lambda c: 0.1 / (1 + c)))
    trajectory = run_functional(tx, params, 4)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(trajectory[-1]))
