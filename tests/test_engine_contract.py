"""The facade engine's contract with its users, tier by tier.

- Arrays a user holds are never invalidated: what was given to the constructor,
  read from ``opt.params``, ``p.data`` or ``opt.state`` keeps its old value after a
  step (JAX's value semantics), while buffers nobody else holds are still donated.
- ``step()`` under a JAX transformation is refused, naming the fix, and changes nothing.
- A failing step changes no parameter, state entry or count in any group (every tier).
- ``step()`` from several threads lands every update; a Parameter shared by two
  optimizers keeps complete state in both.
- Parameters on different devices step together, with single-device numbers.
- Compile caches do not grow with edited hyperparameters, and a dropped schedule
  releases what was compiled for it.
"""

import gc
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx
import gradtx.optim as optim
from gradtx.optim import _engine, _packing
from tests.harness import TOLERANCES

TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
# A small parameter (packed with the others in the default tier) and a large one (its own buffer).
SIZES = {"small": (3, 4), "large": (128, 129)}


def _tree(shape, seed=0):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape)) for name in ("a", "b", "c")}


def _grads(tree, scale=0.5):
    return jax.tree.map(lambda x: jnp.full_like(x, scale), tree)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("name", ["SGD", "Adam", "Prodigy"])  # Prodigy: a step of its own
def test_arrays_a_user_holds_keep_their_values(name, tier, size):
    given = _tree(SIZES[size])
    before = jax.tree.map(np.array, given)
    opt = getattr(optim, name)(given, lr=0.1, **TIERS[tier])
    opt.step(_grads(given))
    read_params = opt.params                      # held across the next step
    read_data = opt.param_groups[0]["params"][0].data
    read_state = {k: v for k, v in opt.state[opt.param_groups[0]["params"][0]].items()}
    copies = jax.tree.map(np.array, (read_params, read_data, read_state))
    opt.step(_grads(given))
    opt.step(_grads(given))
    for held, expected in zip(jax.tree.leaves(given), jax.tree.leaves(before)):  # the constructor's arrays
        np.testing.assert_array_equal(np.asarray(held), expected)
    for held, expected in zip(jax.tree.leaves((read_params, read_data, read_state)), jax.tree.leaves(copies)):
        np.testing.assert_array_equal(np.asarray(held), expected)
    assert not np.array_equal(np.asarray(opt.params["a"]), np.asarray(read_params["a"]))  # it did move


@pytest.mark.parametrize("name", ["Adam", "Prodigy"])
def test_the_ordinary_loop_still_donates_what_nobody_holds(name):
    opt = getattr(optim, name)(_tree(SIZES["large"]), lr=0.1)
    opt.step(_grads(opt.params))  # the constructor's arrays are held by this test's temporary: not donated
    box = opt.param_groups[0]["params"][0]
    # only the box and the state hold these now, so the step reuses their buffers: its results live where they
    # lived (without donation the old buffers stay alive while the program runs, and the results go elsewhere)
    buffers = box._data.unsafe_buffer_pointer(), opt.state[box]["exp_avg"].unsafe_buffer_pointer()
    opt.step(_grads(opt.params))
    assert (box._data.unsafe_buffer_pointer(), opt.state[box]["exp_avg"].unsafe_buffer_pointer()) == buffers


@pytest.mark.parametrize("name", ["SGD", "Prodigy"])
def test_donate_params_false_never_donates_parameters(name):
    opt = getattr(optim, name)(_tree(SIZES["large"]), lr=0.1)
    opt.donate_params = False
    opt.step(_grads(opt.params))
    ref = weakref.ref(opt.param_groups[0]["params"][0]._data)
    opt.step(_grads(opt.params))
    assert ref() is None or not ref().is_deleted()


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap"])
def test_step_under_a_jax_transformation_is_refused_and_changes_nothing(transform):
    opt = optim.Adam(_tree((3,)), lr=0.1)
    opt.step(_grads(opt.params))
    before = jax.tree.map(np.array, (opt.params, opt.state_dict()["state"]))
    count = opt._step_count

    def inside(x):
        opt.step(jax.tree.map(lambda p: p * 0 + x, opt.params))
        return x

    with pytest.raises(RuntimeError, match="compile_step|functional"):
        if transform == "jit":
            jax.jit(inside)(1.0)
        elif transform == "grad":
            jax.grad(inside)(1.0)
        else:
            jax.vmap(inside)(jnp.ones(2))
    after = jax.tree.map(np.array, (opt.params, opt.state_dict()["state"]))
    jax.tree.map(np.testing.assert_array_equal, after, before)
    assert opt._step_count == count


def test_step_without_gradients_under_jit_is_refused():
    opt = optim.SGD([jnp.ones(3)], lr=0.1)
    opt.param_groups[0]["params"][0].grad = jnp.ones(3)

    def inside(x):
        opt.step()
        return x

    with pytest.raises(RuntimeError, match="transformation"):
        jax.jit(inside)(1.0)
    np.testing.assert_array_equal(opt.params[0], 1.0)


@pytest.mark.parametrize("tier", TIERS)
def test_a_failing_step_changes_nothing_in_any_group(tier):
    groups = [{"params": [jnp.ones(4), jnp.ones((130, 130))]}, {"params": [jnp.ones(3)], "lr": 0.2}]
    opt = optim.Adam(groups, lr=0.1, **TIERS[tier])
    grads = [[jnp.ones(4), jnp.ones((130, 130))], [jnp.ones(3)]]
    opt.step(grads)
    before = jax.tree.map(np.array, (opt.params, opt.state_dict()["state"]))
    opt.param_groups[1]["lr"] = "fast"  # a bad edit in the last group
    with pytest.raises((TypeError, ValueError), match="lr"):
        opt.step(grads)
    after = jax.tree.map(np.array, (opt.params, opt.state_dict()["state"]))
    jax.tree.map(np.testing.assert_array_equal, after, before)
    opt.param_groups[1]["lr"] = 0.2
    opt.step(grads)  # and the optimizer still works
    assert float(opt.state_dict()["state"][0]["step"]) == 2.0


@pytest.mark.parametrize("tier", TIERS)
def test_steps_from_several_threads_all_land(tier):
    shape = (6,)
    threaded = optim.Adam({"w": jnp.ones(shape)}, lr=0.01, **TIERS[tier])
    serial = optim.Adam({"w": jnp.ones(shape)}, lr=0.01, **TIERS[tier])
    grads = {"w": jnp.full(shape, 0.5)}
    threaded.step(grads)  # compile once before the threads start

    def work():
        for _ in range(10):
            threaded.step(grads)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(41):
        serial.step(grads)
    assert threaded._step_count == 41
    np.testing.assert_array_equal(threaded.params["w"], serial.params["w"])
    assert float(threaded.state_dict()["state"][0]["step"]) == 41.0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tier", TIERS)
def test_a_parameter_shared_by_two_optimizers_keeps_complete_state_in_both(tier, size):
    """Each optimizer keeps its own state of the shared parameter (packed or stored, as its others), and the
    interleaved steps give torch's numbers."""
    rng = np.random.default_rng(5)
    values = [rng.normal(size=SIZES[size]) for _ in range(3)]
    shared = optim.Parameter(jnp.asarray(values[0]), name="shared")
    first = optim.Adam([shared, optim.Parameter(jnp.asarray(values[1]))], lr=0.1, **TIERS[tier])
    second = optim.SGD([shared, optim.Parameter(jnp.asarray(values[2]))], lr=0.1, momentum=0.9, **TIERS[tier])
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    torch_first = torch.optim.Adam(tensors[:2], lr=0.1, foreach=False)
    torch_second = torch.optim.SGD([tensors[0], tensors[2]], lr=0.1, momentum=0.9, foreach=False)
    for step in range(3):
        for opt, reference in ((first, torch_first), (second, torch_second)):
            for p, t in zip(opt.param_groups[0]["params"], reference.param_groups[0]["params"]):
                p.grad = jnp.sin(p.data) * (step + 1.0)
                t.grad = torch.sin(t.detach()) * (step + 1.0)
            opt.step()
            reference.step()
    for opt, reference in ((first, torch_first), (second, torch_second)):
        for p, t in zip(opt.param_groups[0]["params"], reference.param_groups[0]["params"]):
            np.testing.assert_allclose(np.asarray(p.data), t.detach().numpy(), **TOLERANCES["float64"])
            assert list(opt.state[p]) == list(reference.state[t])
            for key, value in reference.state[t].items():
                np.testing.assert_allclose(np.asarray(opt.state[p][key]), value.numpy(), **TOLERANCES["float64"])
        assert _packing.pack_of(shared, opt) is not None  # its own pack or store, in each optimizer
    assert sorted(first.state_dict()["state"]) == [0, 1] and sorted(second.state_dict()["state"]) == [0, 1]
    assert set(second.state_dict()["state"][0]) == {"momentum_buffer"}
    assert float(first.state_dict()["state"][0]["step"]) == 3.0


@pytest.mark.parametrize("tier", TIERS)
def test_parameters_on_different_devices_step_together(tier):
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs two devices (tests/conftest.py simulates eight CPU devices)")
    tree = _tree((4, 3))
    placed = {"a": jax.device_put(tree["a"], devices[0]), "b": jax.device_put(tree["b"], devices[1]),
              "c": jax.device_put(tree["c"], jax.sharding.NamedSharding(
                  jax.make_mesh((2,), ("x",)), jax.sharding.PartitionSpec("x")))}
    spread = optim.Adam(placed, lr=0.1, **TIERS[tier])
    single = optim.Adam(jax.tree.map(jnp.array, tree), lr=0.1, **TIERS[tier])
    for _ in range(3):
        spread.step(jax.tree.map(lambda p: jax.device_put(jnp.full(p.shape, 0.5), p.sharding), spread.params))
        single.step(_grads(single.params))
    for key in tree:
        np.testing.assert_array_equal(np.asarray(spread.params[key]), np.asarray(single.params[key]))
        assert spread.params[key].sharding.device_set == placed[key].sharding.device_set


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("size", SIZES)
def test_state_read_and_skipped_steps_stay_on_each_parameters_device(tier, size):
    """Parameters on two devices with one step count: each one's ``step`` is on its own device, and a parameter
    that skips a step (handed back, then stored again) keeps stepping there, with single-device numbers."""
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs two devices (tests/conftest.py simulates eight CPU devices)")
    tree = _tree(SIZES[size])
    placed = {"a": jax.device_put(tree["a"], devices[0]), "b": jax.device_put(tree["b"], devices[1]),
              "c": jax.device_put(tree["c"], devices[1])}
    spread = optim.Adam(placed, lr=0.1, **TIERS[tier])
    single = optim.Adam(jax.tree.map(jnp.array, tree), lr=0.1, **TIERS[tier])
    for skip in ((), ("c",), (), ("a",), ()):
        for opt in (spread, single):
            opt.step({k: None if k in skip else jax.device_put(jnp.full_like(v, 0.5), v.sharding)
                      for k, v in opt.params.items()})
            for p in opt.param_groups[0]["params"]:
                assert opt.state[p]["step"].sharding.device_set <= p.data.sharding.device_set, p.name
    for key in tree:
        np.testing.assert_array_equal(np.asarray(spread.params[key]), np.asarray(single.params[key]))
        assert spread.params[key].sharding.device_set == placed[key].sharding.device_set


def test_edited_hyperparameters_do_not_grow_the_state_layout_cache():
    opt = optim.Adam([jnp.ones(3)], lr=0.1)
    scheduler = optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    opt.step([jnp.ones(3)])
    _ = opt.state
    size = _engine.layout_cache_size()
    for _ in range(5):
        opt.step([jnp.ones(3)])
        scheduler.step()
        _ = opt.state[opt.param_groups[0]["params"][0]]
        opt.state_dict()
    assert _engine.layout_cache_size() == size


def test_a_dropped_schedule_releases_its_programs():
    def make():
        schedule = gradtx.linear_schedule(0.1, 0.0, 100)
        opt = optim.Adam([jnp.ones(3)], lr=lambda count: schedule(count))
        opt.step([jnp.ones(3)])
        opt.state_dict()
        return weakref.ref(opt.param_groups[0]["lr"])

    ref = make()
    gc.collect()
    assert ref() is None


def test_a_jitted_closure_passed_positionally_is_a_closure():
    opt = optim.SGD({"w": jnp.ones(3)}, lr=0.1)
    loss = opt.step(jax.jit(lambda p: jnp.sum(p["w"] ** 2)))
    assert float(loss) == 3.0
    np.testing.assert_allclose(opt.params["w"], 0.8)


def test_lbfgs_skips_a_step_whose_closure_turns_nonfinite():
    opt = optim.LBFGS({"w": jnp.ones(3)}, lr=0.5, max_iter=3)
    opt.skip_nonfinite = True
    opt.step(lambda p: jnp.sum(p["w"] ** 2))
    before = jax.tree.map(np.array, (opt.params, opt.state_dict()["state"]))
    opt.step(lambda p: jnp.sum(p["w"] ** 2) * jnp.nan)
    assert opt.skipped_steps == 1
    after = jax.tree.map(np.array, (opt.params, opt.state_dict()["state"]))
    jax.tree.map(np.testing.assert_array_equal, after, before)


def test_zero_redundancy_keeps_the_arrays_it_was_given():
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs two devices (tests/conftest.py simulates eight CPU devices)")
    mesh = jax.sharding.Mesh(np.array(devices[:2]), ("data",))
    given = {"w": jax.device_put(jnp.ones((4, 3)), devices[0])}
    opt = optim.ZeroRedundancyOptimizer(given, optim.Adam, mesh=mesh, lr=0.1)
    for _ in range(2):
        opt.step({"w": jnp.full((4, 3), 0.5)})
    np.testing.assert_array_equal(np.asarray(given["w"]), 1.0)
    assert not np.array_equal(np.asarray(opt.params["w"]), 1.0)
