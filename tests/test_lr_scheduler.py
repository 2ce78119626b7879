"""gradtx.optim.lr_scheduler against torch.optim.lr_scheduler, and the traps torch has that ours does not.

One table (``CASES``) drives the parity, resume and pickling tests: each case
builds the same scheduler from either module over an optimizer with two param
groups of different lrs, and the tests compare the lrs (and the cycled momentum
or beta1) after every one of 125 steps, in float64, to 1e-12 relative.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

import gradtx.optim
import gradtx as gs
from gradtx.optim import lr_scheduler as ours

LRS = (0.1, 0.02)
STEPS = 125
RTOL = 1e-12


class StandInOptimizer:
    """The torch-style surface schedulers use (param_groups and defaults), without parameters."""

    def __init__(self, groups: list[dict], defaults: dict) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        for group in groups:
            self.add_param_group(group)
        self._opt_called = False
        self._step_count = 0

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def step(self) -> None:
        self._step_count += 1
        self._opt_called = True

    def state_dict(self) -> dict:
        return {"param_groups": copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                                               for g in self.param_groups])}

    def load_state_dict(self, state_dict: dict) -> None:
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group.update(copy.deepcopy(saved))


def make_optimizer(kind: str = "sgd", lrs: tuple = LRS) -> Any:
    """Our optimizer: the facade's SGD or Adam, marked as stepped.

    The parity tests drive only the schedulers (``_opt_called`` is set so that they
    do not warn); :func:`test_facade_step_reads_the_scheduled_lr` runs real steps.
    """
    import jax.numpy as jnp

    groups = [{"params": [gradtx.optim.Parameter(jnp.zeros(2))], "lr": lr} for lr in lrs]
    optimizer = gradtx.optim.SGD(groups, lr=0.1, momentum=0.9) if kind == "sgd" else gradtx.optim.Adam(groups)
    optimizer._opt_called = True
    return optimizer


def make_torch_optimizer(kind: str = "sgd", lrs: tuple = LRS) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9) if kind == "sgd" else torch.optim.Adam(groups)


METRICS = np.concatenate([np.linspace(1.0, 0.5, 20), np.full(30, 0.5), np.linspace(0.5, 0.45, 15), np.full(60, 0.45)])
METRICS = METRICS + 1e-3 * np.sin(np.arange(METRICS.size))


@dataclass
class Case:
    """``build(lr_scheduler_module, optimizer)``; ``advance(scheduler, t)`` takes step ``t`` (1-based)."""

    id: str
    build: Callable[[Any, Any], Any]
    kind: str = "sgd"
    advance: Callable[[Any, int], None] = lambda scheduler, t: scheduler.step()


def _seq(m, o):
    return m.SequentialLR(o, [m.LinearLR(o, 0.1, 1.0, 10), m.CosineAnnealingLR(o, 40), m.ExponentialLR(o, 0.9)],
                          [10, 50])


class _Halving:
    """A callable object: torch keeps its attributes in the state_dict (functions are dropped)."""

    def __init__(self) -> None:
        self.base = 0.97

    def __call__(self, epoch: int) -> float:
        return self.base**epoch


CASES = [
    Case("StepLR", lambda m, o: m.StepLR(o, 7, 0.5)),
    Case("StepLR_default_gamma", lambda m, o: m.StepLR(o, step_size=30)),
    Case("MultiStepLR", lambda m, o: m.MultiStepLR(o, [10, 30, 30, 80], 0.3)),
    Case("ConstantLR", lambda m, o: m.ConstantLR(o, 0.25, 13)),
    Case("ConstantLR_default", lambda m, o: m.ConstantLR(o)),
    Case("LinearLR", lambda m, o: m.LinearLR(o, 0.2, 0.9, 37)),
    Case("LinearLR_default", lambda m, o: m.LinearLR(o)),
    Case("ExponentialLR", lambda m, o: m.ExponentialLR(o, 0.97)),
    Case("PolynomialLR", lambda m, o: m.PolynomialLR(o, 50, 2.0)),
    Case("PolynomialLR_sqrt", lambda m, o: m.PolynomialLR(o, total_iters=80, power=0.5)),
    Case("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, 25, 0.001)),
    Case("CosineAnnealingLR_zero_min", lambda m, o: m.CosineAnnealingLR(o, T_max=60)),
    Case("CosineAnnealingWarmRestarts", lambda m, o: m.CosineAnnealingWarmRestarts(o, 7)),
    Case("CosineAnnealingWarmRestarts_mult", lambda m, o: m.CosineAnnealingWarmRestarts(o, 3, 2, 0.001)),
    Case("CosineAnnealingWarmRestarts_fractional", lambda m, o: m.CosineAnnealingWarmRestarts(o, 4, 3, 0.001),
         advance=lambda s, t: s.step(t * 0.37)),
    Case("CyclicLR", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 9)),
    Case("CyclicLR_triangular2_lists", lambda m, o: m.CyclicLR(o, [0.01, 0.001], [0.1, 0.05], 7, 11, "triangular2",
                                                               base_momentum=[0.7, 0.6], max_momentum=[0.9, 0.95])),
    Case("CyclicLR_exp_range_adam", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 6, mode="exp_range", gamma=0.98),
         kind="adam"),
    Case("CyclicLR_scale_fn", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 5, 8, scale_fn=lambda x: 1 / (1 + 0.1 * x),
                                                      scale_mode="iterations")),
    Case("CyclicLR_no_momentum", lambda m, o: m.CyclicLR(o, 0.01, 0.2, 4, cycle_momentum=False)),
    Case("OneCycleLR", lambda m, o: m.OneCycleLR(o, [0.5, 0.1], total_steps=STEPS)),
    Case("OneCycleLR_linear_three_phase_adam",
         lambda m, o: m.OneCycleLR(o, 0.5, epochs=5, steps_per_epoch=25, pct_start=0.25, anneal_strategy="linear",
                                   div_factor=10.0, final_div_factor=100.0, three_phase=True), kind="adam"),
    Case("OneCycleLR_momentum_lists", lambda m, o: m.OneCycleLR(o, 0.3, total_steps=200, base_momentum=[0.8, 0.7],
                                                                max_momentum=[0.9, 0.99], cycle_momentum=True)),
    Case("LambdaLR", lambda m, o: m.LambdaLR(o, lambda e: 0.95**e)),
    Case("LambdaLR_per_group", lambda m, o: m.LambdaLR(o, [lambda e: 1 / (1 + e), _Halving()])),
    Case("MultiplicativeLR", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.99 if e % 2 else 0.97)),
    Case("SequentialLR", _seq),
    Case("SequentialLR_constant_step", lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, 0.1, 5), m.StepLR(o, 10, 0.5), m.MultiplicativeLR(o, lambda e: 0.98)], [20, 60])),
    Case("ChainedScheduler", lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, 0.5, 20), m.ExponentialLR(o, 0.98), m.StepLR(o, 9, 0.7)])),
    Case("ChainedScheduler_warmup_cosine", lambda m, o: m.ChainedScheduler(
        [m.LinearLR(o, 0.1, 1.0, 15), m.CosineAnnealingLR(o, 100, 1e-4)], optimizer=o)),
    Case("ReduceLROnPlateau", lambda m, o: m.ReduceLROnPlateau(o, patience=4),
         advance=lambda s, t: s.step(METRICS[t - 1])),
    Case("ReduceLROnPlateau_max_abs_cooldown", lambda m, o: m.ReduceLROnPlateau(
        o, "max", 0.5, 3, 1e-3, "abs", cooldown=5, min_lr=[0.01, 0.0]), advance=lambda s, t: s.step(-METRICS[t - 1])),
    Case("ReduceLROnPlateau_min_lr_eps", lambda m, o: m.ReduceLROnPlateau(o, factor=0.3, patience=2, min_lr=0.005,
                                                                           eps=1e-3),
         advance=lambda s, t: s.step(METRICS[t - 1])),
]


def _momenta(optimizer: Any) -> list[float]:
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in optimizer.param_groups]


def _snapshot(optimizer: Any) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups] + _momenta(optimizer)


def _run(case: Case, steps: int, optimizer: Any, scheduler: Any, first: int = 1, torch_side: bool = False) -> list:
    trajectory = []
    for t in range(first, first + steps):
        optimizer.step()
        case.advance(scheduler, t)
        trajectory.append(_snapshot(optimizer))
        assert scheduler.get_last_lr() == [g["lr"] for g in optimizer.param_groups] or torch_side
    return trajectory


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_torch(case):
    torch_optimizer, optimizer = make_torch_optimizer(case.kind), make_optimizer(case.kind)
    torch_scheduler, scheduler = case.build(torch.optim.lr_scheduler, torch_optimizer), case.build(ours, optimizer)
    assert _snapshot(optimizer) == pytest.approx(_snapshot(torch_optimizer), rel=RTOL)  # after construction
    theirs = _run(case, STEPS, torch_optimizer, torch_scheduler, torch_side=True)
    mine = _run(case, STEPS, optimizer, scheduler)
    np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=RTOL, atol=0, err_msg=case.id)
    torch_scheduler_lrs = [g["lr"] for g in torch_optimizer.param_groups]
    np.testing.assert_allclose(scheduler.get_last_lr(), torch_scheduler_lrs, rtol=RTOL)


@pytest.mark.parametrize("load_optimizer", [False, True], ids=["scheduler_only", "with_optimizer"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_resumes_exactly(case, load_optimizer):
    """Stop after 40 steps, pickle the state, rebuild everything, load, go on: the same numbers bit for bit."""
    optimizer = make_optimizer(case.kind)
    scheduler = case.build(ours, optimizer)
    straight = _run(case, 100, optimizer, scheduler)

    optimizer = make_optimizer(case.kind)
    scheduler = case.build(ours, optimizer)
    _run(case, 40, optimizer, scheduler)
    saved = pickle.loads(pickle.dumps(scheduler.state_dict()))
    saved_optimizer = optimizer.state_dict()

    optimizer = make_optimizer(case.kind)
    if load_optimizer:
        optimizer.load_state_dict(saved_optimizer)
    scheduler = case.build(ours, optimizer)
    scheduler.load_state_dict(saved)
    assert _snapshot(optimizer) == straight[39]
    resumed = _run(case, 60, optimizer, scheduler, first=41)
    assert resumed == straight[40:]


CLOSED_FORMS = [
    lambda m, o: m.StepLR(o, 7, 0.5),
    lambda m, o: m.MultiStepLR(o, [3, 9, 9, 30], 0.3),
    lambda m, o: m.ConstantLR(o, 0.25, 13),
    lambda m, o: m.LinearLR(o, 0.2, 0.9, 37),
    lambda m, o: m.ExponentialLR(o, 0.97),
    lambda m, o: m.PolynomialLR(o, 50, 2.0),
    lambda m, o: m.CosineAnnealingLR(o, 25, 0.001),
]


@pytest.mark.parametrize("build", CLOSED_FORMS, ids=["Step", "MultiStep", "Constant", "Linear", "Exponential",
                                                     "Polynomial", "CosineAnnealing"])
def test_step_with_epoch_uses_torchs_closed_form(build):
    epochs = [3, 7, 10, 25, 60, 2, 13, 37, 51]
    torch_optimizer, optimizer = make_torch_optimizer(), make_optimizer()
    torch_scheduler, scheduler = build(torch.optim.lr_scheduler, torch_optimizer), build(ours, optimizer)
    for epoch in epochs:
        torch_optimizer.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch_scheduler.step(epoch)
        with pytest.warns(UserWarning, match="epoch parameter"):
            scheduler.step(epoch)
        np.testing.assert_allclose(scheduler.get_last_lr(), torch_scheduler.get_last_lr(), rtol=RTOL)


# -- what torch gets wrong, and these classes do not ---------------------------------------------------------

def _values(optimizer: Any, scheduler: Any, steps: int) -> np.ndarray:
    lrs = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return np.asarray(lrs)


def _closed_form(make: Callable[[float], Any], steps: int) -> np.ndarray:
    return np.stack([gs.schedule_values(make(np.float64(lr)), steps + 1) for lr in LRS], axis=1)


NESTED = {
    "sequential_in_sequential_first": (
        lambda o: ours.SequentialLR(o, [
            ours.SequentialLR(o, [ours.LinearLR(o, 0.1, 1.0, 5), ours.ExponentialLR(o, 0.9)], [5]),
            ours.CosineAnnealingLR(o, 20)], [30]),
        lambda lr: gs.join_schedules([
            gs.join_schedules([gs.linear_factor_schedule(lr, 0.1, 1.0, 5), gs.geometric_schedule(lr, 0.9)], [5]),
            gs.cosine_annealing_schedule(lr, 20)], [30])),
    "sequential_in_sequential_second": (
        lambda o: ours.SequentialLR(o, [
            ours.ConstantLR(o, 0.5, 3),
            ours.SequentialLR(o, [ours.LinearLR(o, 0.1, 1.0, 5), ours.StepLR(o, 4, 0.5)], [5])], [10]),
        lambda lr: gs.join_schedules([
            gs.constant_factor_schedule(lr, 0.5, 3),
            gs.join_schedules([gs.linear_factor_schedule(lr, 0.1, 1.0, 5), gs.step_decay_schedule(lr, 4, 0.5)], [5])],
            [10])),
    "chained_in_sequential": (
        lambda o: ours.SequentialLR(o, [
            ours.LinearLR(o, 0.1, 1.0, 10),
            ours.ChainedScheduler([ours.ConstantLR(o, 0.5, 4), ours.ExponentialLR(o, 0.9)])], [10]),
        lambda lr: gs.join_schedules([
            gs.linear_factor_schedule(lr, 0.1, 1.0, 10),
            gs.chain_schedules(gs.constant_factor_schedule(lr, 0.5, 4), gs.geometric_schedule(np.float64(1.0), 0.9))], [10])),
    "chained_first_in_sequential": (
        lambda o: ours.SequentialLR(o, [
            ours.ChainedScheduler([ours.LinearLR(o, 0.2, 1.0, 6), ours.StepLR(o, 3, 0.8)]),
            ours.CosineAnnealingWarmRestarts(o, 5, 2)], [15]),
        lambda lr: gs.join_schedules([
            gs.chain_schedules(gs.linear_factor_schedule(lr, 0.2, 1.0, 6), gs.step_decay_schedule(np.float64(1.0), 3, 0.8)),
            gs.cosine_restarts_schedule(lr, 5, 2)], [15])),
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_nested_schedulers(name):
    """SequentialLR and ChainedScheduler nest (torch raises NotImplementedError or skips steps)."""
    build, closed_form = NESTED[name]
    optimizer = make_optimizer()
    scheduler = build(optimizer)
    np.testing.assert_allclose(_values(optimizer, scheduler, 60), _closed_form(closed_form, 60), rtol=RTOL)

    optimizer = make_optimizer()
    scheduler = build(optimizer)
    _values(optimizer, scheduler, 23)
    saved = pickle.loads(pickle.dumps(scheduler.state_dict()))
    optimizer = make_optimizer()
    scheduler = build(optimizer)
    scheduler.load_state_dict(saved)
    np.testing.assert_allclose(_values(optimizer, scheduler, 37), _closed_form(closed_form, 60)[23:], rtol=RTOL)


ADDED_LR = np.float64(0.05)


def _add_group(optimizer: Any, **options: Any) -> None:
    import jax.numpy as jnp

    options["params"] = [gradtx.optim.Parameter(jnp.zeros(2))]
    optimizer.add_param_group({"lr": ADDED_LR, **options})


ADD_GROUP = {
    # scheduler, the new group's lr at step t (it joins after step 10), extra options of the new group
    "StepLR": (lambda o: ours.StepLR(o, 7, 0.5), lambda t: ADDED_LR * 0.5 ** (t // 7 - 1), {}),
    "ExponentialLR": (lambda o: ours.ExponentialLR(o, 0.9), lambda t: ADDED_LR * 0.9 ** (t - 10), {}),
    "LambdaLR": (lambda o: ours.LambdaLR(o, lambda e: 1 / (1 + e)), lambda t: ADDED_LR / (1 + t), {}),
    "CosineAnnealingWarmRestarts": (lambda o: ours.CosineAnnealingWarmRestarts(o, 6),
                                    gs.cosine_restarts_schedule(ADDED_LR, 6), {}),
    "CyclicLR_per_group_max_lr": (lambda o: ours.CyclicLR(o, 0.01, [0.2, 0.1], 5),
                                  gs.cyclic_schedule(np.float64(0.01), 0.3, 5), {"max_lr": 0.3}),
    "OneCycleLR": (lambda o: ours.OneCycleLR(o, 0.4, total_steps=40), gs.onecycle_schedule(np.float64(0.4), 40), {}),
    "SequentialLR": (lambda o: ours.SequentialLR(o, [ours.ConstantLR(o, 0.5, 30), ours.ExponentialLR(o, 0.9)], [20]),
                     gs.join_schedules([gs.constant_schedule(ADDED_LR), gs.geometric_schedule(ADDED_LR, 0.9)], [20]),
                     {}),
}


@pytest.mark.parametrize("name", sorted(ADD_GROUP))
def test_add_param_group_after_the_scheduler(name):
    """A group added later joins the schedule (torch fails on the length of base_lrs)."""
    build, expected, options = ADD_GROUP[name]
    optimizer = make_optimizer()
    scheduler = build(optimizer)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    _add_group(optimizer, **options)
    for t in range(11, 40):
        optimizer.step()
        scheduler.step()
        assert len(scheduler.get_last_lr()) == 3
        np.testing.assert_allclose(optimizer.param_groups[2]["lr"], float(expected(t)), rtol=RTOL, err_msg=str(t))


def test_add_param_group_needs_per_group_values_when_lists_were_given():
    optimizer = make_optimizer()
    scheduler = ours.CyclicLR(optimizer, 0.01, [0.2, 0.1], 5)
    _add_group(optimizer)
    with pytest.raises(ValueError, match="max_lr"):
        scheduler.step()

    optimizer = make_optimizer()
    scheduler = ours.ReduceLROnPlateau(optimizer, patience=0, min_lr=[0.01, 0.0])
    scheduler.step(1.0)
    _add_group(optimizer, min_lr=0.02)
    scheduler.step(2.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.002, 0.02])


# -- warnings and validation -------------------------------------------------------------------------------------

def test_warns_when_scheduler_steps_before_optimizer():
    optimizer = make_optimizer()
    optimizer._opt_called = False
    scheduler = ours.StepLR(optimizer, 3)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        scheduler.step()
    optimizer = make_optimizer()
    scheduler = ours.StepLR(optimizer, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step()
    with pytest.warns(UserWarning, match="get_last_lr"):
        scheduler.get_lr()


@pytest.mark.parametrize("build, error, match", [
    (lambda o: ours.ConstantLR(o, factor=1.5), ValueError, "between 0 and 1"),
    (lambda o: ours.LinearLR(o, start_factor=0.0), ValueError, "greater than 0"),
    (lambda o: ours.LinearLR(o, end_factor=2.0), ValueError, "Ending"),
    (lambda o: ours.CosineAnnealingWarmRestarts(o, 0), ValueError, "T_0"),
    (lambda o: ours.CosineAnnealingWarmRestarts(o, 3, 0), ValueError, "T_mult"),
    (lambda o: ours.OneCycleLR(o, 0.1), ValueError, "total_steps OR"),
    (lambda o: ours.OneCycleLR(o, 0.1, 10, pct_start=1), ValueError, "pct_start"),
    (lambda o: ours.OneCycleLR(o, 0.1, 10, anneal_strategy="cosine"), ValueError, "anneal_strategy"),
    (lambda o: ours.CyclicLR(o, 0.1, 1.0, mode="sawtooth"), ValueError, "mode is invalid"),
    (lambda o: ours.CyclicLR(o, 0.1, [1.0, 2.0, 3.0]), ValueError, "same length"),
    (lambda o: ours.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas"),
    (lambda o: ours.MultiplicativeLR(o, 0.9), TypeError, "should be a function"),
    (lambda o: ours.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor"),
    (lambda o: ours.ReduceLROnPlateau(o, mode="up"), ValueError, "unknown"),
    (lambda o: ours.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "min_lrs"),
    (lambda o: ours.SequentialLR(o, [ours.StepLR(o, 2)], [3]), ValueError, "one more"),
    (lambda o: ours.SequentialLR(o, [ours.ReduceLROnPlateau(o)], []), ValueError, "ReduceLROnPlateau"),
    (lambda o: ours.SequentialLR(o, [ours.StepLR(make_optimizer(), 2)], []), ValueError, "same optimizer"),
    (lambda o: ours.ChainedScheduler([]), ValueError, "at least one"),
    (lambda o: ours.StepLR(o, 3, last_epoch=5), KeyError, "initial_lr"),
    (lambda o: ours.StepLR(object(), 3), TypeError, "is not an Optimizer"),
])
def test_validation(build, error, match):
    with pytest.raises(error, match=match):
        build(make_optimizer())


def test_cycle_momentum_needs_momentum():
    optimizer = StandInOptimizer([{"lr": 0.1}], {"lr": 0.1})
    with pytest.raises(ValueError, match="momentum or beta1"):
        ours.CyclicLR(optimizer, 0.01, 0.1)
    ours.CyclicLR(optimizer, 0.01, 0.1, cycle_momentum=False)


def test_onecycle_raises_past_total_steps():
    optimizer = make_optimizer()
    scheduler = ours.OneCycleLR(optimizer, 0.1, total_steps=3)
    for _ in range(3):
        scheduler.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        scheduler.step()


def test_torch_state_dict_loads_into_ours():
    """A torch scheduler's state_dict (all plain numbers) resumes our scheduler at the same point."""
    torch_optimizer, optimizer = make_torch_optimizer(), make_optimizer()
    theirs = torch.optim.lr_scheduler.OneCycleLR(torch_optimizer, 0.5, total_steps=60, three_phase=True)
    for _ in range(20):
        torch_optimizer.step()
        theirs.step()
    scheduler = ours.OneCycleLR(optimizer, 0.5, total_steps=60, three_phase=True)
    scheduler.load_state_dict(theirs.state_dict())
    for _ in range(20):
        torch_optimizer.step()
        theirs.step()
        scheduler.step()
        np.testing.assert_allclose(scheduler.get_last_lr(), theirs.get_last_lr(), rtol=RTOL)


def test_facade_step_reads_the_scheduled_lr_without_recompiling():
    """The facade's compiled step reads the lr (and cycled momentum / beta1) each scheduler step writes."""
    import jax.numpy as jnp

    from gradtx.optim import _engine

    param = gradtx.optim.Parameter(jnp.ones(3, jnp.float32))
    optimizer = gradtx.optim.SGD([param], lr=0.5)
    scheduler = ours.StepLR(optimizer, 1, 0.5)
    expected = np.ones(3, np.float32)
    traces = None
    for lr in [0.5, 0.25, 0.125, 0.0625]:
        param.grad = jnp.ones(3, jnp.float32)
        optimizer.step()
        scheduler.step()
        traces = _engine.trace_count() if traces is None else traces
        expected = expected - np.float32(lr)
        np.testing.assert_allclose(np.asarray(param.data), expected, rtol=1e-6)
    assert _engine.trace_count() == traces, "a scheduler step must not recompile the optimizer step"

    for optimizer in (gradtx.optim.SGD([gradtx.optim.Parameter(jnp.ones(3))], lr=0.1, momentum=0.9),
                      gradtx.optim.Adam([gradtx.optim.Parameter(jnp.ones(3))], lr=0.1)):
        scheduler = ours.OneCycleLR(optimizer, 0.5, total_steps=10)
        for step in range(6):
            optimizer.param_groups[0]["params"][0].grad = jnp.ones(3)
            optimizer.step()
            scheduler.step()
            traces = _engine.trace_count() if step == 0 else traces
        assert _engine.trace_count() == traces
