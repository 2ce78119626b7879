"""``load_state_dict`` fuzzed for every facade optimizer (LBFGS and ZeRO included) and every scheduler.

Property: a mutated state dict is either refused, with a ValueError, KeyError or
TypeError, leaving the optimizer (parameters, state, param groups, step counts) or
the scheduler and its optimizer's param groups unchanged; or it is accepted, and
the next step gives what a fresh optimizer loaded with the same dict gives (for a
scheduler: a twin stepped the same way, since keys a scheduler's dict lacks keep
their values, as in torch). ``GRADTX_FUZZ_EXAMPLES`` sets the examples per class (3 by default).
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx.optim as optim
from gradtx.optim import lr_scheduler
from tests.test_lr_scheduler import CASES as SCHEDULER_CASES
from tests.test_lr_scheduler import make_optimizer

FUZZ = settings(max_examples=int(os.environ.get("GRADTX_FUZZ_EXAMPLES", "3")), deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
REFUSED = (ValueError, KeyError, TypeError)


def _zero_options() -> dict:
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    return {"optimizer_class": optim.Adam, "mesh": mesh, "lr": 0.05}


# Every public facade optimizer, with options that give it state. A class missing here fails the coverage test.
OPTIONS = {
    "SGD": dict(lr=0.05, momentum=0.9), "Adam": dict(lr=0.05, amsgrad=True), "AdamW": dict(lr=0.05),
    "Adagrad": dict(lr=0.05), "RMSprop": dict(lr=0.01, momentum=0.5, centered=True), "Adadelta": {},
    "Adamax": dict(lr=0.05), "NAdam": dict(lr=0.05), "RAdam": dict(lr=0.05), "Rprop": dict(lr=0.05),
    "ASGD": dict(lr=0.05), "Adafactor": dict(lr=0.05), "Muon": dict(lr=0.05), "LBFGS": dict(lr=0.5, max_iter=3),
    "SparseAdam": dict(lr=0.05), "ZeroRedundancyOptimizer": _zero_options, "AdamWScheduleFree": dict(lr=0.05),
    "RAdamScheduleFree": dict(lr=0.05), "SGDScheduleFree": dict(lr=0.05), "ADOPT": dict(lr=0.05),
    "AdEMAMix": dict(lr=0.05), "Prodigy": dict(lr=1.0), "GaLore": dict(lr=0.05), "SophiaH": dict(lr=0.05),
    "Kron": dict(lr=0.05), "SOAP": dict(lr=0.05), "Shampoo": dict(lr=0.05), "MARS": dict(lr=0.05),
    "LaProp": dict(lr=0.05), "SCION": dict(lr=0.05), "AdamMini": dict(lr=0.05),
}


def _public_optimizers() -> list[str]:
    return sorted(name for name in optim.__all__ if inspect.isclass(getattr(optim, name))
                  and issubclass(getattr(optim, name), optim.Optimizer) and name != "Optimizer")


def test_the_fuzz_covers_every_public_optimizer():
    assert sorted(OPTIONS) == _public_optimizers()


def _loss(params):
    return sum(jnp.sum(jnp.sin(3 * x) + 0.5 * x**2) for x in jax.tree.leaves(params))


def _build(name: str, params: dict) -> optim.Optimizer:
    options = OPTIONS[name]
    options = options() if callable(options) else options
    opt = getattr(optim, name)({k: jnp.array(v) for k, v in params.items()}, **options)
    if hasattr(opt, "train"):  # the schedule-free optimizers step in train mode
        opt.train()
    return opt


_STEPPED: dict = {}


def _stepped(name: str) -> tuple[dict, dict]:
    """Parameters and state dict after two steps (computed once per class)."""
    if name not in _STEPPED:
        rng = np.random.default_rng(0)
        opt = _build(name, {"v": rng.normal(size=(3, 3)), "w": rng.normal(size=(4, 3))})  # Muon: matrices only
        for _ in range(2):
            opt.step(closure=_loss)
        _STEPPED[name] = ({k: np.array(v) for k, v in opt.params.items()}, opt.state_dict())
    params, sd = _STEPPED[name]
    return params, copy.deepcopy(sd)


def _plain(value):
    if isinstance(value, (np.ndarray, jax.Array)):
        return ("array", str(np.asarray(value).dtype), np.asarray(value).tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value) if callable(value) else value


def _snapshot(opt: optim.Optimizer):
    boxes = [p for g in opt.param_groups for p in g["params"]]
    groups = [{k: (len(v) if k == "params" else _plain(v)) for k, v in g.items()} for g in opt.param_groups]
    state = {boxes.index(p): _plain(dict(s)) for p, s in opt.state.items() if p in boxes}
    return _plain([p.data for p in boxes]), groups, state, opt._step_count, opt.skipped_steps


junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.sampled_from([-1.0, 2.5, np.inf, np.nan, 1e300]),
                 st.text(max_size=2), st.builds(np.ones, st.sampled_from([(), (1,), (3,), (4, 3), (2, 2, 2)])),
                 st.lists(st.integers(-1, 3), max_size=2))


def _mutate(data, sd: dict) -> dict:
    """One mutation of an entry, a param group or the dict, as a careless user or another library makes."""
    state, groups = sd["state"], sd["param_groups"]
    where = data.draw(st.sampled_from(["entry", "entry", "group", "state"] if state else ["group", "state"]))
    if where == "entry":
        entry = state[data.draw(st.sampled_from(sorted(state)))]
        key = data.draw(st.sampled_from(sorted(entry) + ["step", "unknown"]))
        how = data.draw(st.sampled_from(["drop", "junk", "scale", "reshape", "dtype"]))
        value = entry.get(key)
        if how == "drop":
            entry.pop(key, None)
        elif how in ("scale", "reshape", "dtype") and isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
            if how == "scale":
                entry[key] = value * data.draw(st.sampled_from([-1.0, 0.5, 1.5]))
            elif how == "reshape":
                entry[key] = value.reshape(-1) if value.ndim != 1 else value[None]
            else:
                entry[key] = value.astype(data.draw(st.sampled_from([np.float16, np.int32, np.complex64])))
        else:
            entry[key] = data.draw(junk)
    elif where == "group":
        group = groups[0]
        key = data.draw(st.sampled_from(sorted(k for k in group if k not in ("params", "param_names")) + ["step"]))
        if data.draw(st.booleans()):
            group.pop(key, None)
        else:
            group[key] = data.draw(junk)
    else:
        how = data.draw(st.sampled_from(["swap", "drop", "empty", "none"]))
        keys = sorted(state)
        if how == "swap" and len(keys) > 1:
            state[keys[0]], state[keys[1]] = state[keys[1]], state[keys[0]]
        elif how == "drop" and keys:
            state.pop(keys[-1])
        elif how == "empty" and keys:
            state[keys[0]] = {}
        elif keys:
            state[keys[0]] = {k: None for k in state[keys[0]]}
    return sd


@FUZZ
@given(data=st.data())
def _fuzz_optimizer(name: str, data) -> None:
    params, sd = _stepped(name)
    for _ in range(data.draw(st.integers(1, 2))):
        sd = _mutate(data, sd)
    opt = _build(name, params)
    opt.load_state_dict(copy.deepcopy(_STEPPED[name][1]))
    before = _snapshot(opt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.load_state_dict(copy.deepcopy(sd))
    except REFUSED as error:
        assert str(error).strip("'\"")
        assert _snapshot(opt) == before
        return
    fresh = _build(name, params)
    fresh.load_state_dict(copy.deepcopy(sd))
    # honoured: the loaded optimizer steps as one built from the dict does (also when both refuse to step, as a
    # schedule-free optimizer loaded in eval mode does)
    assert _outcome(opt) == _outcome(fresh)
    np.testing.assert_equal(_snapshot(opt), _snapshot(fresh))  # NaN equals NaN (a negative moment gives NaN)


def _outcome(opt) -> str:
    """The step's error (type and message), or "" when it stepped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            opt.step(closure=_loss)
        except Exception as error:  # compared between the two optimizers, not judged
            return f"{type(error).__name__}: {error}"
    return ""


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_optimizer_loads_are_refused_cleanly_or_honoured(name):
    _fuzz_optimizer(name)


def _scheduler_mutation(data, sd: dict) -> dict:
    target = sd
    while isinstance(target.get("_schedulers"), list) and data.draw(st.booleans()):
        children = [child for child in target["_schedulers"] if isinstance(child, dict)]
        if not children:
            break
        target = data.draw(st.sampled_from(children))
    key = data.draw(st.sampled_from(sorted(target) + ["unknown"]))
    value = target.get(key)
    how = data.draw(st.sampled_from(["drop", "junk", "item", "append", "pop"]))
    if how == "drop":
        target.pop(key, None)
    elif how in ("item", "append", "pop") and isinstance(value, list) and value:
        if how == "item":
            value[data.draw(st.integers(0, len(value) - 1))] = data.draw(junk)
        elif how == "append":
            value.append(copy.deepcopy(value[-1]))
        else:
            value.pop()
    else:
        target[key] = data.draw(junk)
    return sd


def _scheduler(case, steps=3):
    optimizer = make_optimizer(case.kind)
    scheduler = case.build(lr_scheduler, optimizer)
    for t in range(1, steps + 1):
        case.advance(scheduler, t)
    return optimizer, scheduler


def _groups(optimizer):
    return _plain([{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups])


@FUZZ
@given(data=st.data())
def _fuzz_scheduler(case, data) -> None:
    optimizer, scheduler = _scheduler(case)
    sd = copy.deepcopy(scheduler.state_dict())
    for _ in range(data.draw(st.integers(1, 2))):
        sd = _scheduler_mutation(data, sd)
    before = (_plain(scheduler.state_dict()), _groups(optimizer))
    try:
        scheduler.load_state_dict(copy.deepcopy(sd))
    except REFUSED as error:
        assert str(error).strip("'\"")
        assert (_plain(scheduler.state_dict()), _groups(optimizer)) == before
        return
    fresh_optimizer, fresh = _scheduler(case)  # a twin: keys the dict lacks keep their values, as in torch
    fresh.load_state_dict(copy.deepcopy(sd))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case.advance(scheduler, 4)
        case.advance(fresh, 4)
    np.testing.assert_array_equal(np.asarray(scheduler.get_last_lr(), dtype=float),  # NaN equals NaN here
                                  np.asarray(fresh.get_last_lr(), dtype=float))
    assert repr(_groups(optimizer)) == repr(_groups(fresh_optimizer))


@pytest.mark.parametrize("case", SCHEDULER_CASES, ids=[c.id for c in SCHEDULER_CASES])
def test_scheduler_loads_are_refused_cleanly_or_honoured(case):
    _fuzz_scheduler(case)
