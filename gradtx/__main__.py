"""``python -m gradtx``: train a small MLP on scikit-learn's digits, functionally and imperatively.

The same network is trained twice on the 8x8 digits that ship inside
scikit-learn (no download): once with ``gradtx.chain(...)`` inside a jitted
training step, once with the torch-style ``gradtx.optim.AdamW`` in an
imperative loop. Runs in well under a minute on a laptop CPU.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

HIDDEN = 64
STEPS = 300
BATCH = 128


def load_digits():
    """Digits as float32 arrays, split 80/20 into train and test."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def init_mlp(key, sizes=(64, HIDDEN, 10)):
    """He-initialised weights and zero biases for a two-layer MLP."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        params[f"layer{i}"] = {
            "w": jax.random.normal(sub, (fan_in, fan_out), jnp.float32) * jnp.sqrt(2.0 / fan_in),
            "b": jnp.zeros((fan_out,), jnp.float32),
        }
    return params


def logits_fn(params, x):
    h = jax.nn.relu(x @ params["layer0"]["w"] + params["layer0"]["b"])
    return h @ params["layer1"]["w"] + params["layer1"]["b"]


def loss_fn(params, x, y):
    logp = jax.nn.log_softmax(logits_fn(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def accuracy(params, x, y):
    return float(jnp.mean(jnp.argmax(logits_fn(params, x), axis=1) == y))


def batches(x, y, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), BATCH)
        yield x[idx], y[idx]


def train_functional(train, test):
    """The functional face: a chain of transforms inside one jitted step."""
    tx = gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.scale_by_adam(),
        gradtx.add_decayed_weights(1e-4),
        gradtx.scale_by_learning_rate(3e-3),
    )
    params = init_mlp(jax.random.key(0))
    state = tx.init(params)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    for i, (x, y) in enumerate(batches(*train, STEPS)):
        params, state, loss = step(params, state, x, y)
        if (i + 1) % 100 == 0:
            print(f"  step {i + 1:4d}  loss {float(loss):.4f}")
    return params


def train_imperative(train, test):
    """The torch-style face: an optimizer object stepped in a plain Python loop."""
    from gradtx import optim

    opt = optim.AdamW(init_mlp(jax.random.key(0)), lr=3e-3, weight_decay=1e-4)
    grad_fn = jax.jit(jax.value_and_grad(loss_fn))
    for i, (x, y) in enumerate(batches(*train, STEPS)):
        loss, grads = grad_fn(opt.params, x, y)
        opt.step(grads)
        opt.zero_grad()
        if (i + 1) % 100 == 0:
            print(f"  step {i + 1:4d}  loss {float(loss):.4f}")
    return opt.params


def main() -> None:
    train, test = load_digits()
    print(f"gradtx {gradtx.__version__} demo: a {HIDDEN}-unit MLP on scikit-learn's digits "
          f"({len(train[0])} train / {len(test[0])} test images), {STEPS} steps of batch {BATCH}\n")
    for title, trainer in [
        ("1. functional: gradtx.chain(clip, adam, decay, lr) inside jax.jit", train_functional),
        ("2. imperative: gradtx.optim.AdamW in a Python loop", train_imperative),
    ]:
        print(title)
        start = time.perf_counter()
        params = trainer(train, test)
        elapsed = time.perf_counter() - start
        print(f"  final train loss {float(loss_fn(params, *train)):.4f}, "
              f"test accuracy {accuracy(params, *test):.3f}  ({elapsed:.1f} s)\n")


if __name__ == "__main__":
    main()
