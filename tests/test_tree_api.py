"""gradtx.tree against optax.tree: the same public names, and the same results on a few trees."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree
import pytest

import gradtx
import gradtx.tree as gt

# optax.tree names gradtx.tree does not provide, each with the reason. Empty: every public name is covered.
NOT_PROVIDED: dict[str, str] = {}


def test_every_optax_tree_name_is_provided():
    theirs = {n for n in dir(optax.tree) if not n.startswith("_")}
    missing = sorted(n for n in theirs if not hasattr(gt, n))
    assert missing == sorted(NOT_PROVIDED), f"optax.tree names missing from gradtx.tree: {missing}"


def _trees(dtype):
    rng = np.random.default_rng(0)
    real = {"w": jnp.asarray(rng.normal(size=(3, 2)), dtype), "b": [jnp.asarray(rng.normal(size=(4,)), dtype),
                                                                     jnp.asarray(rng.normal(), dtype)]}
    other = jax.tree.map(lambda x: x * 0.5 + 1.5, real)
    return real, other


def _complex_tree():
    rng = np.random.default_rng(1)
    return {"z": jnp.asarray(rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))), "r": jnp.arange(3.0)}


# (name, args(x, y) -> positional args, kwargs); each is called on gradtx.tree and optax.tree.
CALLS = [
    ("add", lambda x, y: ((x, y, x), {})),
    ("sub", lambda x, y: ((x, y), {})),
    ("mul", lambda x, y: ((x, y), {})),
    ("div", lambda x, y: ((x, y), {})),
    ("scale", lambda x, y: ((0.3, x), {})),
    ("add_scale", lambda x, y: ((x, 0.3, y), {})),
    ("vdot", lambda x, y: ((x, y), {})),
    ("sum", lambda x, y: ((x,), {})),
    ("sum", lambda x, y: ((x,), dict(associative_reduction=True))),
    ("max", lambda x, y: ((x,), {})),
    ("min", lambda x, y: ((x,), {})),
    ("size", lambda x, y: ((x,), {})),
    ("conj", lambda x, y: ((x,), {})),
    ("real", lambda x, y: ((x,), {})),
    ("norm", lambda x, y: ((x,), {})),
    ("norm", lambda x, y: ((x,), dict(squared=True))),
    ("norm", lambda x, y: ((x,), dict(ord=1))),
    ("norm", lambda x, y: ((x,), dict(ord="inf", squared=True))),
    ("batch_shape", lambda x, y: ((x, (2, 3)), {})),
    ("zeros_like", lambda x, y: ((x,), {})),
    ("ones_like", lambda x, y: ((x, jnp.float16), {})),
    ("full_like", lambda x, y: ((x, 2.5), {})),
    ("clip", lambda x, y: ((x, -0.5, 0.5), {})),
    ("where", lambda x, y: ((True, x, y), {})),
    ("allclose", lambda x, y: ((x, y), {})),
    ("allclose", lambda x, y: ((x, x), {})),
    ("update_moment", lambda x, y: ((x, y, 0.9, 2), {})),
    ("update_infinity_moment", lambda x, y: ((x, y, 0.9, 1e-3), {})),
    ("update_moment_per_elem_norm", lambda x, y: ((x, y, 0.9, 2), {})),
    ("bias_correction", lambda x, y: ((x, 0.9, jnp.asarray(3)), {})),
    ("cast", lambda x, y: ((x, jnp.float16), {})),
    ("cast", lambda x, y: ((x, None), {})),
    ("cast_like", lambda x, y: ((x, jax.tree.map(lambda a: a.astype(jnp.float16), y)), {})),
    ("dtype", lambda x, y: ((x,), {})),
    ("dtype", lambda x, y: (({"a": x, "h": jnp.ones(2, jnp.float16)}, "lowest"), {})),
    ("dtype", lambda x, y: (({"a": x, "h": jnp.ones(2, jnp.float16)}, "highest"), {})),
    ("dtype", lambda x, y: (({"a": x, "i": jnp.ones(2, jnp.int32)}, "promote"), {})),
    ("split_key_like", lambda x, y: ((jax.random.key(0), x), {})),
    ("random_like", lambda x, y: ((jax.random.key(3), x), {})),
    ("random_like", lambda x, y: ((jax.random.key(3), x, jax.random.uniform, jnp.float32), {})),
    ("unwrap_random_key_data", lambda x, y: (({"k": jax.random.key(1), "x": x},), {})),
]


def _assert_same(a, b, context):
    if isinstance(a, np.dtype):
        assert a == b, context
        return
    a_leaves, a_def = jax.tree.flatten(a)
    b_leaves, b_def = jax.tree.flatten(b)
    assert a_def == b_def, context
    for u, v in zip(a_leaves, b_leaves):
        if isinstance(u, jax.Array) and jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        assert jnp.result_type(u) == jnp.result_type(v), context
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-7, atol=0, err_msg=context)


# These order values or cast to a real dtype: they run on real trees only.
REAL_ONLY = ("max", "min", "clip", "update_infinity_moment", "cast", "cast_like")
TREE_ROWS = [pytest.param(name, args, dtype, id=f"{name}-{i}-{dtype}") for i, (name, args) in enumerate(CALLS)
             for dtype in ("float64", "float32", "complex128") if dtype != "complex128" or name not in REAL_ONLY]


@pytest.mark.parametrize("name,args,dtype", TREE_ROWS)
def test_matches_optax_tree(name, args, dtype):
    x, y = _trees(dtype)
    if dtype == "complex128":
        x = jax.tree.map(lambda a: a * (1 + 0.5j), x)
    positional, keywords = args(x, y)
    ours = getattr(gt, name)(*positional, **keywords)
    theirs = getattr(optax.tree, name)(*positional, **keywords)
    _assert_same(ours, theirs, f"{name}{keywords} on {dtype}")


def test_mixed_dtypes_without_handler_name_each_leaf():
    tree = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float16)}
    with pytest.raises(ValueError, match=r"\['b'\]"):
        gt.dtype(tree)
    with pytest.raises(ValueError, match="mixed_dtype_handler"):
        gt.dtype(tree, "widest")


def _states():
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(3)}
    injected = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1)
    return [(gradtx.adam(0.1), params), (gradtx.chain(gradtx.add_decayed_weights(0.1), gradtx.sgd(0.1, 0.9)), params),
            (injected, params)]


@pytest.mark.parametrize("key", ["count", "mu", "nu", "trace", "ScaleByAdamState", "learning_rate", "missing"])
@pytest.mark.parametrize("index", range(3))
def test_get_all_with_path_and_get_match_optax(key, index):
    tx, params = _states()[index]
    state = tx.init(params)
    ours, theirs = gt.get_all_with_path(state, key), optax.tree.get_all_with_path(state, key)
    assert [str(p) for p, _ in ours] == [str(p) for p, _ in theirs]
    _assert_same([v for _, v in ours], [v for _, v in theirs], key)
    if len(theirs) <= 1:
        _assert_same(gt.get(state, key, default=-1), optax.tree.get(state, key, default=-1), key)
    else:
        with pytest.raises(KeyError):
            gt.get(state, key)
    only_first = lambda path, value: "SequenceKey(idx=0)" in str(path[0]) if path else True  # noqa: E731
    filtered = gt.get_all_with_path(state, key, only_first)
    assert len(filtered) == len(optax.tree.get_all_with_path(state, key, only_first))


@pytest.mark.parametrize("index", range(3))
def test_set_and_map_params_match_optax(index):
    tx, params = _states()[index]
    state = tx.init(params)
    for key in ("count", "mu", "learning_rate", "ScaleByAdamState"):
        if not optax.tree.get_all_with_path(state, key):
            with pytest.raises(KeyError, match=key):
                gt.set(state, **{key: 1.0})
            continue
        value = jax.tree.map(lambda x: x + 1, optax.tree.get_all_with_path(state, key)[0][1])
        _assert_same(gt.set(state, **{key: value}), optax.tree.set(state, **{key: value}), key)
    f = lambda p, extra: p * 2 + extra  # noqa: E731
    _assert_same(gt.map_params(tx, f, state, params), optax.tree.map_params(tx, f, state, params), "map_params")
    _assert_same(gt.map_params(tx.init, jnp.negative, state, transform_non_params=lambda v: v),
                 optax.tree.map_params(tx.init, jnp.negative, state, transform_non_params=lambda v: v), "init")
