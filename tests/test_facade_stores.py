"""Stored state in the facade's default tier: the chain's own state over a group's (unpacked) parameters.

The default tier keeps the state of a group whose parameters all have
gradients and one step as the chain's state over them (gradtx.optim._stores),
passes it to each step's program untranslated, and shows it through
``opt.state`` under torch's names. Every test runs the same problem in the
default tier and in the ``foreach`` tier (per-parameter dicts) and demands the
same bits, whatever the user does between steps. The parity, tier, bucket,
contract and step-cache suites run every record through stores too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import optim
from gradtx.optim import _engine, _packing
from tests.cases import OPTIMIZERS

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
    info = STORED[name]
    flags = {"default": {}, "foreach": {"foreach": True}}[tier]
    opt = info.cls(arrays(dtype, info.params), **{**info.state_options, **flags})
    opt.pack_max_numel = 0
    if info.train_mode:
        opt.train()
    return opt


def store_of(p):
    store = _packing.pack_of(p)
    return store if store is not None and not store.flat else None


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def state_arrays(opt):
    return [{k: np.asarray(v) for k, v in opt.state[p].items()} for g in opt.param_groups for p in g["params"]]


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


@pytest.mark.parametrize("name", sorted(STORED))
def test_the_stored_default_tier_equals_foreach_bit_for_bit(name):
    stored, plain = make(name, "default"), make(name, "foreach")
    for step in range(3):
        for opt in (stored, plain):
            opt.step(gradient(opt.params, step))
        assert_same(stored.params, plain.params)
    assert_same(state_arrays(stored), state_arrays(plain))
    assert [list(stored.state[p]) for p in stored.param_groups[0]["params"]] == [
        list(plain.state[p]) for p in plain.param_groups[0]["params"]]


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


@pytest.mark.parametrize("change", sorted(WRITES) + sorted(RELEASES))
def test_a_change_between_steps_keeps_the_numbers_of_the_other_tier(change):
    stored, plain = make("Adam", "default"), make("Adam", "foreach")
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
