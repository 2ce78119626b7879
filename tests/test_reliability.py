"""Nothing lost on resume, bad state dicts rejected cleanly, facade == functional == every tier.

- Every facade optimizer and every scheduler resumes from its ``state_dict`` (through
  pickle and through ``gradtx.save_state_dict_npz``) exactly as the uninterrupted run goes on.
- ``load_state_dict`` is fuzzed with malformed dicts: it loads or raises a ValueError,
  KeyError or TypeError, and a rejected dict changes nothing.
- Over random trees and hyperparameters, the facade's tiers agree bit for bit and equal the
  functional chain within the parity tolerances.
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx
from gradtx import optim
from gradtx.optim import _engine, lr_scheduler
from tests import harness
from tests.cases import OPTIMIZERS
from tests.test_lr_scheduler import CASES as SCHEDULER_CASES

jit_grad = jax.jit(harness.grad_fn)


def make_params(seed: int = 0, matrices_only: bool = False) -> dict:
    """Tiny parameters of mixed dtypes (matrices only for a record whose params are "matrices")."""
    rng = np.random.default_rng(seed)
    if matrices_only:
        return {"v": jnp.asarray(rng.normal(size=(3, 3)), jnp.float64),
                "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    return {"b": jnp.asarray(rng.normal(size=5), jnp.float64), "s": jnp.asarray(rng.normal(), jnp.float32),
            "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}


def build(info, params: dict) -> optim.Optimizer:
    """The record's class with the options that give it the most state (and the mesh it asks for)."""
    kwargs = dict(info.state_options)
    if info.needs_mesh:  # state split over 2 of the 8 simulated devices (see conftest)
        kwargs["mesh"] = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    opt = info.cls({k: jnp.array(v) for k, v in params.items()}, **kwargs)
    if info.train_mode:
        opt.train()
    return opt


def take_steps(info, opt: optim.Optimizer, n: int) -> None:
    for _ in range(n):
        if info.closure:
            opt.step(harness.loss)
        else:
            opt.step(jit_grad(opt.params))


def round_trip(state_dict: dict, kind: str, path) -> dict:
    if kind == "pickle":
        return pickle.loads(pickle.dumps(state_dict))
    gradtx.save_state_dict_npz(path, state_dict)
    return gradtx.load_state_dict_npz(path)


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)


def assert_identical(actual, expected, where: str = "") -> None:
    """Equal values of equal types, arrays bit for bit with equal dtypes, dicts with keys in the same order."""
    if isinstance(expected, (np.ndarray, jax.Array, np.generic)):
        assert isinstance(actual, (np.ndarray, jax.Array, np.generic)), where
        assert np.asarray(actual).dtype == np.asarray(expected).dtype, where
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected), err_msg=where)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), f"{where}: {list(actual)} != {list(expected)}"
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and (actual == expected or _both_nan(actual, expected)), f"{where}: {actual!r}"


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_every_optimizer_resumes_bit_for_bit(info, tmp_path):
    """3 steps, save, rebuild, load, 2 more steps == 5 uninterrupted steps: params and every state entry."""
    start = make_params(matrices_only=info.params == "matrices")
    straight = build(info, start)
    take_steps(info, straight, 5)
    first = build(info, start)
    take_steps(info, first, 3)
    saved, at = first.state_dict(), {k: np.array(v) for k, v in first.params.items()}
    for kind in ("pickle", "npz"):
        resumed = build(info, at)
        resumed.load_state_dict(round_trip(saved, kind, tmp_path / "opt.npz"))
        assert_identical(resumed.state_dict(), saved, kind)
        take_steps(info, resumed, 2)
        for key, value in straight.params.items():
            np.testing.assert_array_equal(resumed.params[key], value, err_msg=f"{kind}: {key}")
        assert_identical(resumed.state_dict(), straight.state_dict(), kind)
        for p, q in zip(resumed.param_groups[0]["params"], straight.param_groups[0]["params"]):
            as_arrays = lambda state: {k: v if isinstance(v, (list, tuple)) else np.asarray(v)  # noqa: E731
                                       for k, v in state.items()}  # lists: Kron's factors and einsum strings
            assert_identical(as_arrays(resumed.state[p]), as_arrays(straight.state[q]), f"{kind}: state")


# --- schedulers ----------------------------------------------------------------------------------------------


def scheduled_optimizer(kind: str, params: dict) -> optim.Optimizer:
    """Two groups with different lrs, as the scheduler parity table uses."""
    groups = [{"params": [("w", jnp.array(params["w"]))], "lr": 0.1},
              {"params": [("b", jnp.array(params["b"]))], "lr": 0.02}]
    return optim.SGD(groups, lr=0.1, momentum=0.9) if kind == "sgd" else optim.Adam(groups)


def run_scheduled(case, opt, scheduler, first: int, steps: int) -> list:
    """Steps the optimizer and the scheduler; the lrs, momenta and parameters after each step."""
    out = []
    for t in range(first, first + steps):
        opt.step(jit_grad(opt.params))
        case.advance(scheduler, t)
        groups = opt.param_groups
        out.append(([g["lr"] for g in groups], [g["betas"] if "betas" in g else g["momentum"] for g in groups],
                    [np.array(x) for x in jax.tree.leaves(opt.params)]))
    return out


def test_every_scheduler_is_covered():
    covered = {type(case.build(lr_scheduler, scheduled_optimizer(case.kind, make_params()))).__name__
               for case in SCHEDULER_CASES}
    assert covered == set(lr_scheduler.__all__) - {"LRScheduler"}


@pytest.mark.parametrize("case", SCHEDULER_CASES, ids=lambda c: c.id)
def test_every_scheduler_resumes_bit_for_bit(case, tmp_path):
    """12 steps, save optimizer and scheduler, rebuild both, load, 8 more == 20 uninterrupted steps."""
    start = make_params()
    opt = scheduled_optimizer(case.kind, start)
    straight = run_scheduled(case, opt, case.build(lr_scheduler, opt), 1, 20)
    opt = scheduled_optimizer(case.kind, start)
    scheduler = case.build(lr_scheduler, opt)
    run_scheduled(case, opt, scheduler, 1, 12)
    saved = opt.state_dict(), scheduler.state_dict()
    at = {n: np.array(p.data) for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])}
    for kind in ("pickle", "npz"):
        opt = scheduled_optimizer(case.kind, at)
        opt.load_state_dict(round_trip(saved[0], kind, tmp_path / "opt.npz"))
        scheduler = case.build(lr_scheduler, opt)
        scheduler.load_state_dict(round_trip(saved[1], kind, tmp_path / "scheduler.npz"))
        resumed = run_scheduled(case, opt, scheduler, 13, 8)
        assert_identical(resumed, straight[12:], kind)


# --- load_state_dict under malformed dicts (hypothesis) ------------------------------------------------------

# GRADTX_FUZZ_EXAMPLES=2000 fuzzes deeper than the 60 examples a test run takes.
FUZZ = settings(max_examples=int(os.environ.get("GRADTX_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=list(HealthCheck))

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(), st.text(max_size=3), st.just(1 + 2j),
    st.lists(st.integers(-2, 6), max_size=3), st.tuples(st.floats(0, 1), st.floats(0, 1)),
    st.dictionaries(st.sampled_from(["step", "exp_avg", "lr", "params", 0]), st.integers(0, 3), max_size=2),
    st.builds(lambda shape, dtype: np.ones(shape, dtype), st.lists(st.integers(0, 4), max_size=3).map(tuple),
              st.sampled_from([np.float32, np.float64, np.int32, np.bool_, np.complex64, "U1", object])),
    st.just(object()), st.just(lambda count: 0.1),
)


def fuzz_optimizer(kind: str) -> optim.Optimizer:
    """A stepped optimizer with state: two named groups (one with AMSGrad, one parameter never stepped), an
    unnamed SGD, or Adafactor (state of other shapes than the parameters')."""
    params = make_params()
    if kind == "sgd":
        opt = optim.SGD([jnp.array(v) for v in params.values()], lr=0.1, momentum=0.9)
    elif kind == "adafactor":
        opt = optim.Adafactor({k: jnp.array(v) for k, v in params.items()}, lr=0.05)
    else:
        opt = optim.Adam([{"params": [("w", jnp.array(params["w"])), ("s", jnp.array(params["s"]))]},
                          {"params": [("b", jnp.array(params["b"]))], "lr": 0.01, "amsgrad": True}], lr=0.05)
    boxes = [p for g in opt.param_groups for p in g["params"]]
    for _ in range(2):
        grads = jit_grad([p.data for p in boxes])
        for p, g in zip(boxes, grads):
            p.grad = None if p.shape == () and kind == "adam" else g
        opt.step()
    return opt


def _plain(value):
    """A deep copy with arrays as NumPy copies, to compare against later."""
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.array(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def snapshot(opt: optim.Optimizer) -> tuple:
    boxes = [p for g in opt.param_groups for p in g["params"]]
    groups = [{k: [id(p) for p in v] if k == "params" else _plain(v) for k, v in g.items()} for g in opt.param_groups]
    state = {id(p): _plain(dict(entry)) for p, entry in opt.state.items()}
    return [np.array(p.data) for p in boxes], [id(p) for p in boxes], groups, state


def mutate(data, sd):
    """One random malformation of a state dict (or of any level inside it); returns the new dict."""
    groups, state = sd.get("param_groups"), sd.get("state")
    group = data.draw(st.sampled_from(groups)) if isinstance(groups, list) and groups else None
    entry = data.draw(st.sampled_from(list(state))) if isinstance(state, dict) and state else None
    options = ["entry", "array"] if entry is not None and isinstance(state[entry], dict) else []
    options += ["params", "names", "group"] if isinstance(group, dict) else []
    options += ["state"] if isinstance(state, dict) else []
    options += ["groups"] if isinstance(groups, list) else []
    options += ["top", "root"]  # the deepest first: hypothesis draws the first options most
    where = data.draw(st.sampled_from(options))
    if where == "root":
        return data.draw(junk)
    if where == "top":
        key = data.draw(st.sampled_from(["state", "param_groups", "extra"]))
        if key in sd and data.draw(st.booleans()):
            del sd[key]
        else:
            sd[key] = data.draw(junk)
    elif where == "groups":
        how = data.draw(st.sampled_from(["junk", "append", "pop", "reverse", "item"]))
        if how == "junk":
            sd["param_groups"] = data.draw(junk)
        elif how == "append":
            groups.append(copy.deepcopy(groups[0]) if groups else {"params": []})
        elif how == "pop" and groups:
            groups.pop()
        elif how == "reverse":
            groups.reverse()
        elif groups:
            groups[data.draw(st.integers(0, len(groups) - 1))] = data.draw(junk)
    elif where == "group":
        key = data.draw(st.sampled_from([*group, "unknown", 0]))
        if key in group and data.draw(st.booleans()):
            del group[key]
        else:
            group[key] = data.draw(junk)
    elif where in ("params", "names"):
        key = "params" if where == "params" else "param_names"
        values = group.get(key)
        how = data.draw(st.sampled_from(["junk", "pop", "append", "item"]))
        if how == "junk" or not isinstance(values, list) or not values:
            group[key] = data.draw(junk)
        elif how == "pop":
            values.pop()
        elif how == "append":
            values.append(data.draw(st.sampled_from([values[0], 7, "w", "new"])))
        else:
            values[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.one_of(junk, st.sampled_from(values)))
    elif where == "state":
        how = data.draw(st.sampled_from(["junk", "drop", "add", "swap"]))
        if how == "junk":
            sd["state"] = data.draw(junk)
        elif how == "drop" and state:
            del state[data.draw(st.sampled_from(list(state)))]
        elif how == "add":
            key = data.draw(st.one_of(st.integers(-1, 5), st.text(max_size=2)))
            state[key] = data.draw(st.one_of(junk, st.sampled_from(list(state.values()) or [{}])))
        elif len(state) > 1:
            a, b = data.draw(st.permutations(list(state)))[:2]
            state[a], state[b] = state[b], state[a]
    elif where == "entry":
        target = state[entry]
        key = data.draw(st.sampled_from([*target, "step", "unknown", 0]))
        if key in target and data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(junk)
    else:  # an array of the wrong dtype or shape
        target = state[entry]
        key = data.draw(st.sampled_from(list(target) or ["step"]))
        value = np.asarray(target.get(key, 0.0))
        value = value if value.dtype.kind in "biufc" else np.zeros(())  # junk put there by an earlier mutation
        how = data.draw(st.sampled_from(["dtype", "extra axis", "flatten", "empty"]))
        if how == "dtype":
            dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.bool_, np.complex128,
                                               np.uint64]))
            with np.errstate(all="ignore"), warnings.catch_warnings():  # NaN to int, complex to real: junk is fine
                warnings.simplefilter("ignore")
                target[key] = value.astype(dtype)
        elif how == "extra axis":
            target[key] = value[None]
        elif how == "flatten":
            target[key] = value.reshape(-1)
        else:
            target[key] = np.zeros((0,), value.dtype)
    return sd


@FUZZ
@given(st.data(), st.sampled_from(["adam", "sgd", "adafactor"]), st.sampled_from(["position", "name"]), st.booleans())
def test_load_state_dict_fuzz_loads_or_rejects_cleanly(data, kind, match, strict):
    """A malformed dict either loads, or raises a ValueError/KeyError/TypeError with a message and changes nothing."""
    opt = fuzz_optimizer(kind)
    sd = opt.state_dict()
    for _ in range(data.draw(st.integers(1, 3))):
        sd = mutate(data, sd) if isinstance(sd, dict) else sd
    before = snapshot(opt)
    try:
        opt.load_state_dict(sd, match=match, strict=strict)
    except (ValueError, KeyError, TypeError) as error:
        assert str(error).strip("'\"")
        after = snapshot(opt)
        for a, b in zip(after[0], before[0]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert after[1] == before[1]
        assert_identical(after[2], before[2], "param_groups")
        assert_identical(after[3], before[3], "state")
    else:  # a dict that loads leaves an optimizer whose state dict and repr still work
        assert isinstance(opt.state_dict(), dict) and repr(opt)


@pytest.mark.parametrize("key,value,error,message", [
    ("exp_avg", np.full((4, 3), 1e300), ValueError, "overflow float32"),
    ("step", np.float64(1e300), ValueError, "overflow float32"),
    ("exp_avg", np.full((4, 3), "x"), ValueError, "numeric array"),
    (0, np.ones((4, 3)), TypeError, "not names"),
])
def test_rejected_entries(key, value, error, message):
    """Found by the fuzz: values that would overflow the state's dtype, non-numeric arrays, non-string names."""
    opt = fuzz_optimizer("adam")
    bad = opt.state_dict()
    bad["state"][0][key] = value
    before = snapshot(opt)
    with pytest.raises(error, match=message):
        opt.load_state_dict(bad)
    assert_identical(snapshot(opt)[2:], before[2:])


# --- facade == functional == every tier (hypothesis) ---------------------------------------------------------

PROPERTY = settings(max_examples=int(os.environ.get("GRADTX_PROPERTY_EXAMPLES", "6")), deadline=None,
                    suppress_health_check=list(HealthCheck))

rates = st.floats(1e-3, 0.3)
fractions = st.floats(0.0, 0.95)
decays = st.sampled_from([0.0]) | st.floats(1e-4, 0.3)


@st.composite
def sgd_options(draw):
    nesterov = draw(st.booleans())
    momentum = draw(st.floats(0.1, 0.95)) if nesterov else draw(fractions)
    return "SGD", {"lr": draw(rates), "momentum": momentum, "dampening": 0.0 if nesterov else draw(fractions),
                   "weight_decay": draw(decays), "nesterov": nesterov, "maximize": draw(st.booleans())}


def adam_like(name):
    return st.builds(lambda lr, b1, b2, eps, wd, amsgrad: (name, {"lr": lr, "betas": (b1, b2), "eps": eps,
                                                                  "weight_decay": wd, "amsgrad": amsgrad}),
                     rates, fractions, st.floats(0.5, 0.999), st.floats(1e-10, 1e-3), decays, st.booleans())


hyperparameters = st.one_of(
    sgd_options(), adam_like("Adam"), adam_like("AdamW"),
    st.builds(lambda lr, alpha, eps, wd, momentum, centered: (
        "RMSprop", {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": wd, "momentum": momentum,
                    "centered": centered}), rates, st.floats(0.5, 0.999), st.floats(1e-10, 1e-3), decays, fractions,
        st.booleans()),
    st.builds(lambda lr, lr_decay, wd, initial, eps: (
        "Adagrad", {"lr": lr, "lr_decay": lr_decay, "weight_decay": wd, "initial_accumulator_value": initial,
                    "eps": eps}), rates, st.floats(0.0, 0.1), decays, st.floats(0.0, 1.0), st.floats(1e-10, 1e-3)),
)


@st.composite
def leaves(draw):
    """1 to 3 float32/float64 leaves of small shapes (0-d included)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shapes = st.sampled_from([(), (3,), (2, 3), (1, 4, 2)])
    return [jnp.asarray(rng.normal(size=draw(shapes)), draw(st.sampled_from([jnp.float32, jnp.float64])))
            for _ in range(draw(st.integers(1, 3)))]


def functional_run(cls, options: dict, start: list, steps: int) -> list:
    """The declaration's chain, applied to each leaf with its own state, jitted: what the facade must equal."""
    accepted = _engine.routed_options(cls) | {f"use_{option}" for option in cls.switches}
    tx = cls.chain_builder(**{k: v for k, v in options.items() if k in accepted})

    @jax.jit
    def step(params, states):
        grads = jax.grad(harness.loss)(params)
        out = [tx.update(g, s, p) for g, s, p in zip(grads, states, params)]
        return gradtx.apply_updates(params, [u for u, _ in out]), [s for _, s in out]

    params, states = list(start), [tx.init(p) for p in start]
    for _ in range(steps):
        params, states = step(params, states)
    return params


@PROPERTY
@given(leaves(), hyperparameters)
def test_facade_equals_functional_in_every_tier(start, choice):
    name, options = choice
    cls = getattr(optim, name)
    tiers = {"fused": {}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
    results = {}
    for tier, flags in tiers.items():
        opt = cls([jnp.array(p) for p in start], **options, **flags)
        for _ in range(3):
            opt.step(jit_grad(opt.params))
        results[tier] = [np.array(p) for p in opt.params]
    for tier in ("foreach", "for-loop"):
        for a, b in zip(results[tier], results["fused"]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {options}: {tier} differs from fused")
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}  # with the class's defaults
    expected = functional_run(cls, group, start, 3)
    for i, (a, e) in enumerate(zip(results["fused"], expected)):
        assert a.dtype == e.dtype
        dtype = str(e.dtype)
        harness.assert_trees_close(a, e, dtype, f"{name} {options}: leaf {i}")
