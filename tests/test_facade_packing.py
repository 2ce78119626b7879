"""Packed storage in the facade's default tier, and the engine options around it.

The default tier of an elementwise optimizer keeps the state of a group's small
parameters in one flat buffer per entry (gradtx.optim._packing). Every test here runs the same problem
in the default tier and in the ``foreach`` tier (never packed) and demands the
same bits, whatever the user does between steps: reading ``opt.state``,
assigning ``p.data`` or state entries (written through, or releasing the pack
when its layout cannot hold them), leaving a gradient out, saving and loading,
pickling.
"""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx import optim
from gradtx.optim import _engine, _packing
from tests.cases import OPTIMIZERS

SHAPES = [(3,), (2, 4), (5,), (0,), (1, 1, 3), ()]  # an empty and a 0-d parameter among them
PACKED = {info.name: info for info in OPTIMIZERS if info.packed}  # the records whose default tier packs
UNPACKED = {info.name: info for info in OPTIMIZERS if info.elementwise and not info.packed}


def arrays(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=s), dtype) for s in shapes]


def gradient(params, step):
    """A gradient that changes sign and scale from step to step."""
    return [jnp.sin(x * (step + 1.0)) + 0.1 * x for x in params]


def make(name, dtype, tier, shapes=SHAPES, **extra):
    """The record's class with the options that give it the most state, in the default or the foreach tier."""
    info = PACKED.get(name) or UNPACKED[name]
    flags = {"default": {}, "foreach": {"foreach": True}}[tier]
    opt = info.cls(arrays(dtype, shapes=shapes), **info.state_options, **flags, **extra)
    if info.train_mode:
        opt.train()
    return opt


def state_arrays(opt):
    return [{k: np.asarray(v) for k, v in opt.state[p].items()} for g in opt.param_groups for p in g["params"]]


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def flat_pack(p):
    """``p``'s pack (flat state), or None (the parameter is stepped apart, or in a store: gradtx.optim._stores)."""
    return next((pack for pack in _packing.packs_holding(p) if pack.flat), None)


def is_packed(opt):
    return [flat_pack(p) is not None for g in opt.param_groups for p in g["params"]]


def packs(opt):
    return [flat_pack(p) for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(PACKED))
def test_packed_default_tier_equals_foreach_bit_for_bit(name, dtype):
    packed, plain = make(name, dtype, "default"), make(name, dtype, "foreach")
    for step in range(4):
        for opt in (packed, plain):
            opt.step(gradient(opt.params, step))
        if step == 0:  # all but the 0-d parameter share one buffer
            assert is_packed(packed) == [s != () for s in SHAPES]
            assert not any(is_packed(plain))
        assert_same(packed.params, plain.params)
        assert all(p.dtype == dtype for g in packed.param_groups for p in g["params"])
    assert_same(state_arrays(packed), state_arrays(plain))
    assert list(packed.state_dict()["state"][0]) == list(plain.state_dict()["state"][0])  # torch's key order


@pytest.mark.parametrize("name", sorted(UNPACKED))
def test_elementwise_steps_with_other_state_are_not_packed(name):
    opt = make(name, "float64", "default")
    opt.step(gradient(opt.params, 0))
    assert not any(is_packed(opt))


def test_reading_state_and_params_every_step_keeps_the_pack():
    opt = make("Adam", "float32", "default")
    opt.step(gradient(opt.params, 0))
    first = packs(opt)
    count = _engine.trace_count()
    logged = []
    for step in range(1, 4):  # a loop that logs the state and the parameters every step
        logged.append([np.asarray(v) for p in opt.state for v in opt.state[p].values()])
        logged.append([np.asarray(x) for x in opt.params])
        opt.step(gradient(opt.params, step))
    assert packs(opt) == first and all(pack.alive for pack in first[:-1])
    assert _engine.trace_count() == count
    assert len(opt.state) == len(SHAPES) and all(p in opt.state for p in opt.param_groups[0]["params"])


def test_writes_through_state_and_data_keep_the_numbers_and_the_pack():
    packed, plain = make("Adam", "float64", "default"), make("Adam", "float64", "foreach")
    for step in range(6):
        for opt in (packed, plain):
            if step == 2:
                first = opt.param_groups[0]["params"][0]
                halved = opt.state[first]["exp_avg"] * 0.5
                opt.state[first]["exp_avg"] = halved  # an edit through opt.state, read back as written
                assert_same(opt.state[first]["exp_avg"], halved)
            if step == 4:
                second = opt.param_groups[0]["params"][1]
                moved = second.data + 1.0
                second.data = moved  # an edit through p.data
                assert second.data is moved
            opt.step(gradient(opt.params, step))
        assert_same(packed.params, plain.params)
    assert all(is_packed(packed)[:-1]) and len(set(packs(packed)[:-1])) == 1  # the same pack all along
    assert_same(state_arrays(packed), state_arrays(plain))


def test_a_pack_keeps_the_chains_own_state_and_translates_only_at_the_boundary():
    """A step leaves the pack the chain's state over its flat parameter (what a step takes back, untranslated);
    opt.state reads it under torch's names, never handing out the chain's own arrays."""
    opt = make("Adam", "float32", "default")
    opt.step(gradient(opt.params, 0))
    pack = packs(opt)[0]
    flat = jnp.zeros((pack.size,), jnp.float32)
    chain = _engine.build_chain(optim.Adam, *_engine.split_options(optim.Adam, opt.param_groups[0]))
    assert jax.tree.structure(pack.chain) == jax.tree.structure(chain.init(_engine.Bucket([flat])))
    first = opt.param_groups[0]["params"][0]
    read = dict(opt.state[first])
    assert list(read) == ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"] and read["step"].dtype == jnp.float32
    held = {id(leaf) for leaf in jax.tree.leaves(pack.chain)}
    assert not held & {id(v) for p in opt.state for v in opt.state[p].values()}
    chain_before = pack.chain
    opt.step(gradient(opt.params, 1))  # the state the last step left goes in as it is (and is donated)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(chain_before) if leaf.size > 1)
    assert all(not v.is_deleted() for v in read.values())


@pytest.mark.parametrize("change", ["amsgrad off, then on again", "weight decay off", "loaded"])
def test_an_option_that_changes_the_chains_structure_translates_the_packed_state(change):
    """The pack's chain state is translated (through torch's names) when the chain's structure changes; an entry
    the new chain does not keep stays, as torch keeps it, and a later chain takes it up again."""
    packed, plain = make("Adam", "float64", "default"), make("Adam", "float64", "foreach")
    for step in range(6):
        for opt in (packed, plain):
            group = opt.param_groups[0]
            if change.startswith("amsgrad") and step in (2, 4):
                group["amsgrad"] = step == 4
            if change == "weight decay off" and step == 2:
                group["weight_decay"] = 0.0
            if change == "loaded" and step == 2:
                opt.load_state_dict(opt.state_dict())
            opt.step(gradient(opt.params, step))
        assert_same(packed.params, plain.params)
        assert_same(state_arrays(packed), state_arrays(plain))
        assert [list(packed.state[p]) for p in packed.param_groups[0]["params"]] == [
            list(plain.state[p]) for p in plain.param_groups[0]["params"]]
    assert all(is_packed(packed)[:-1])


WRITES_THE_PACK_CANNOT_HOLD = {
    "state entry of another dtype": lambda opt, p: opt.state[p].__setitem__(
        "exp_avg", opt.state[p]["exp_avg"].astype(jnp.float32)),
    "a step of its own": lambda opt, p: opt.state[p].__setitem__("step", opt.state[p]["step"] + 1),
    "a new entry": lambda opt, p: opt.state[p].__setitem__("note", jnp.zeros(())),
    "an entry deleted": lambda opt, p: opt.state[p].__delitem__("exp_avg_sq"),
    "the whole entry replaced": lambda opt, p: opt.state.__setitem__(
        p, {k: v * 1.0 for k, v in opt.state[p].items()}),
    "the parameter's state deleted": lambda opt, p: opt.state.__delitem__(p),
    "data of another dtype": lambda opt, p: setattr(p, "data", p.data.astype(jnp.float32)),
}


@pytest.mark.parametrize("write", sorted(WRITES_THE_PACK_CANNOT_HOLD))
def test_a_write_the_pack_cannot_hold_releases_it_with_the_numbers_of_the_other_tier(write):
    packed, plain = make("Adam", "float64", "default"), make("Adam", "float64", "foreach")
    for opt in (packed, plain):
        opt.step(gradient(opt.params, 0))
        WRITES_THE_PACK_CANNOT_HOLD[write](opt, opt.param_groups[0]["params"][1])
    assert_same(state_arrays(packed), state_arrays(plain))
    assert_same(packed.params, plain.params)
    assert [p.dtype for p in packed.param_groups[0]["params"]] == [p.dtype for p in plain.param_groups[0]["params"]]
    if write != "data of another dtype":  # its state no longer matches its dtype: the step refuses it in every tier
        for step in range(1, 3):
            for opt in (packed, plain):
                opt.step(gradient(opt.params, step))
            assert_same(packed.params, plain.params)
        assert_same(state_arrays(packed), state_arrays(plain))


def test_replacing_the_whole_state_releases_the_packs():
    opt = make("Adam", "float64", "default")
    opt.step(gradient(opt.params, 0))
    saved = {p: dict(entry) for p, entry in opt.state.items()}
    opt.state = {}
    assert not any(is_packed(opt)) and len(opt.state) == 0
    opt.state = saved
    assert_same(state_arrays(opt), [{k: np.asarray(v) for k, v in saved[p].items()}
                                    for p in opt.param_groups[0]["params"]])


def test_a_missing_gradient_steps_the_others_as_torch_does():
    packed, plain = make("Adam", "float64", "default"), make("Adam", "float64", "foreach")
    for step in range(5):
        for opt in (packed, plain):
            grads = gradient(opt.params, step)
            if step == 2:
                grads[1] = None  # torch skips this parameter: no update, its step count stays
            opt.step(grads)
        assert_same(packed.params, plain.params)
    assert_same(state_arrays(packed), state_arrays(plain))
    steps = [float(np.asarray(s["step"])) for s in state_arrays(packed)]
    assert steps[1] == 4.0 and steps[0] == 5.0
    assert not any(is_packed(packed))  # unequal steps cannot share a buffer


def test_mixed_dtypes_pack_separately_and_large_parameters_stay_apart():
    params = arrays("float32", shapes=[(4,), (3,)]) + arrays("float64", shapes=[(2,), (6,)])
    params.append(jnp.ones((optim.Adam.pack_max_numel + 1,), jnp.float32))

    def run(**flags):
        opt = optim.Adam([jnp.array(p) for p in params], lr=0.1, **flags)
        for step in range(3):
            opt.step(gradient(opt.params, step))
        return opt

    packed, plain = run(), run(foreach=True)
    assert_same(packed.params, plain.params)
    boxes = packed.param_groups[0]["params"]
    of = [flat_pack(p) for p in boxes]
    assert of[0] is of[1] and of[2] is of[3] and of[0] is not of[2] and of[4] is None
    assert [p.dtype for p in boxes] == [jnp.float32, jnp.float32, jnp.float64, jnp.float64, jnp.float32]


def test_state_dict_and_pickle_resume_a_packed_run_bit_for_bit():
    full = make("Adam", "float64", "default")
    for step in range(6):
        full.step(gradient(full.params, step))
    head = make("Adam", "float64", "default")
    for step in range(3):
        head.step(gradient(head.params, step))
    saved = head.state_dict()
    for resumed in (pickle.loads(pickle.dumps(head)), make("Adam", "float64", "default")):
        if not resumed.state:  # the fresh one: parameters and state from the saved run
            for p, q in zip(resumed.param_groups[0]["params"], head.param_groups[0]["params"]):
                p.data = jnp.array(q.data)
            resumed.load_state_dict(saved)
        for step in range(3, 6):
            resumed.step(gradient(resumed.params, step))
        assert_same(resumed.params, full.params)
        assert_same(state_arrays(resumed), state_arrays(full))


def test_views_read_before_a_step_stay_valid_and_nothing_recompiles():
    opt = make("Adam", "float32", "default")
    opt.step(gradient(opt.params, 0))
    before = opt.params
    kept = [np.asarray(x) for x in before]
    count = _engine.trace_count()
    for step in range(1, 4):
        opt.step(gradient(opt.params, step))
    assert _engine.trace_count() == count
    assert_same(before, kept)  # the flat buffer was donated; the views read from it were copies


def test_packed_parameters_stay_their_own_arrays_and_reading_them_runs_nothing(monkeypatch):
    opt = make("Adam", "float32", "default")
    opt.step(gradient(opt.params, 0))
    boxes = opt.param_groups[0]["params"]
    assert all(is_packed(opt)[:-1])
    stored = [p._data for p in boxes]
    assert all(isinstance(x, jax.Array) for x in stored)
    monkeypatch.setattr(_packing, "_cut_many", None)  # reading a parameter cuts nothing out of a buffer
    monkeypatch.setattr(_packing, "_cut_one", None)
    assert all(x is y for x, y in zip(opt.params, stored)) and all(p.data is x for p, x in zip(boxes, stored))


@pytest.mark.parametrize("write", ["another shape", "another dtype"])
def test_data_the_pack_cannot_hold_makes_the_step_refuse_the_gradient_and_change_nothing(write):
    opt = make("Adam", "float64", "default")
    opt.step(gradient(opt.params, 0))
    p = opt.param_groups[0]["params"][1]
    grads = gradient(opt.params, 1)
    p.data = jnp.zeros((7,), jnp.float64) if write == "another shape" else p.data.astype(jnp.float32)
    before = [np.asarray(x) for x in opt.params]
    with pytest.raises(ValueError):  # the gradient no longer fits the parameter: nothing changes
        opt.step(grads)
    assert_same(opt.params, before)


def test_skip_nonfinite_leaves_everything_untouched_and_counts():
    opt, reference = make("Adam", "float64", "default"), make("Adam", "float64", "default")
    opt.skip_nonfinite = True
    for step in range(2):
        for o in (opt, reference):
            o.step(gradient(o.params, step))
    params, state = [np.asarray(x) for x in opt.params], state_arrays(opt)
    bad = gradient(opt.params, 2)
    bad[2] = bad[2].at[0].set(jnp.nan)
    opt.step(bad)
    bad[2] = bad[2].at[0].set(jnp.inf)
    opt.step(bad)
    assert opt.skipped_steps == 2
    assert_same(opt.params, params)
    assert_same(state_arrays(opt), state)
    for step in range(2, 4):
        for o in (opt, reference):
            o.step(gradient(o.params, step))
    assert_same(opt.params, reference.params)
    assert opt.skipped_steps == 2
    assert pickle.loads(pickle.dumps(opt)).skipped_steps == 2


def test_skip_nonfinite_is_off_by_default():
    opt = make("SGD", "float64", "default")
    grads = gradient(opt.params, 0)
    grads[0] = grads[0].at[0].set(jnp.nan)
    opt.step(grads)
    assert np.isnan(np.asarray(opt.params[0])[0]) and opt.skipped_steps == 0


def test_current_hyperparams_per_group_evaluates_schedules_at_the_step():
    schedule = gradtx.linear_schedule(0.1, 0.0, 10)
    a, b = arrays("float64", shapes=[(3,)]), arrays("float64", seed=1, shapes=[(2,)])
    opt = optim.Adam([{"params": a, "lr": schedule}, {"params": b, "betas": (0.8, 0.99)}], lr=0.01, eps=1e-6)
    assert opt.current_hyperparams() == [
        {"lr": pytest.approx(0.1), "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0},
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0},
    ]
    for step in range(3):
        opt.step([gradient(g, step) for g in opt.params])
    assert opt.current_hyperparams()[0]["lr"] == pytest.approx(float(schedule(3)))
    opt.param_groups[1]["lr"] = 0.5
    assert opt.current_hyperparams()[1]["lr"] == 0.5
    opt.param_groups[1]["betas"] = (schedule, 0.99)
    assert opt.current_hyperparams()[1]["betas"] == (pytest.approx(float(schedule(3))), 0.99)


ONE_LOOP_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from gradtx import optim
from gradtx.optim import _engine, _packing
from tests.cases import OPTIMIZERS
assert _engine.one_loop_requested()
rng = np.random.default_rng(0)
start = [rng.normal(size=(64,)), rng.normal(size=(3, 5))]
runs = {}
for name, flags in (("default", {}), ("foreach", {"foreach": True})):
    opt = optim.Adam([jnp.asarray(x) for x in start], lr=0.05, weight_decay=0.1, **flags)
    for step in range(5):
        opt.step([jnp.sin(x * (step + 1.0)) for x in opt.params])
    runs[name] = [np.asarray(x) for x in opt.params]
for a, b in zip(runs["default"], runs["foreach"]):
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=0)
print("ok")
"""


def test_one_loop_under_multi_output_fusion_keeps_the_numbers():
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_backend_extra_options=xla_cpu_use_multi_output_fusion")
    out = subprocess.run([sys.executable, "-c", ONE_LOOP_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_pack_max_numel_zero_keeps_every_parameter_apart():
    opt, plain = make("Adam", "float64", "default"), make("Adam", "float64", "foreach")
    for step in range(4):
        if step == 2:
            opt.pack_max_numel = 0
        for o in (opt, plain):
            o.step(gradient(o.params, step))
        assert any(is_packed(opt)) == (step < 2)
        assert_same(opt.params, plain.params)
    assert pickle.loads(pickle.dumps(opt)).pack_max_numel == 0


def test_a_pack_of_several_shapes_is_a_program_of_its_own(monkeypatch):
    """Compiled apart from the large parameters' program, with XLA:CPU's older loop emitter (see
    ``_engine._compiler_options``); the numbers are the foreach tier's (the bit-for-bit tests above)."""
    calls = []
    original = _engine.program

    def spy(donate, spread=False, mixed_packs=False):
        calls.append(mixed_packs)
        return original(donate, spread, mixed_packs)

    monkeypatch.setattr(_engine, "program", spy)
    arrays = [jnp.ones((3, 4)), jnp.ones(5), jnp.ones((300, 300))]
    opt, plain = optim.Adam(arrays, lr=0.1), optim.Adam(arrays, lr=0.1, foreach=True)
    for o in (opt, plain):
        o.step([jnp.full_like(a, 0.5) for a in arrays])
    assert is_packed(opt) == [True, True, False]
    assert set(calls) == {False, True}  # the large parameter's program, and the pack's
    assert_same(opt.params, plain.params)


@pytest.mark.parametrize("name", ["Adam", "ASGD"])
def test_a_group_of_many_small_parameters_packs_in_alike_packs_compiled_once(name, monkeypatch):
    monkeypatch.setattr(_packing, "PACK_MAX_PARAMS", 4)
    shapes = [(3,)] * 8 + [(2, 2)] * 3  # two packs of four (3,) vectors, and the rest in a third
    packed, plain = make(name, "float64", "default", shapes=shapes), make(name, "float64", "foreach", shapes=shapes)
    count = _engine.trace_count()
    for step in range(3):
        for opt in (packed, plain):
            opt.step(gradient(opt.params, step))
        assert_same(packed.params, plain.params)
    found = packs(packed)
    assert len(set(found)) == 3 and all(found) and [len(pack.params) for pack in dict.fromkeys(found)] == [4, 4, 3]
    assert _engine.trace_count() - count == 3  # the foreach program, and one per kind of pack (the two alike: one)
    assert_same(state_arrays(packed), state_arrays(plain))
