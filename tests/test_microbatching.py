"""gradtx.microbatching against optax.microbatching: the same results for each accumulation and option."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.microbatching as om
import pytest

import gradtx
import gradtx.microbatching as gm


def _batch(dtype="float64"):
    rng = np.random.default_rng(0)
    return {"x": jnp.asarray(rng.normal(size=(8, 3)), dtype), "y": jnp.asarray(rng.normal(size=(8,)), dtype)}


def _params(dtype="float64"):
    return {"w": jnp.asarray([0.3, -0.2, 0.5], dtype), "b": jnp.asarray(0.1, dtype)}


def _loss(params, batch):
    pred = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((jnp.sin(pred) - batch["y"]) ** 2)


def _stats(params, batch):
    pred = batch["x"] @ params["w"]
    return {"sum": jnp.sum(pred), "count": jnp.asarray(pred.shape[0], jnp.int32), "max": jnp.max(pred)}


def _assert_same(ours, theirs, context=""):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs), context
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert jnp.result_type(a) == jnp.result_type(b), context
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-12, err_msg=context)


def _accumulator(m):
    """A custom accumulator: the largest value over microbatches."""
    return m.Accumulator(init=lambda v: jax.tree.map(lambda s: jnp.full(s.shape, -jnp.inf, s.dtype), v),
                         update=lambda c, v, i: jax.tree.map(jnp.maximum, c, v), finalize=lambda c: c,
                         aggregate=lambda v: jax.tree.map(lambda x: jnp.max(x, axis=0), v))


MICROBATCH = [
    (lambda m: m.microbatch(_loss, argnums=1, microbatch_size=2, accumulator=m.AccumulationType.MEAN), "mean"),
    (lambda m: m.microbatch(_loss, argnums=1, microbatch_size=4), "sum"),
    (lambda m: m.microbatch(_loss, argnums=1, microbatch_size=2, accumulator=m.AccumulationType.RUNNING_MEAN),
     "running_mean"),
    (lambda m: m.microbatch(jax.grad(_loss), argnums=1, microbatch_size=2, accumulator=m.AccumulationType.MEAN),
     "grad-mean"),
    (lambda m: m.microbatch(_stats, argnums=1, microbatch_size=2,
                            accumulator={"sum": m.AccumulationType.SUM, "count": m.AccumulationType.SUM,
                                         "max": _accumulator(m)}), "tree-of-accumulators"),
    (lambda m: m.microbatch(lambda p, b: b["x"] * p["b"], argnums=1, microbatch_size=2,
                            accumulator=m.AccumulationType.CONCAT), "concat"),
    (lambda m: m.microbatch(_loss, argnums=1, microbatch_size=2, num_real_microbatches=3), "num_real_microbatches"),
    (lambda m: m.microbatch(lambda p, *, batch: _loss(p, batch), argnums=(), argnames="batch", microbatch_size=4),
     "argnames"),
    (lambda m: m.microbatch(lambda p, xt: jnp.sum(jnp.sin(p["w"] @ xt)), argnums=1, microbatch_size=2, in_axes=1),
     "in_axes=1"),
    (lambda m: m.microbatch(_loss, argnums=1, microbatch_size=None), "microbatch_size=None"),
]


@pytest.mark.parametrize("build,label", MICROBATCH, ids=[label for _, label in MICROBATCH])
def test_microbatch_matches_optax(build, label):
    batch = _batch()
    if label == "argnames":
        args, kwargs = (_params(),), {"batch": batch}
    elif label == "in_axes=1":
        args, kwargs = (_params(), batch["x"].T), {}
    else:
        args, kwargs = (_params(), batch), {}
    _assert_same(jax.jit(build(gm))(*args, **kwargs), jax.jit(build(om))(*args, **kwargs), label)


@pytest.mark.parametrize("accumulator", ["CONCAT", "SUM", "MEAN"])
@pytest.mark.parametrize("microbatch_size", [None, 2, 4])
def test_micro_vmap_matches_optax(accumulator, microbatch_size):
    batch, params = _batch(), _params()
    ours = gm.micro_vmap(lambda b, p: jnp.sin(b["x"] @ p["w"]) * b["y"], in_axes=(0, None),
                         microbatch_size=microbatch_size, accumulator=getattr(gm.AccumulationType, accumulator))
    theirs = om.micro_vmap(lambda b, p: jnp.sin(b["x"] @ p["w"]) * b["y"], in_axes=(0, None),
                           microbatch_size=microbatch_size, accumulator=getattr(om.AccumulationType, accumulator))
    _assert_same(jax.jit(ours)(batch, params), jax.jit(theirs)(batch, params))


MICRO_GRAD = [
    dict(microbatch_size=2),
    dict(microbatch_size=4, keep_batch_dim=False, accumulator="MEAN"),
    dict(microbatch_size=2, has_aux=True, metrics_fn=lambda g: optax.tree.norm(g),
         transform_fn=lambda g: jax.tree.map(lambda x: x / jnp.maximum(1.0, optax.tree.norm(g)), g)),
    dict(microbatch_size=None, accumulator="RUNNING_MEAN"),
]


@pytest.mark.parametrize("options", MICRO_GRAD, ids=lambda o: ",".join(f"{k}={v if not callable(v) else k}" for k, v in o.items()))
def test_micro_grad_matches_optax(options):
    batch, params = _batch(), _params()
    results = []
    for m in (gm, om):
        kwargs = dict(options)
        if "accumulator" in kwargs:
            kwargs["accumulator"] = getattr(m.AccumulationType, kwargs["accumulator"])
        fun = (lambda p, b: (_loss(p, b), {"pred": b["x"] @ p["w"]})) if kwargs.get("has_aux") else _loss
        results.append(jax.jit(m.micro_grad(fun, **kwargs))(params, batch))
    (ours_grads, ours_aux), (theirs_grads, theirs_aux) = results
    _assert_same(ours_grads, theirs_grads)
    _assert_same(tuple(ours_aux), tuple(theirs_aux))
    assert type(ours_aux).__name__ == type(theirs_aux).__name__ and ours_aux._fields == theirs_aux._fields


def test_reshape_batch_axis_matches_optax():
    tree = {"a": jnp.arange(24.0).reshape(12, 2), "b": jnp.arange(36).reshape(3, 12)}
    _assert_same(gm.reshape_batch_axis(tree["a"], 3), om.reshape_batch_axis(tree["a"], 3))
    _assert_same(gm.reshape_batch_axis(tree["b"], 4, axis=1), om.reshape_batch_axis(tree["b"], 4, axis=1))


def test_errors_say_what_was_wrong():
    batch = _batch()
    with pytest.raises(ValueError, match="divisible by microbatch_size=3"):
        gm.microbatch(_loss, argnums=1, microbatch_size=3)(_params(), batch)
    with pytest.raises(ValueError, match="equal-size batch axes"):
        gm.microbatch(lambda a, b: a.sum() + b.sum(), argnums=(0, 1), microbatch_size=2)(jnp.ones(4), jnp.ones(6))
    with pytest.raises(ValueError, match="floating-point"):
        gm.microbatch(lambda b: b, argnums=0, microbatch_size=2, accumulator=gm.AccumulationType.MEAN)(
            jnp.arange(4))
    with pytest.raises(NotImplementedError):
        gm.micro_vmap(jnp.sin, out_axes=1)


def test_public_names_match_optax():
    assert sorted(n for n in dir(om) if not n.startswith("_")) == sorted(gm.__all__)
    assert gradtx.microbatching is gm
