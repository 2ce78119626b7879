"""Stored state in the facade: the chain's own state over a group's (unpacked) parameters, in every tier.

Every tier keeps the state of a group's parameters whose states line up (one
step count) as the chain's state over them (gradtx.optim._stores): the
default tier a store per program, ``foreach`` the same stores in a program
per group, the for-loop tier a store per parameter. Each step passes it to its
program untranslated, and ``opt.state`` shows it under torch's names. Every
test runs the same problem in two tiers of different layouts and demands the
same bits, whatever the user does between steps. The parity, tier, bucket,
contract and step-cache suites run every record through stores too. Each
optimizer finds its own store of a parameter, so parameters another
optimizer steps too are stored in both (the ``"shared"`` rows).
"""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gradtx import optim
from gradtx.optim import _engine, _packing, _step
from tests.cases import OPTIMIZERS
from tests.harness import TOLERANCES

SHAPES = {"any": [(40, 30), (30,), (40, 30), (7, 5, 3), ()],  # apart from packing: opt.pack_max_numel = 0
          "matrices": [(40, 30), (30, 20), (40, 30)]}
STORED = {info.name: info for info in OPTIMIZERS
          if info.cls.chain_builder is not None and not info.closure and not info.needs_mesh
          and info.gradients == "dense" and "foreach" in info.tiers}


def arrays(dtype, kind="any", seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=s), dtype) for s in SHAPES[kind]]


def gradient(params, step):
    return [jnp.sin(x * (step + 1.0)) + 0.1 * x for x in params]


def make(name, tier, dtype="float64"):
    """An optimizer of record ``name`` in ``tier``; ``"shared"``: the default tier over parameters another
    optimizer steps too, after each of its steps, with the same gradients (SGD with momentum and ``lr=0``: it
    keeps state of its own and leaves the parameters as they are)."""
    info = STORED[name]
    flags = {"default": {}, "shared": {}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[tier]
    opt = info.cls(arrays(dtype, info.params), **{**info.state_options, **flags})
    opt.pack_max_numel = 0
    if tier == "shared":
        share(opt)
    if info.train_mode:
        opt.train()
    return opt


def share(opt):
    """Adds an SGD (momentum, ``lr=0``) over ``opt``'s parameters that steps after each step of ``opt``."""
    opt.neighbour = optim.SGD([p for g in opt.param_groups for p in g["params"]], lr=0.0, momentum=0.9)
    opt.neighbour.pack_max_numel = 0
    opt.register_step_post_hook(lambda *_: opt.neighbour.step())


def store_of(p, opt=None):
    """``opt``'s store of ``p`` (any optimizer's when ``opt`` is None), or None."""
    held = [_packing.pack_of(p, opt)] if opt is not None else _packing.packs_holding(p)
    return next((store for store in held if store is not None and not store.flat), None)


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def state_arrays(opt):
    return [{k: np.asarray(v) for k, v in opt.state[p].items()} for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("tier", ["default", "foreach", "for-loop"])
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_sharded_parameters_are_stored_with_their_state_sharded_as_they_are(name, tier):
    """A parameter sharded over several devices keeps its state in a store too, laid out as the parameter is,
    and steps with the numbers of the same run on one device."""
    mesh = jax.make_mesh((2,), ("x",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    columns = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "x"))
    values = arrays("float32")[:3]
    placed = [jax.device_put(values[0], rows), jax.device_put(values[1], rows), jax.device_put(values[2], columns)]
    info, flags = STORED[name], {"default": {}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[tier]
    sharded, plain = (info.cls(v, **{**info.state_options, **flags}) for v in (placed, values))
    for step in range(3):
        for opt in (sharded, plain):
            opt.pack_max_numel = 0
            opt.step([jax.device_put(g, x.sharding) for g, x in zip(gradient(opt.params, step), opt.params)])
        assert_same(sharded.params, plain.params)
    assert_same(state_arrays(sharded), state_arrays(plain))
    for p, where in zip(sharded.param_groups[0]["params"], placed):
        assert store_of(p) is not None
        assert p.data.sharding.is_equivalent_to(where.sharding, p.ndim)
        assert all(v.sharding.is_equivalent_to(where.sharding, p.ndim) for v in sharded.state[p].values() if v.ndim)


def test_a_store_keeps_the_chains_own_state_and_the_step_passes_it_untranslated():
    opt = make("Adam", "default", "float32")
    opt.step(gradient(opt.params, 0))
    boxes = opt.param_groups[0]["params"]
    store = store_of(boxes[0])
    assert store is not None and all(store_of(p) is store for p in boxes)
    chain = _engine.build_chain(optim.Adam, *_engine.split_options(optim.Adam, opt.param_groups[0]))
    assert jax.tree.structure(store.chain) == jax.tree.structure(chain.init(_engine.Bucket(arrays("float32"))))
    read = {k: v for k, v in opt.state[boxes[0]].items()}
    assert list(read) == ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"] and read["step"].dtype == jnp.float32
    assert opt.state[boxes[0]]["step"] is opt.state[boxes[1]]["step"]  # one step for the store
    before = store.chain
    del read
    opt.step(gradient(opt.params, 1))  # the state the last step left goes in as it is, donated
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(before) if leaf.ndim)


def test_entries_read_through_opt_state_keep_their_values_after_a_step():
    opt = make("Adam", "default", "float32")
    opt.step(gradient(opt.params, 0))
    first = opt.param_groups[0]["params"][0]
    held = opt.state[first]["exp_avg"]
    kept = np.asarray(held)
    opt.step(gradient(opt.params, 1))
    assert not held.is_deleted()
    np.testing.assert_array_equal(np.asarray(held), kept)
    assert store_of(first) is not None


@pytest.mark.parametrize("tier", ["foreach", "for-loop"])
def test_every_tier_keeps_stores_a_program_per_group_or_per_parameter(tier, monkeypatch):
    info = STORED["Adam"]
    opt = info.cls([{"params": arrays("float32")}, {"params": arrays("float32", seed=1)[:2], "lr": 0.5}],
                   **{**info.state_options, "foreach": tier == "foreach"})
    opt.pack_max_numel = 0
    calls = []
    original = _step._calls
    monkeypatch.setattr(_step, "_calls", lambda *args: calls.append(original(*args)) or calls[-1])
    opt.step(jax.tree.map(lambda x: jnp.sin(x) + 0.1 * x, opt.params))
    groups = [g["params"] for g in opt.param_groups]
    stores = [[store_of(p) for p in params] for params in groups]
    assert all(store is not None for same in stores for store in same)
    if tier == "foreach":  # the group's parameters in one store, one program per group
        assert all(len(set(same)) == 1 for same in stores) and len(calls[0]) == 2
    else:  # each parameter alone, one program each
        assert len({id(store) for same in stores for store in same}) == 7 and len(calls[0]) == 7


@pytest.mark.parametrize("tier", ["default", "foreach", "for-loop"])
def test_a_parameter_that_skips_a_step_moves_to_a_store_of_its_own(tier):
    opt, reference = make("Adam", tier), make("Adam", "for-loop" if tier == "default" else "default")
    for step in range(4):
        for each in (opt, reference):
            grads = gradient(each.params, step)
            if step == 1:
                grads[1] = None
            each.step(grads)
        assert_same(opt.params, reference.params)
        assert_same(state_arrays(opt), state_arrays(reference))
    boxes = opt.param_groups[0]["params"]
    skipped, others = store_of(boxes[1]), [store_of(p) for p in boxes[:1] + boxes[2:]]
    assert skipped is not None and all(store is not None and store is not skipped for store in others)
    assert float(opt.state[boxes[1]]["step"]) == 3.0 and float(opt.state[boxes[0]]["step"]) == 4.0
    if tier != "for-loop":
        assert len(set(others)) == 1 and skipped.params == [boxes[1]]


def test_loaded_states_with_unequal_steps_are_stored_by_step():
    source = make("Adam", "default")
    for step in range(3):
        grads = gradient(source.params, step)
        if step == 1:
            grads[1] = None
        source.step(grads)
    opt = make("Adam", "default")
    opt.load_state_dict(source.state_dict())
    for p, q in zip(opt.param_groups[0]["params"], source.param_groups[0]["params"]):
        p.data = q.data
    opt.step(gradient(opt.params, 3))
    source.step(gradient(source.params, 3))
    assert_same(opt.params, source.params)
    boxes = opt.param_groups[0]["params"]
    assert len({store_of(p) for p in boxes[:1] + boxes[2:]}) == 1
    assert store_of(boxes[1]) not in {store_of(boxes[0]), None}


# The for-loop tier (a store per parameter) is the layout furthest from the default tier's; foreach keeps the
# default tier's stores in a program per group, and tests/test_facade_parity.py compares it with the default tier
# for every record. "shared": stores of parameters another optimizer steps and stores too.
@pytest.mark.parametrize("other", ["for-loop", "shared"])
@pytest.mark.parametrize("name", sorted(STORED))
def test_the_stored_tiers_agree_bit_for_bit(name, other):
    stored, plain = make(name, "default"), make(name, other)
    for step in range(3):
        for opt in (stored, plain):
            opt.step(gradient(opt.params, step))
        assert_same(stored.params, plain.params)
    assert_same(state_arrays(stored), state_arrays(plain))
    assert [list(stored.state[p]) for p in stored.param_groups[0]["params"]] == [
        list(plain.state[p]) for p in plain.param_groups[0]["params"]]
    if other == "shared":
        for p in plain.param_groups[0]["params"]:
            assert store_of(p, plain) is not None and store_of(p, plain.neighbour) is not None
            assert list(plain.neighbour.state[p]) == ["momentum_buffer"]


WRITES = {
    "an entry written through": lambda opt, p: opt.state[p].__setitem__("exp_avg", opt.state[p]["exp_avg"] * 0.5),
    "p.data assigned": lambda opt, p: setattr(p, "data", p.data + 1.0),
}
RELEASES = {
    "a step of its own": lambda opt, p: opt.state[p].__setitem__("step", opt.state[p]["step"] + 1),
    "a new entry": lambda opt, p: opt.state[p].__setitem__("note", jnp.zeros(())),
    "an entry deleted": lambda opt, p: opt.state[p].__delitem__("exp_avg_sq"),
    "an entry of another dtype": lambda opt, p: opt.state[p].__setitem__(
        "exp_avg", opt.state[p]["exp_avg"].astype(jnp.float32)),
    "a gradient left out": None,
    "amsgrad off, then on": None,
    "loaded": lambda opt, p: opt.load_state_dict(opt.state_dict()),
}


@pytest.mark.parametrize("other", ["for-loop", "shared"])
@pytest.mark.parametrize("change", sorted(WRITES) + sorted(RELEASES))
def test_a_change_between_steps_keeps_the_numbers_of_the_other_tier(change, other):
    stored, plain = make("Adam", "default"), make("Adam", other)
    for step in range(5):
        for opt in (stored, plain):
            p = opt.param_groups[0]["params"][0]
            grads = gradient(opt.params, step)
            if step == 2 and change in WRITES:
                WRITES[change](opt, p)
            elif step == 2 and RELEASES.get(change) is not None:
                RELEASES[change](opt, p)
            elif step == 2 and change == "a gradient left out":
                grads[1] = None
            elif step in (2, 3) and change == "amsgrad off, then on":
                opt.param_groups[0]["amsgrad"] = step == 3
            opt.step(grads)
        assert_same(stored.params, plain.params)
        assert_same(state_arrays(stored), state_arrays(plain))
        if change in WRITES:
            assert store_of(stored.param_groups[0]["params"][0]) is not None


@pytest.mark.parametrize("tier", ["default", "foreach", "for-loop"])
def test_complex_parameters_are_stored_and_viewed_as_torch_keeps_them(tier):
    """A complex parameter's state is the chain's real view of it; ``opt.state`` shows it complex, as torch keeps it,
    and a complex write goes through: the numbers are torch's, step by step."""
    rng = np.random.default_rng(3)
    values = [rng.normal(size=s) + 1j * rng.normal(size=s) for s in [(4, 3), (5,)]]
    flags = {"default": {}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[tier]
    stored = optim.Adam([jnp.asarray(v) for v in values], lr=0.1, weight_decay=0.1, **flags)
    stored.pack_max_numel = 0
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    reference = torch.optim.Adam(tensors, lr=0.1, weight_decay=0.1, foreach=False)
    for step in range(4):
        if step == 2:  # a complex write goes through into the chain's real view
            box, first = stored.param_groups[0]["params"][0], tensors[0]
            stored.state[box]["exp_avg"] = stored.state[box]["exp_avg"] * (0.5 + 0.25j)
            reference.state[first]["exp_avg"].mul_(0.5 + 0.25j)
        stored.step([jnp.conj(x) * (step + 1.0) for x in stored.params])  # jax.grad's conjugate of torch's
        for t in tensors:
            t.grad = t.detach() * (step + 1.0)
        reference.step()
        for x, t in zip(stored.params, tensors):
            np.testing.assert_allclose(np.asarray(x), t.detach().numpy(), **TOLERANCES["float64"])
        for p, t in zip(stored.param_groups[0]["params"], tensors):
            for key in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(np.asarray(stored.state[p][key]), reference.state[t][key].numpy(),
                                           **TOLERANCES["float64"])
    box = stored.param_groups[0]["params"][0]
    assert store_of(box) is not None
    assert stored.state[box]["exp_avg"].dtype == jnp.complex128 and stored.state[box]["exp_avg"].shape == (4, 3)


@pytest.mark.parametrize("tier", ["default", "foreach", "for-loop"])
def test_an_optimizer_that_is_gone_frees_its_state_while_its_parameters_live(tier):
    boxes = [optim.Parameter(x) for x in arrays("float32")]  # the user's: they outlive the optimizer
    flags = {"default": {}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[tier]
    opt = optim.Adam(boxes, lr=0.1, **flags)
    opt.step(gradient([p.data for p in boxes], 0))
    held = {pack for p in boxes for pack in _packing.packs_holding(p)}
    assert held and (tier != "default" or any(pack.flat for pack in held))  # packs in the default tier, stores too
    leaves = [weakref.ref(leaf) for pack in held for leaf in jax.tree.leaves(pack.chain)]
    held = [weakref.ref(pack) for pack in held]
    del opt
    gc.collect()
    assert all(ref() is None for ref in held + leaves)
    assert all(not _packing.packs_holding(p) for p in boxes)
