"""A bounded soak: thousands of facade steps with a scheduler, no recompilation, no growth, finite values."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import optim
from gradtx.optim import _engine


@pytest.mark.soak
def test_thousands_of_steps_stay_flat():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(64, 1)), jnp.float32)
    params = {"w1": jnp.asarray(rng.normal(size=(8, 16)) * 0.3, jnp.float32), "b1": jnp.zeros(16, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(16, 1)) * 0.3, jnp.float32), "b2": jnp.zeros(1, jnp.float32)}

    def loss_fn(p):
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)

    grad_fn = jax.jit(jax.value_and_grad(loss_fn))
    opt = optim.AdamW(params, lr=1e-2, weight_decay=1e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=500)
    losses = []

    def run(steps):
        for _ in range(steps):
            loss, grads = grad_fn(opt.params)
            opt.step(grads)
            opt.zero_grad()
            scheduler.step()
            losses.append(float(loss))

    run(50)  # warm-up: every program compiled once
    gc.collect()
    traces, arrays = _engine.trace_count(), len(jax.live_arrays())
    run(2000)
    gc.collect()
    assert _engine.trace_count() == traces, "a hyperparameter change recompiled the step"
    assert len(jax.live_arrays()) <= arrays + 8, "live arrays grew over the run"
    values = np.asarray(losses)
    assert np.all(np.isfinite(values)) and values[-1] < values[0]
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(opt.params))
