"""Sharded parameters and state on 8 simulated CPU devices (a 2 x 4 mesh): same numbers, shardings kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from tests.cases import OPTIMIZERS
from tests.harness import assert_trees_close

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (simulated) devices")


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))


def _params(dtype="float64"):
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=(8, 12)), dtype), "b": jnp.asarray(rng.normal(size=(12,)), dtype),
            "s": jnp.asarray(rng.normal(), dtype)}


def _shard(params, mesh):
    specs = {"w": P("data", "model"), "b": P("model"), "s": P()}
    return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}


def _loss(p):
    return sum(jnp.sum(jnp.sin(x) + 0.5 * x**2) for x in jax.tree.leaves(p))


def _train(tx, params, steps=6):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        return gradtx.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


# The records that run sharded, through their functional chain with the options that give them the most state.
SHARDED = [info for info in OPTIMIZERS if info.sharding is not None]


@pytest.mark.parametrize("info", SHARDED, ids=lambda info: info.name)
def test_sharded_run_matches_single_device(mesh, info):
    single, _ = _train(info.chain(**info.state_options), _params())
    sharded, state = _train(info.chain(**info.state_options), _shard(_params(), mesh))
    assert_trees_close(sharded, single, "float64")
    assert sharded["w"].sharding.spec == P("data", "model")
    mu_like = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) == (8, 12)]
    assert all(x.sharding.is_equivalent_to(sharded["w"].sharding, 2) for x in mu_like)
    assert mu_like or not info.elementwise  # an elementwise chain keeps state of the parameter's shape


def test_sharded_chain_with_a_global_norm_matches_single_device(mesh):
    def tx():
        return gradtx.chain(gradtx.clip_by_global_norm(0.5), gradtx.adamw(0.05, weight_decay=0.1))

    single, _ = _train(tx(), _params())
    sharded, _ = _train(tx(), _shard(_params(), mesh))
    assert_trees_close(sharded, single, "float64")


@pytest.mark.parametrize("under_jit", [False, True])
def test_init_keeps_param_sharding(mesh, under_jit):
    params = _shard(_params("float32"), mesh)
    init = jax.jit(gradtx.adam(1e-3).init) if under_jit else gradtx.adam(1e-3).init
    state = init(params)
    for key in ("w", "b"):
        assert state[0].mu[key].sharding.is_equivalent_to(params[key].sharding, params[key].ndim)
        assert state[0].mu[key].dtype == jnp.float32


def test_zero_redundancy_shards_state_and_keeps_numbers(mesh):
    replicated = {k: jax.device_put(v, NamedSharding(mesh, P())) for k, v in _params().items()}
    plain, _ = _train(gradtx.adam(0.05), replicated)
    zero, state = _train(gradtx.zero_redundancy(gradtx.adam(0.05), mesh, "data"), replicated)
    assert_trees_close(zero, plain, "float64")
    # the updates are replicated (ZeRO-1's all-gather), so the parameters stay replicated
    assert all(x.sharding.is_equivalent_to(NamedSharding(mesh, P()), x.ndim) for x in jax.tree.leaves(zero))
    mu_w = state.inner_state[0].mu["w"]
    assert mu_w.sharding.spec == P("data")
    # each device holds half of the moment
    assert mu_w.addressable_shards[0].data.shape == (4, 12)


def test_zero_redundancy_rejects_unknown_axis(mesh):
    with pytest.raises(ValueError, match="'dp'"):
        gradtx.zero_redundancy(gradtx.adam(0.1), mesh, "dp")


def test_facade_state_dict_gathers_and_load_places_back(mesh):
    from gradtx import optim

    params = _shard(_params("float32"), mesh)
    opt = optim.AdamW(params, lr=0.05)
    grads = jax.grad(_loss)(opt.params)
    opt.step(grads)
    saved = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for s in saved["state"].values() for v in s.values())
    # same params, state from the dict; jax.tree.map rebuilt the dict in sorted key order, so pair by name
    fresh = optim.AdamW(_shard(jax.device_get(opt.params), mesh), lr=0.05)
    fresh.load_state_dict(saved, match="name")
    for box in fresh.param_groups[0]["params"]:
        for key in ("exp_avg", "exp_avg_sq"):
            assert fresh.state[box][key].sharding.is_equivalent_to(box.data.sharding, box.data.ndim)
    fresh.step(jax.grad(_loss)(fresh.params))
    opt.step(jax.grad(_loss)(opt.params))
    assert_trees_close(fresh.params, opt.params, "float32")
    assert fresh.params["w"].sharding.spec == P("data", "model")


# --- the facade's ZeroRedundancyOptimizer ---------------------------------------------------------------------

# Records that run under ZeroRedundancyOptimizer: "exact" ones bit for bit (XLA gathers the state, it reorders no
# arithmetic), "rounding" ones to float64 rounding (Adafactor's factored second moment is a mean over a split
# dimension: XLA sums the shards' partial sums, a different order than one device's sum).


def _assert_same(actual, expected, exact, context=""):
    if exact:
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected), err_msg=context)
    else:
        assert_trees_close(np.asarray(actual), np.asarray(expected), "float64", context)


def _replicated(mesh):
    return {k: jax.device_put(v, NamedSharding(mesh, P())) for k, v in _params().items()}


def _facade_steps(opt, steps):
    for _ in range(steps):
        opt.step(jax.grad(_loss)(opt.params))


def _assert_zero_sharded(opt, mesh):
    """Every state array with a dimension divisible by the data axis is split along it; params stay replicated."""
    replicated = NamedSharding(mesh, P())
    split = 0
    for box in opt.param_groups[0]["params"]:
        assert box.data.sharding.is_equivalent_to(replicated, box.data.ndim), box.data.sharding
        for key, value in opt.state[box].items():
            expected = gradtx.state_sharding(value.shape, mesh, "data")
            assert value.sharding.is_equivalent_to(expected, value.ndim), (key, value.sharding)
            if "data" in expected.spec:
                assert value.addressable_shards[0].data.size * 2 == value.size  # half of it on each device
                split += 1
    assert split > 0


@pytest.mark.parametrize("info", SHARDED, ids=lambda info: info.name)
def test_zero_redundancy_optimizer_matches_plain_and_shards_state(mesh, info):
    from gradtx import optim

    cls, options = info.cls, info.state_options
    plain = cls(_replicated(mesh), **options)
    zero = optim.ZeroRedundancyOptimizer(_replicated(mesh), cls, mesh=mesh, axis="data", **options)
    assert isinstance(zero, cls) and isinstance(zero, optim.ZeroRedundancyOptimizer)
    assert zero.param_groups[0].keys() == plain.param_groups[0].keys()
    exact = info.sharding == "exact"
    _facade_steps(plain, 4)
    _facade_steps(zero, 4)
    for key in plain.params:
        _assert_same(zero.params[key], plain.params[key], exact, key)
    _assert_zero_sharded(zero, mesh)

    # state_dict: torch's layout, the plain optimizer's numbers, gathered to host
    saved, expected = zero.state_dict(), plain.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    assert saved["state"].keys() == expected["state"].keys()
    for index, entry in saved["state"].items():
        assert list(entry) == list(expected["state"][index])
        for key, value in entry.items():
            assert isinstance(value, np.ndarray)
            _assert_same(value, expected["state"][index][key], exact, f"{index}.{key}")

    # load_state_dict places the state sharded again, and the run goes on with the same numbers
    fresh = optim.ZeroRedundancyOptimizer(_shard_like(zero.params, mesh), cls, mesh=mesh, **options)
    fresh.load_state_dict(saved)
    _assert_zero_sharded(fresh, mesh)
    _facade_steps(fresh, 1)
    _facade_steps(plain, 1)
    for key in plain.params:
        _assert_same(fresh.params[key], plain.params[key], exact, key)
    _assert_zero_sharded(fresh, mesh)


def _shard_like(params, mesh):
    return {k: jax.device_put(np.asarray(v), NamedSharding(mesh, P())) for k, v in params.items()}


@pytest.mark.parametrize("tier", [{"foreach": True}, {"foreach": False}])
def test_zero_redundancy_optimizer_tiers_and_scheduler(mesh, tier):
    from gradtx import optim

    plain = optim.AdamW(_replicated(mesh), lr=0.05, **tier)
    zero = optim.ZeroRedundancyOptimizer(_replicated(mesh), optim.AdamW, mesh=mesh, lr=0.05, **tier)
    schedulers = [optim.lr_scheduler.CosineAnnealingLR(o, T_max=4) for o in (plain, zero)]
    for _ in range(3):
        _facade_steps(plain, 1)
        _facade_steps(zero, 1)
        for s in schedulers:
            s.step()
    assert zero.param_groups[0]["lr"] == plain.param_groups[0]["lr"] < 0.05
    for key in plain.params:
        np.testing.assert_array_equal(np.asarray(zero.params[key]), np.asarray(plain.params[key]), err_msg=key)
    _assert_zero_sharded(zero, mesh)


def test_zero_redundancy_optimizer_places_params_and_pickles(mesh):
    import pickle

    from gradtx import optim

    zero = optim.ZeroRedundancyOptimizer(_params(), optim.Adam, mesh=mesh, lr=0.05)  # unplaced arrays
    calls = []
    zero.register_step_post_hook(lambda opt, args, kwargs: calls.append(opt))
    _facade_steps(zero, 2)
    assert calls == [zero, zero]
    _assert_zero_sharded(zero, mesh)  # the parameters were replicated over the mesh
    copy = pickle.loads(pickle.dumps(zero))
    assert type(copy) is type(zero) and copy.mesh == mesh
    _assert_zero_sharded(copy, mesh)
    _facade_steps(zero, 1)
    _facade_steps(copy, 1)
    for key in zero.params:
        np.testing.assert_array_equal(np.asarray(copy.params[key]), np.asarray(zero.params[key]), err_msg=key)


def test_zero_redundancy_optimizer_rejects(mesh):
    from gradtx import optim

    with pytest.raises(ValueError, match="'dp'"):
        optim.ZeroRedundancyOptimizer(_params(), optim.Adam, mesh=mesh, axis="dp")
    with pytest.raises(TypeError, match="LBFGS"):
        optim.ZeroRedundancyOptimizer(_params(), optim.LBFGS, mesh=mesh)
    with pytest.raises(TypeError, match="mesh"):
        optim.ZeroRedundancyOptimizer(_params(), optim.Adam, lr=0.1)
    with pytest.raises(ValueError, match="replicated"):
        optim.ZeroRedundancyOptimizer(_shard(_params(), mesh), optim.Adam, mesh=mesh)
