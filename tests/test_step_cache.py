"""The step's plan kept between steps: reused while nothing changed, right after any change.

A step plans its stores (which parameters' chain state steps together) once
and reuses the plan while the group's parameters with a gradient are the same;
a store takes most other changes as they come (gradtx.optim._stores). Each
change a user may make between steps is checked against an optimizer that
plans every step afresh from per-parameter dicts: the numbers and the state
agree bit for bit, in every tier, over parameters this optimizer alone steps
and over parameters another optimizer steps and stores too.
"""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx.optim as optim
from gradtx.optim import _packing, _stores
from tests.cases import OPTIMIZERS
from tests.test_facade_stores import share

TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
# Above pack_max_numel (8192): planned as separate arrays; "s" is small (packed in the default tier).
SHAPES = {"w": (90, 100), "b": (9000,), "k": (3, 50, 61), "s": (4, 5)}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in SHAPES.items()}


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return {name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in SHAPES.items()}


def _box(opt, name):
    return opt.param_groups[0]["params"][list(SHAPES).index(name)]


def _assign_data(opt):
    p = _box(opt, "w")
    p.data = p.data * 0.5


def _replace_entry(opt):
    p = _box(opt, "b")
    opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"] * 2.0


def _replace_step(opt):
    opt.state[_box(opt, "k")]["step"] = jnp.asarray(1.0, jnp.float32)


def _delete_state(opt):
    del opt.state[_box(opt, "w")]


def _delete_entry(opt):
    del opt.state[_box(opt, "w")]["exp_avg_sq"]  # the next step starts it afresh, in torch's key order


def _add_group(opt):
    opt.add_param_group({"params": [("extra", optim.Parameter(jnp.full((9100,), 0.25, jnp.float32)))], "lr": 0.02})
    opt.param_groups[-1]["params"][0].grad = jnp.full((9100,), 0.5, jnp.float32)


def _lr_becomes_a_schedule(opt):
    opt.param_groups[0]["lr"] = lambda count: 0.005


def _load_state(opt):
    other = optim.Adam(_params(seed=3), lr=0.01, foreach=opt.defaults["foreach"])  # the same tier
    for step in range(2):
        other.step(_grads(50 + step))
    opt.load_state_dict(other.state_dict())


def _no_grad_for_one(opt):
    _box(opt, "b").grad = None


# what a user may change between two steps
CHANGES = {
    "p.data assigned": _assign_data,
    "state entry replaced": _replace_entry,
    "step entry replaced": _replace_step,
    "state deleted": _delete_state,
    "state entry deleted": _delete_entry,
    "group added": _add_group,
    "option changes type": _lr_becomes_a_schedule,
    "load_state_dict": _load_state,
    "grad None for a step": _no_grad_for_one,
}


def _step_with(opt, step, change_at, change):
    for name, grad in _grads(step).items():
        _box(opt, name).grad = grad
    if step == change_at:
        change(opt)
    opt.step()


def _run(change, tier, storage, fresh_plans, planned, steps=6, change_at=4):
    """Steps an Adam optimizer, changing something before step ``change_at``; ``fresh_plans``: hands stored state
    back to per-parameter dicts before every step, so that each step plans afresh. ``"shared"``: another optimizer
    (SGD with momentum, ``lr=0``: it keeps state and leaves the parameters as they are) steps the parameters
    after each step (``tests.test_facade_stores.share``). Returns the optimizer and how many fresh plans each step made."""
    opt = optim.Adam(_params(), lr=0.01, **TIERS[tier])
    if storage == "shared":
        share(opt)
    counts = {}
    for step in range(1, steps + 1):
        if fresh_plans:
            _packing.release_packs(opt)
        before = len(planned)
        _step_with(opt, step, change_at, change)
        counts[step] = len(planned) - before
    return opt, counts


def _assert_same(opt, reference):
    for a, b in zip(jax.tree.leaves(opt.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(opt.state) == len(reference.state)
    for p, q in zip([p for g in opt.param_groups for p in g["params"]],
                    [p for g in reference.param_groups for p in g["params"]]):
        assert list(opt.state[p]) == list(reference.state[q])
        for key in opt.state[p]:
            np.testing.assert_array_equal(np.asarray(opt.state[p][key]), np.asarray(reference.state[q][key]))


@pytest.fixture
def planned(monkeypatch):
    """Records every fresh plan of a group's stores."""
    calls = []
    original = _stores._plan_stores

    def spy(*args, **kwargs):
        calls.append(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(_stores, "_plan_stores", spy)
    return calls


@pytest.mark.parametrize("storage", ["alone", "shared"])
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("change", CHANGES)
def test_a_change_between_steps_keeps_the_numbers_of_a_fresh_plan(change, tier, storage, planned):
    kept, counts = _run(CHANGES[change], tier, storage, fresh_plans=False, planned=planned)
    reference, _ = _run(CHANGES[change], tier, storage, fresh_plans=True, planned=planned)
    _assert_same(kept, reference)
    if storage == "shared":
        _assert_same(kept.neighbour, reference.neighbour)
    assert counts[3] == 0, "an unchanged step planned again"


@pytest.mark.parametrize("tier", TIERS)
def test_steps_after_a_skipped_step_read_nothing_from_the_device_to_plan(tier, planned, monkeypatch):
    opt = optim.Adam(_params(), lr=0.01, **TIERS[tier])
    for step in range(1, 4):
        _step_with(opt, step, 2, _no_grad_for_one)  # b skips step 2: two buckets with different steps
    reads = []
    original = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: reads.append(x) or original(x))
    for step in range(4, 7):
        _step_with(opt, step, None, None)
    assert reads == []
    assert float(opt.state[_box(opt, "b")]["step"]) == 5.0
    assert float(opt.state[_box(opt, "w")]["step"]) == 6.0


def test_the_kept_plan_holds_no_array_alive():
    opt = optim.Adam(_params(), lr=0.01)
    for step in range(1, 4):
        _step_with(opt, step, None, None)
    p = _box(opt, "w")
    old = weakref.ref(p.data)
    old_entry = weakref.ref(opt.state[p]["exp_avg"])
    p.data = jnp.zeros(SHAPES["w"], jnp.float32)
    opt.state[p]["exp_avg"] = jnp.zeros(SHAPES["w"], jnp.float32)
    gc.collect()
    assert old() is None and old_entry() is None


@pytest.mark.parametrize("tier", TIERS)
def test_weakly_typed_arrays_compile_the_step_once(tier):
    """``jnp.full(shape, 0.5)`` gives a weakly typed array; the step's results are strongly typed, so the box holds a
    strong one from the start and the second step runs the first step's programs."""
    from gradtx.optim import _engine

    params = {name: jnp.full(shape, 0.5) for name, shape in SHAPES.items()}
    assert all(x.weak_type for x in params.values())
    opt = optim.Adam(params, lr=0.1, **TIERS[tier])
    grads = {name: jnp.ones(x.shape, x.dtype) for name, x in params.items()}  # float64 under x64
    opt.step(grads)
    count = _engine.trace_count()
    opt.step(grads)
    assert _engine.trace_count() == count
    assert not any(x.weak_type for x in jax.tree.leaves(opt.params))
    assert all(x.weak_type for x in params.values())  # the user's arrays are theirs, unchanged


STEPS_WITH_GRADIENTS = [info for info in OPTIMIZERS if not info.closure and not info.needs_mesh]


ENGINE_PROGRAMS = {"jit(fused_update)"}  # gradtx.optim._engine.program


@pytest.mark.parametrize("info", STEPS_WITH_GRADIENTS, ids=lambda info: info.name)
def test_later_steps_compile_none_of_the_first_steps_programs_again(info):
    """Arrays placed as JAX places them by default (uncommitted) stay so: state an optimizer creates itself is placed
    as its parameter is, so the step's results do not change placement and the second step runs the engine programs
    the first one compiled; the third compiles nothing at all (XLA compiles counted by JAX's own monitoring events;
    a second step may compile what the first did not need, such as Prodigy's reading of its first state)."""
    import jax.monitoring

    rng = np.random.default_rng(0)
    shapes = [(4, 3), (90, 100), (5, 5)] + ([] if info.params == "matrices" else [(3,)])
    params = [jnp.asarray(rng.normal(size=shape)) for shape in shapes]
    opt = info.cls(params, **info.state_options)
    if info.train_mode:
        opt.train()
    grads = [jnp.full(x.shape, 0.1, x.dtype) for x in params]
    compiled: list = []

    def count(name, seconds, fun_name=None, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            compiled[-1].append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for _ in range(3):
            compiled.append([])
            opt.step(grads)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    first, second, third = compiled
    assert not set(first) & set(second) & ENGINE_PROGRAMS, second
    assert third == []
