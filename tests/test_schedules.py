"""Functional schedules: optax's under optax's names and numbers, torch's rules in closed form, plateau.

Every optax-named schedule is compared with the installed optax (evaluated in
float64) and every torch-style schedule with torch.optim.lr_scheduler's classes
(two param groups, 100+ steps, lr and momentum). One table per anchor drives the
tests; jit/vmap/grad and dtype checks run over both tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import gradtx as gs
from tests.harness import TOLERANCES

F64 = np.float64
STEPS = 130


@dataclass
class Case:
    """``build(lib, f)`` makes the schedule from ``lib`` with the numbers wrapped by ``f``."""

    id: str
    build: Callable[[Any, Callable[[float], Any]], Any]


def _join(lib, f):
    return lib.join_schedules([lib.linear_schedule(f(0.0), f(1.0), 20), lib.cosine_decay_schedule(f(1.0), 80, 0.1)],
                              [20])


OPTAX_CASES = [
    Case("constant", lambda lib, f: lib.constant_schedule(f(0.3))),
    Case("polynomial", lambda lib, f: lib.polynomial_schedule(f(1.0), f(0.01), 2, 100, 5)),
    Case("polynomial_sqrt", lambda lib, f: lib.polynomial_schedule(f(2.0), f(0.5), 0.5, 50)),
    Case("polynomial_no_steps", lambda lib, f: lib.polynomial_schedule(f(2.0), f(0.5), 1, 0)),
    Case("polynomial_negative_begin", lambda lib, f: lib.polynomial_schedule(f(1.0), f(0.1), 3, 40, -3)),
    Case("linear", lambda lib, f: lib.linear_schedule(f(1.0), f(0.01), 100)),
    Case("linear_begin", lambda lib, f: lib.linear_schedule(f(0.0), f(2.0), 30, 10)),
    Case("exponential", lambda lib, f: lib.exponential_decay(f(1.0), 10, 0.9)),
    Case("exponential_staircase", lambda lib, f: lib.exponential_decay(f(1.0), 7, 0.5, 5, True, f(0.05))),
    Case("exponential_growth_capped", lambda lib, f: lib.exponential_decay(f(0.1), 10, 1.5, 0, False, f(1.0))),
    Case("exponential_rate_zero", lambda lib, f: lib.exponential_decay(f(0.7), 10, 0.0)),
    Case("cosine_decay", lambda lib, f: lib.cosine_decay_schedule(f(1.0), 100)),
    Case("cosine_decay_alpha_exponent", lambda lib, f: lib.cosine_decay_schedule(f(2.0), 60, 0.1, 2.0)),
    Case("piecewise_constant", lambda lib, f: lib.piecewise_constant_schedule(f(1.0), {10: 0.5, 40: 0.1, 80: 2.0})),
    Case("piecewise_constant_none", lambda lib, f: lib.piecewise_constant_schedule(f(1.0))),
    Case("piecewise_linear", lambda lib, f: lib.piecewise_interpolate_schedule(
        "linear", f(1.0), {15: 0.5, 40: 0.1, 90: 3.0})),
    Case("piecewise_cosine_at_zero", lambda lib, f: lib.piecewise_interpolate_schedule(
        "cosine", f(1.0), {0: 2.0, 50: 0.1})),
    Case("warmup_constant", lambda lib, f: lib.warmup_constant_schedule(f(0.0), f(1.0), 20)),
    Case("warmup_cosine", lambda lib, f: lib.warmup_cosine_decay_schedule(f(0.0), f(1.0), 10, 100, f(0.01))),
    Case("warmup_cosine_exponent", lambda lib, f: lib.warmup_cosine_decay_schedule(f(0.1), f(2.0), 25, 90,
                                                                                     exponent=2.0)),
    Case("warmup_exponential", lambda lib, f: lib.warmup_exponential_decay_schedule(
        f(0.0), f(1.0), 10, 20, 0.5, 5, True, f(0.05))),
    Case("sgdr", lambda lib, f: lib.sgdr_schedule([
        dict(init_value=f(0.0), peak_value=f(1.0), warmup_steps=5, decay_steps=30),
        dict(init_value=f(0.0), peak_value=f(0.5), warmup_steps=2, decay_steps=40, end_value=f(0.01))])),
    Case("linear_onecycle", lambda lib, f: lib.linear_onecycle_schedule(100, f(1.0))),
    Case("linear_onecycle_options", lambda lib, f: lib.linear_onecycle_schedule(120, f(2.0), 0.25, 0.8, 10.0, 100.0)),
    Case("cosine_onecycle", lambda lib, f: lib.cosine_onecycle_schedule(100, f(1.0))),
    Case("cosine_onecycle_options", lambda lib, f: lib.cosine_onecycle_schedule(57, f(2.0), 0.4, 5.0, 50.0)),
    Case("join", _join),
]


def _optax_values(case: Case) -> np.ndarray:
    """optax's values with int64 counts, so that optax computes in float64 (tests run with x64)."""
    schedule = case.build(optax, float)
    return np.asarray(jnp.broadcast_to(jax.vmap(schedule)(jnp.arange(STEPS, dtype=jnp.int64)), (STEPS,)), np.float64)


def _jitted_float32(schedule, counts) -> np.ndarray:
    """The values under ``jit(vmap)`` with int32 counts (float counts stay float), checked to be float32."""
    counts = jnp.asarray(counts, jnp.int32 if np.issubdtype(np.asarray(counts).dtype, np.integer) else jnp.float32)
    values = jax.jit(jax.vmap(schedule))(counts)
    assert values.dtype == jnp.float32, "Python-number hyperparameters must give float32 values"
    return np.asarray(jnp.broadcast_to(values, counts.shape))


@pytest.mark.parametrize("case", OPTAX_CASES, ids=lambda c: c.id)
def test_matches_optax(case):
    """float64 hyperparameters: optax's float64 numbers; Python floats: float32, under jit and vmap."""
    expected = _optax_values(case)
    ours64 = gs.schedule_values(case.build(gs, F64), STEPS)
    assert ours64.dtype == np.float64
    np.testing.assert_allclose(ours64, expected, **TOLERANCES["float64"], err_msg=case.id)
    ours32 = _jitted_float32(case.build(gs, float), np.arange(STEPS))
    np.testing.assert_allclose(ours32, expected, **TOLERANCES["float32"], err_msg=case.id)


def test_every_optax_schedule_is_covered():
    names = {"constant_schedule", "linear_schedule", "polynomial_schedule", "exponential_decay",
             "cosine_decay_schedule", "warmup_cosine_decay_schedule", "warmup_exponential_decay_schedule",
             "warmup_constant_schedule", "piecewise_constant_schedule", "piecewise_interpolate_schedule",
             "join_schedules", "sgdr_schedule", "cosine_onecycle_schedule", "linear_onecycle_schedule"}
    assert all(callable(getattr(gs, name)) for name in names)
    assert all(callable(getattr(optax, name)) for name in names)


# -- torch: the closed forms against torch.optim.lr_scheduler's classes ---------------------------------------

LRS = (0.1, 0.02)  # two param groups


@dataclass
class TorchCase:
    """``torch_build(lr_scheduler, optimizer)`` and ``ours(lr, f)`` (the schedule for a group of base ``lr``).

    ``momentum(f)`` is the schedule of the momentum torch cycles, if any; ``counts``
    the steps as torch's ``step(epoch)`` receives them (``None``: plain ``step()``).
    """

    id: str
    torch_build: Callable[[Any, Any], Any]
    ours: Callable[[float, Callable], Any]
    momentum: Callable[[Callable], Any] | None = None
    counts: np.ndarray | None = None
    steps: int = 125


def _cyclic_scale(x):
    return 1.0 / (1.0 + 0.1 * x)


TORCH_CASES = [
    TorchCase("StepLR", lambda m, o: m.StepLR(o, 7, 0.5), lambda lr, f: gs.step_decay_schedule(f(lr), 7, 0.5)),
    TorchCase("MultiStepLR", lambda m, o: m.MultiStepLR(o, [10, 30, 30, 80], 0.3),
              lambda lr, f: gs.multistep_decay_schedule(f(lr), [10, 30, 30, 80], 0.3)),
    TorchCase("ConstantLR", lambda m, o: m.ConstantLR(o, 0.25, 13),
              lambda lr, f: gs.constant_factor_schedule(f(lr), 0.25, 13)),
    TorchCase("LinearLR", lambda m, o: m.LinearLR(o, 0.2, 0.9, 37),
              lambda lr, f: gs.linear_factor_schedule(f(lr), 0.2, 0.9, 37)),
    TorchCase("ExponentialLR", lambda m, o: m.ExponentialLR(o, 0.97), lambda lr, f: gs.geometric_schedule(f(lr), 0.97)),
    TorchCase("PolynomialLR", lambda m, o: m.PolynomialLR(o, 50, 2.0),
              lambda lr, f: gs.polynomial_decay_schedule(f(lr), 50, 2.0)),
    TorchCase("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, 25, 0.001),
              lambda lr, f: gs.cosine_annealing_schedule(f(lr), 25, 0.001)),
    TorchCase("CosineAnnealingWarmRestarts", lambda m, o: m.CosineAnnealingWarmRestarts(o, 7),
              lambda lr, f: gs.cosine_restarts_schedule(f(lr), 7)),
    TorchCase("CosineAnnealingWarmRestarts_mult", lambda m, o: m.CosineAnnealingWarmRestarts(o, 3, 2, 0.001),
              lambda lr, f: gs.cosine_restarts_schedule(f(lr), 3, 2, 0.001)),
    TorchCase("CosineAnnealingWarmRestarts_fractional", lambda m, o: m.CosineAnnealingWarmRestarts(o, 4, 3, 0.001),
              lambda lr, f: gs.cosine_restarts_schedule(f(lr), 4, 3, 0.001), counts=np.arange(1, 126) * 0.37),
    TorchCase("CyclicLR_triangular", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 9),
              lambda lr, f: gs.cyclic_schedule(f(0.01), f(0.2), 9),
              momentum=lambda f: gs.cyclic_momentum_schedule(f(0.8), f(0.9), 9)),
    TorchCase("CyclicLR_triangular2", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 7, 11, "triangular2", base_momentum=0.7),
              lambda lr, f: gs.cyclic_schedule(f(0.01), f(0.2), 7, 11, "triangular2"),
              momentum=lambda f: gs.cyclic_momentum_schedule(f(0.7), f(0.9), 7, 11, "triangular2")),
    TorchCase("CyclicLR_exp_range", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 6, mode="exp_range", gamma=0.98),
              lambda lr, f: gs.cyclic_schedule(f(0.01), f(0.2), 6, mode="exp_range", gamma=0.98),
              momentum=lambda f: gs.cyclic_momentum_schedule(f(0.8), f(0.9), 6, mode="exp_range", gamma=0.98)),
    TorchCase("CyclicLR_scale_fn", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 5, 8, scale_fn=_cyclic_scale,
                                                           scale_mode="iterations"),
              lambda lr, f: gs.cyclic_schedule(f(0.01), f(0.2), 5, 8, scale_fn=_cyclic_scale, scale_mode="iterations"),
              momentum=lambda f: gs.cyclic_momentum_schedule(f(0.8), f(0.9), 5, 8, scale_fn=_cyclic_scale,
                                                             scale_mode="iterations")),
    TorchCase("OneCycleLR", lambda m, o: m.OneCycleLR(o, 0.5, total_steps=125),
              lambda lr, f: gs.onecycle_schedule(f(0.5), 125),
              momentum=lambda f: gs.onecycle_momentum_schedule(125, f(0.85), f(0.95))),
    TorchCase("OneCycleLR_linear_three_phase",
              lambda m, o: m.OneCycleLR(o, 0.5, epochs=11, steps_per_epoch=11, pct_start=0.25,
                                        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
                                        three_phase=True, base_momentum=0.6, max_momentum=0.99),
              lambda lr, f: gs.onecycle_schedule(f(0.5), 121, 0.25, "linear", 10.0, 100.0, True),
              momentum=lambda f: gs.onecycle_momentum_schedule(121, f(0.6), f(0.99), 0.25, "linear", True),
              steps=121),
    TorchCase("LambdaLR", lambda m, o: m.LambdaLR(o, lambda e: F64(0.95) ** e),
              lambda lr, f: gs.lambda_schedule(f(lr), lambda e: F64(0.95) ** e)),
    TorchCase("MultiplicativeLR", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.99 if e % 2 else 0.97),
              lambda lr, f: gs.multiplicative_schedule(f(lr), lambda e: jnp.where(e % 2 == 1, F64(0.99), F64(0.97)))),
    TorchCase("SequentialLR",
              lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 10), m.CosineAnnealingLR(o, 40),
                                              m.ExponentialLR(o, 0.9)], [10, 50]),
              lambda lr, f: gs.join_schedules([gs.linear_factor_schedule(f(lr), 0.1, 1.0, 10),
                                               gs.cosine_annealing_schedule(f(lr), 40),
                                               gs.geometric_schedule(f(lr), 0.9)], [10, 50])),
    TorchCase("ChainedScheduler",
              lambda m, o: m.ChainedScheduler([m.ConstantLR(o, 0.5, 20), m.ExponentialLR(o, 0.98),
                                               m.StepLR(o, 9, 0.7)]),
              lambda lr, f: gs.chain_schedules(gs.constant_factor_schedule(f(lr), 0.5, 20),
                                               gs.geometric_schedule(f(1.0), 0.98),
                                               gs.step_decay_schedule(f(1.0), 9, 0.7))),
]


def _torch_run(case: TorchCase) -> tuple[np.ndarray, np.ndarray]:
    """torch's lrs (steps x groups), and its momenta, from step 0 (after construction) on."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in LRS]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], lr=0.1, momentum=0.9)
    scheduler = case.torch_build(torch.optim.lr_scheduler, optimizer)
    record = lambda: ([g["lr"] for g in optimizer.param_groups], [g["momentum"] for g in optimizer.param_groups])  # noqa: E731
    lrs, momenta = [], []
    if case.counts is None:
        lrs, momenta = [record()[0]], [record()[1]]
    for i in range(case.steps if case.counts is None else len(case.counts)):
        optimizer.step()
        scheduler.step() if case.counts is None else scheduler.step(float(case.counts[i]))
        lrs.append(record()[0])
        momenta.append(record()[1])
    return np.asarray(lrs), np.asarray(momenta)


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_matches_torch(case):
    """float64: torch's numbers to 1e-12 for both groups; float32 under jit(vmap) for the first."""
    lrs, momenta = _torch_run(case)
    counts = np.arange(case.steps + 1) if case.counts is None else case.counts
    for group, lr in enumerate(LRS):
        ours = gs.schedule_values(case.ours(lr, F64), counts)
        np.testing.assert_allclose(ours, lrs[:, group], rtol=1e-12, atol=1e-15, err_msg=f"{case.id} group {group}")
    np.testing.assert_allclose(_jitted_float32(case.ours(LRS[0], float), counts), lrs[:, 0], **TOLERANCES["float32"])
    if case.momentum is not None:
        ours = gs.schedule_values(case.momentum(F64), counts)
        np.testing.assert_allclose(ours, momenta[:, 0], rtol=1e-12, atol=1e-15, err_msg=f"{case.id} momentum")
        np.testing.assert_allclose(_jitted_float32(case.momentum(float), counts), momenta[:, 0],
                                   **TOLERANCES["float32"])


# -- jit, vmap, grad and dtypes -----------------------------------------------------------------------------------

# Schedules linear in their first argument (end values and minima 0): d value / d init = value / init.
LINEAR_IN_INIT = {
    "polynomial_schedule": lambda v: gs.polynomial_schedule(v, 0.0, 2, 50),
    "exponential_decay": lambda v: gs.exponential_decay(v, 10, 0.9, 3, True),
    "piecewise_interpolate_schedule": lambda v: gs.piecewise_interpolate_schedule("cosine", v, {3: 0.5, 11: 2.0}),
    "cosine_restarts_schedule": lambda v: gs.cosine_restarts_schedule(v, 3, 2),
    "cyclic_schedule": lambda v: gs.cyclic_schedule(0.0, v, 4, mode="triangular2"),
    "onecycle_schedule": lambda v: gs.onecycle_schedule(v, 20, three_phase=True),
    "multiplicative_schedule": lambda v: gs.multiplicative_schedule(v, lambda k: 0.9 + 0.01 * k),
}


@pytest.mark.parametrize("name", sorted(LINEAR_IN_INIT))
def test_grad_and_vmap_over_hyperparameters(name):
    make = LINEAR_IN_INIT[name]
    value, grad = jax.jit(jax.value_and_grad(lambda v: make(v)(jnp.int32(7))))(jnp.float32(0.5))
    np.testing.assert_allclose(grad, value / 0.5, rtol=1e-5)
    inits = jnp.asarray([0.5, 1.0, 2.0], jnp.float32)
    np.testing.assert_allclose(jax.vmap(lambda v: make(v)(9))(inits), inits * make(1.0)(9), rtol=1e-5)


def test_traced_hyperparameters():
    """Values that optax branches on in Python (peak 0, decay rate, bounds) may be traced arrays."""
    count = jnp.arange(40, dtype=jnp.int32)

    @jax.jit
    def values(peak, rate, end):
        return (jax.vmap(gs.warmup_cosine_decay_schedule(0.0, peak, 5, 30, end))(count),
                jax.vmap(gs.exponential_decay(1.0, 4, rate, end_value=end))(count))

    for peak, rate, end in [(1.0, 0.8, 0.05), (0.0, 1.2, 2.0)]:
        cosine, exponential = values(peak, rate, end)
        assert cosine.dtype == exponential.dtype == jnp.float32  # floats passed to jit are weakly typed
        np.testing.assert_allclose(cosine, gs.schedule_values(gs.warmup_cosine_decay_schedule(0.0, peak, 5, 30, end),
                                                              40), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(exponential, gs.schedule_values(gs.exponential_decay(1.0, 4, rate, end_value=end),
                                                                   40), rtol=1e-6)


def test_float64_inputs_give_float64():
    assert gs.linear_schedule(F64(1.0), 0.0, 10)(jnp.int32(3)).dtype == jnp.float64
    assert gs.linear_schedule(1.0, 0.0, 10)(jnp.float64(3.5)).dtype == jnp.float64
    assert gs.cyclic_schedule(0.1, 1.0, 5)(jnp.int32(3)).dtype == jnp.float32
    assert gs.onecycle_schedule(jnp.asarray(1.0, jnp.float64), 20)(3).dtype == jnp.float64


def test_schedule_as_hyperparameter_of_a_transform():
    """A schedule drives a transform's step count (int32) inside jit."""
    import gradtx

    tx = gradtx.scale_by_learning_rate(gs.onecycle_schedule(0.5, 10))
    params = {"w": jnp.ones(3, jnp.float32)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for count in range(4):
        updates, state = step(params, state)
        assert updates["w"].dtype == jnp.float32
        np.testing.assert_allclose(updates["w"], -gs.onecycle_schedule(0.5, 10)(count), rtol=1e-6)


# -- combinators and helpers -------------------------------------------------------------------------------------

def test_chain_and_join():
    chained = gs.chain_schedules(gs.constant_schedule(2.0), gs.step_decay_schedule(1.0, 5, 0.5))
    np.testing.assert_allclose(gs.schedule_values(chained, [0, 4, 5, 12]), [2.0, 2.0, 1.0, 0.5])
    joined = gs.join_schedules([gs.constant_schedule(1.0), gs.linear_schedule(0.0, 1.0, 4),
                                gs.constant_schedule(3.0)], [2, 6])
    np.testing.assert_allclose(gs.schedule_values(joined, 8), [1, 1, 0, 0.25, 0.5, 0.75, 3, 3])
    with pytest.raises(ValueError, match="one boundary fewer"):
        gs.join_schedules([gs.constant_schedule(1.0)], [3])
    with pytest.raises(ValueError, match="at least one"):
        gs.chain_schedules()


def test_schedule_values():
    np.testing.assert_allclose(gs.schedule_values(gs.linear_schedule(0.0, 1.0, 4), 5), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(gs.schedule_values(gs.linear_schedule(0.0, 1.0, 4), np.array([1, 3])), [0.25, 0.75])
    assert gs.schedule_values(gs.constant_schedule(2.0), 0).shape == (0,)
    np.testing.assert_allclose(gs.schedule_values(gs.constant_schedule(2.0), 3), [2.0, 2.0, 2.0])

    def python_branching(count):
        return 1.0 if count < 2 else 0.5

    np.testing.assert_allclose(gs.schedule_values(python_branching, 4), [1.0, 1.0, 0.5, 0.5])


def test_validation():
    with pytest.raises(ValueError, match="positive decay_steps"):
        gs.cosine_decay_schedule(1.0, 0)
    with pytest.raises(ValueError, match="non-negative scale"):
        gs.piecewise_constant_schedule(1.0, {3: -0.5})
    with pytest.raises(ValueError, match="interpolate_type"):
        gs.piecewise_interpolate_schedule("cubic", 1.0)
    with pytest.raises(ValueError, match="transition_steps"):
        gs.cosine_onecycle_schedule(0, 1.0)
    with pytest.raises(ValueError, match="mode"):
        gs.cyclic_schedule(0.1, 1.0, mode="sawtooth")
    with pytest.raises(ValueError, match="anneal_strategy"):
        gs.onecycle_schedule(1.0, 10, anneal_strategy="cosine")
    with pytest.raises(ValueError, match="T_0"):
        gs.cosine_restarts_schedule(1.0, 0)
    with pytest.raises(ValueError, match="factor"):
        gs.constant_factor_schedule(1.0, factor=1.5)
    with pytest.raises(ValueError, match="start_factor"):
        gs.linear_factor_schedule(1.0, start_factor=0.0)


def test_cosine_restarts_fall_on_their_steps():
    """Restarts land exactly on T_0 (1 + T_mult + ... ) even where the logarithm rounds across them."""
    for t_0, t_mult in [(1, 2), (3, 3), (5, 10)]:
        schedule = gs.cosine_restarts_schedule(1.0, t_0, t_mult)
        starts = [t_0 * (t_mult**n - 1) // (t_mult - 1) for n in range(6)]
        np.testing.assert_array_equal(gs.schedule_values(schedule, starts), 1.0)


# -- reduce_on_plateau against optax.contrib ---------------------------------------------------------------------

_ACCUMULATE = dict(factor=0.5, patience=2, rtol=0.0, atol=0.05, accumulation_size=3, min_scale=0.2)
PLATEAU_CASES = [(dict(), "float32"), (dict(factor=0.5, patience=3, cooldown=2), "float64"),
                 (_ACCUMULATE, "float32"), (_ACCUMULATE, "float64")]


@pytest.mark.parametrize("kwargs, dtype", PLATEAU_CASES, ids=["default-f32", "cooldown-f64", "accumulate-f32",
                                                            "accumulate-f64"])
def test_reduce_on_plateau_matches_optax(kwargs, dtype):
    params = {"w": jnp.ones(2, dtype), "b": jnp.zeros((), dtype)}
    updates = jax.tree.map(jnp.ones_like, params)
    values = np.concatenate([np.linspace(1.0, 0.5, 10), np.full(40, 0.5), np.linspace(0.5, 0.2, 10), np.full(30, 0.2)])
    values = values + 0.01 * np.sin(np.arange(values.size))
    ours, theirs = gs.reduce_on_plateau(**kwargs), optax.contrib.reduce_on_plateau(**kwargs)
    ours_update, theirs_update = jax.jit(ours.update), jax.jit(theirs.update)
    state_a, state_b = ours.init(params), theirs.init(params)
    for v in values:
        out_a, state_a = ours_update(updates, state_a, value=jnp.asarray(v, dtype))
        out_b, state_b = theirs_update(updates, state_b, value=jnp.asarray(v, dtype))
        for field in state_b._fields:
            a, b = getattr(state_a, field), getattr(state_b, field)
            assert a.dtype == b.dtype, field
            np.testing.assert_allclose(a, b, **TOLERANCES[dtype], err_msg=field)
        assert out_a["w"].dtype == dtype
        np.testing.assert_allclose(out_a["w"], out_b["w"], **TOLERANCES[dtype])
    assert float(state_a.scale) < 1.0


def test_reduce_on_plateau_validation_and_chain():
    with pytest.raises(ValueError, match="factor"):
        gs.reduce_on_plateau(factor=1.0)
    with pytest.raises(ValueError, match="rtol or atol"):
        gs.reduce_on_plateau(rtol=0.0, atol=0.0)
    import gradtx

    tx = gradtx.chain(gradtx.scale_by_learning_rate(0.1), gs.reduce_on_plateau(patience=0))
    params = {"w": jnp.ones(2, jnp.float32)}
    state = tx.init(params)
    reference = optax.chain(optax.scale_by_learning_rate(0.1), optax.contrib.reduce_on_plateau(patience=0))
    reference_state = reference.init(params)
    for value in [1.0, 1.0, 0.5, 0.5]:
        updates, state = tx.update(params, state, params, value=value)
        expected, reference_state = reference.update(params, reference_state, params, value=value)
        np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)

