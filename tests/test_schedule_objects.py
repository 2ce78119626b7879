"""Schedules are small immutable objects: a readable repr, equality, pickle and .npz as data, same numbers.

Every schedule of tests/test_schedules.py's two tables (optax's names, torch's
rules in closed form) is checked; the facade's state_dict with schedule options
resumes bit for bit through pickle and through ``save_state_dict_npz``.
"""

from __future__ import annotations

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
import gradtx as gs
from gradtx import optim
from gradtx import ScheduleFn
from tests.harness import TOLERANCES
from tests.test_schedules import OPTAX_CASES, TORCH_CASES

SCHEDULES = {f"optax-{c.id}": (lambda c=c: c.build(gs, float)) for c in OPTAX_CASES}
SCHEDULES.update({f"torch-{c.id}": (lambda c=c: c.ours(0.1, float)) for c in TORCH_CASES})
SCHEDULES.update({f"torch-{c.id}-momentum": (lambda c=c: c.momentum(float)) for c in TORCH_CASES if c.momentum})
COUNTS = np.arange(0, 40, dtype=np.int32)
F32 = TOLERANCES["float32"]  # compiled (jit, vmap) float32 values differ from eager ones in the last bits


def _has_local_function(schedule: ScheduleFn) -> bool:
    for _, value in schedule.arguments:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, ScheduleFn) and _has_local_function(v):
                return True
            if callable(v) and "<locals>" in getattr(v, "__qualname__", ""):
                return True
    return False


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_is_a_frozen_comparable_object(name):
    schedule, again = SCHEDULES[name](), SCHEDULES[name]()
    assert isinstance(schedule, ScheduleFn)
    assert repr(schedule).startswith(f"gradtx.{schedule.factory}(")
    assert all(f"{key}=" in repr(schedule) for key, _ in schedule.arguments)
    functions = _has_local_function(schedule)  # a test's lambda, made anew each time: equal only to itself
    assert (schedule == again) is not functions and hash(schedule) == hash(again) and schedule == schedule
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.factory = "other"
    eager = np.stack([np.asarray(schedule(int(c))) for c in COUNTS])
    np.testing.assert_allclose(np.asarray(jax.jit(schedule)(jnp.int32(7))), eager[7], **F32)  # XLA fuses
    np.testing.assert_allclose(gs.schedule_values(schedule, COUNTS), eager, **F32)
    if functions:  # not picklable (a local lambda), and not data
        return
    restored = pickle.loads(pickle.dumps(schedule))
    assert restored == schedule and repr(restored) == repr(schedule)
    np.testing.assert_array_equal(np.stack([np.asarray(restored(int(c))) for c in COUNTS]), eager)


def test_equality_looks_at_every_argument():
    assert gs.linear_schedule(1.0, 0.0, 10) != gs.linear_schedule(1.0, 0.0, 11)
    assert gs.linear_schedule(1.0, 0.0, 10) == gs.linear_schedule(init_value=1.0, end_value=0.0, transition_steps=10)
    assert gs.constant_schedule(np.float32(1.0)) != gs.constant_schedule(np.float64(1.0))
    assert gs.constant_schedule(jnp.ones(2)) == gs.constant_schedule(jnp.ones(2))
    assert gs.join_schedules((gs.constant_schedule(1.0),), []) == gs.join_schedules([gs.constant_schedule(1.0)], [])
    assert gs.linear_schedule(1.0, 0.0, 10) != "linear_schedule"


def test_generators_are_kept_as_lists():
    schedule = gs.join_schedules((s for s in [gs.constant_schedule(1.0), gs.constant_schedule(2.0)]), iter([3]))
    assert schedule.kwargs["boundaries"] == [3] and len(schedule.kwargs["schedules"]) == 2
    assert float(pickle.loads(pickle.dumps(schedule))(5)) == 2.0


def test_an_optax_consumer_takes_it_as_a_plain_callable():
    schedule = gradtx.warmup_cosine_decay_schedule(0.0, 0.1, 3, 12)
    params = {"w": jnp.ones(3)}
    ours, theirs = optax.adam(schedule), optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.1, 3, 12))
    a, b = ours.init(params), theirs.init(params)
    for _ in range(5):
        ua, a = ours.update(params, a)
        ub, b = theirs.update(params, b)
        np.testing.assert_allclose(ua["w"], ub["w"], rtol=1e-6)


@pytest.mark.parametrize("decay_steps", [10**10, 1e10])
def test_cosine_decay_takes_steps_beyond_int32(decay_steps):
    ours, theirs = gradtx.cosine_decay_schedule(1.0, decay_steps), optax.cosine_decay_schedule(1.0, decay_steps)
    for count in (0, 5, jnp.int32(10**9)):
        np.testing.assert_allclose(ours(count), theirs(count), rtol=1e-6)
        np.testing.assert_allclose(jax.jit(ours)(count), theirs(count), rtol=1e-6)


# --- the facade's state_dict with schedule options -----------------------------------------------------------


def _make(params=None):
    params = params or {"w": jnp.arange(6.0).reshape(2, 3) / 7, "b": jnp.ones(3)}
    return optim.Adam(params, lr=gradtx.cosine_decay_schedule(0.1, 20, alpha=0.1),
                      betas=(gradtx.linear_schedule(0.8, 0.9, 10), 0.999), weight_decay=0.01)


def _steps(opt, n):
    for _ in range(n):
        opt.step({"w": opt.params["w"] * 2 + 0.1, "b": jnp.sin(opt.params["b"])})


def _pickle(state_dict, tmp_path):
    return pickle.loads(pickle.dumps(state_dict))


def _npz(state_dict, tmp_path):
    gradtx.save_state_dict_npz(tmp_path / "opt.npz", state_dict)
    with np.load(tmp_path / "opt.npz", allow_pickle=False):  # no pickle inside
        pass
    return gradtx.load_state_dict_npz(tmp_path / "opt.npz")


@pytest.mark.parametrize("round_trip", [_pickle, _npz], ids=["pickle", "npz"])
def test_state_dict_with_schedules_resumes_bit_for_bit(round_trip, tmp_path):
    full = _make()
    _steps(full, 6)
    half = _make()
    _steps(half, 3)
    saved = half.state_dict()
    loaded = round_trip(saved, tmp_path)
    assert loaded["param_groups"][0]["lr"] == saved["param_groups"][0]["lr"]
    assert loaded["param_groups"][0]["betas"] == saved["param_groups"][0]["betas"]
    resumed = _make({k: jnp.array(v) for k, v in half.params.items()})
    resumed.load_state_dict(loaded)
    _steps(resumed, 3)
    for key in full.params:
        np.testing.assert_array_equal(np.asarray(resumed.params[key]), np.asarray(full.params[key]))


def test_nested_schedules_and_arrays_go_through_npz(tmp_path):
    schedule = gradtx.join_schedules(
        [gradtx.linear_schedule(0.0, np.float32(0.1), 5),
         gradtx.piecewise_constant_schedule(0.1, {10: 0.5, 20: np.float64(0.1)})], [5])
    opt = optim.SGD([jnp.ones(2)], lr=schedule, momentum=gradtx.constant_schedule(jnp.asarray(0.9)))
    loaded = _npz(opt.state_dict(), tmp_path)
    assert loaded["param_groups"][0]["lr"] == schedule
    assert loaded["param_groups"][0]["momentum"] == opt.param_groups[0]["momentum"]
    np.testing.assert_array_equal(gs.schedule_values(loaded["param_groups"][0]["lr"], 30),
                                  gs.schedule_values(schedule, 30))


def test_npz_refuses_functions_naming_the_option(tmp_path):
    opt = optim.Adam([jnp.ones(2)], betas=(0.9, lambda count: 0.999))
    with pytest.raises(TypeError, match=r"\['param_groups'\]\[0\]\['betas'\]\[1\] is a callable.*gradtx schedule"):
        gradtx.save_state_dict_npz(tmp_path / "opt.npz", opt)
    opt = optim.Adam([jnp.ones(2)], lr=gradtx.lambda_schedule(0.1, lambda count: 0.9**count))
    with pytest.raises(TypeError, match=r"\['param_groups'\]\[0\]\['lr'\] is gradtx.lambda_schedule.*'lr_lambda'"):
        gradtx.save_state_dict_npz(tmp_path / "opt.npz", opt)
    assert not (tmp_path / "opt.npz").exists()


def test_editing_the_callers_dict_afterwards_changes_nothing():
    scales = {10: 0.5}
    schedule = gs.piecewise_constant_schedule(1.0, scales)
    scales[5] = 0.0
    assert schedule == gs.piecewise_constant_schedule(1.0, {10: 0.5}) and float(schedule(7)) == 1.0
