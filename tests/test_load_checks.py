"""``load_state_dict``: a loaded state gives exactly torch's numbers, or is refused at load and changes nothing.

Refused: another optimizer's state dict, an entry missing part of the state
(torch's next step raises KeyError there: checked against live torch), a negative
or fractional step count, entries of the wrong shape or kind. Honoured as torch
honours them (checked against live torch 2.13): old SGD's
``{"momentum_buffer": None}`` and keys the optimizer does not keep.
"""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx.optim as optim
from gradtx.optim import from_torch_state_dict, to_torch_state_dict
from tests.harness import TOLERANCES, assert_unchanged, snapshot

GRADS = [np.array([0.5, -0.25, 1.0]), np.array([[0.3, -0.1], [0.2, 0.7]])]
START = [np.array([1.0, -2.0, 0.5]), np.array([[0.1, 0.2], [-0.3, 0.4]])]


def _ours(name, steps=2, **options):
    opt = getattr(optim, name)([("w", jnp.asarray(START[0])), ("m", jnp.asarray(START[1]))], lr=0.1, **options)
    for i in range(steps):
        opt.step({"w": jnp.asarray(GRADS[0] * (i + 1)), "m": jnp.asarray(GRADS[1] * (i + 1))})
    return opt


def _torch(name, steps=2, **options):
    params = [torch.nn.Parameter(torch.tensor(x)) for x in START]
    opt = getattr(torch.optim, name)(params, lr=0.1, **options)
    for i in range(steps):
        for p, g in zip(params, GRADS):
            p.grad = torch.tensor(g * (i + 1))
        opt.step()
    return opt, params


def _entry(key, edit):
    def change(sd):
        edit(sd["state"][0], key)
        return sd
    return change


def _from(name, **options):
    return lambda sd: _ours(name, **options).state_dict()


def _entries_from(name, **options):
    def change(sd):
        sd["state"] = _ours(name, **options).state_dict()["state"]
        return sd
    return change


def _group(edit):
    def change(sd):
        edit(sd["param_groups"][0])
        return sd
    return change


# (what, the optimizer and its options, the change to its own state dict, error, what the message names)
REFUSED = [
    ("SGD's state dict into Adam", ("Adam", {}), _from("SGD", momentum=0.9), KeyError,
     r"param group 0 of the state dict has no option\(s\) \['betas', 'eps'\].*saved by another optimizer"),
    ("RMSprop's state dict into Adam", ("Adam", {}), _from("RMSprop"), KeyError,
     r"no option\(s\) \['betas'\].*'alpha'.*saved by another optimizer"),
    ("RMSprop's entries under Adam's groups", ("Adam", {}), _entries_from("RMSprop"), KeyError,
     r"parameter 'w' \(saved index 0\): Adam .* lacks \['exp_avg', 'exp_avg_sq'\].*'square_avg'"),
    ("SGD's entries under Adam's groups", ("Adam", {}), _entries_from("SGD", momentum=0.9), KeyError,
     r"parameter 'w' \(saved index 0\).*lacks \['step', 'exp_avg', 'exp_avg_sq'\]"),
    ("an Adam entry without exp_avg", ("Adam", {}), _entry("exp_avg", lambda e, k: e.pop(k)), KeyError,
     r"parameter 'w' \(saved index 0\).*lacks \['exp_avg'\] \(it has \['step', 'exp_avg_sq'\]\)"),
    ("an Adam entry without step", ("Adam", {}), _entry("step", lambda e, k: e.pop(k)), KeyError,
     r"lacks \['step'\]"),
    ("an AMSGrad entry without its maximum", ("Adam", dict(amsgrad=True)),
     _entry("max_exp_avg_sq", lambda e, k: e.pop(k)), KeyError, r"lacks \['max_exp_avg_sq'\]"),
    ("an Adam entry whose exp_avg is None", ("Adam", {}), _entry("exp_avg", lambda e, k: e.update({k: None})),
     KeyError, r"lacks \['exp_avg'\]"),
    ("a negative step", ("Adam", {}), _entry("step", lambda e, k: e.update({k: np.float32(-1)})), ValueError,
     r"parameter 'w' \(saved index 0\): 'step' is -1.0, but a step count is a non-negative whole number"),
    ("a fractional step", ("Adam", {}), _entry("step", lambda e, k: e.update({k: np.float32(2.5)})), ValueError,
     r"'step' is 2.5.*gradtx counts steps in integers"),
    ("an infinite step", ("RMSprop", {}), _entry("step", lambda e, k: e.update({k: np.float64(np.inf)})),
     ValueError, r"'step' is inf"),
    ("a moment of another shape", ("Adam", {}), _entry("exp_avg", lambda e, k: e.update({k: np.ones(7)})),
     ValueError, (r"parameter 'w' \(saved index 0\): 'exp_avg' has shape \(7,\), but this optimizer keeps it with "
                  r"shape \(3,\)")),
    ("a complex moment for a real parameter", ("Adam", {}),
     _entry("exp_avg_sq", lambda e, k: e.update({k: e[k] + 1j})), ValueError, "'exp_avg_sq' is complex"),
    ("a string moment", ("SGD", dict(momentum=0.9)),
     _entry("momentum_buffer", lambda e, k: e.update({k: np.array(["a", "b", "c"])})), ValueError,
     "'momentum_buffer' must be a numeric array"),
    ("a group without lr", ("Adam", {}), _group(lambda g: g.pop("lr")), KeyError,
     r"param group 0 of the state dict has no option\(s\) \['lr'\]"),
    ("a group-kept negative step", ("ADOPT", {}), _group(lambda g: g.update(step=-2)), ValueError,
     r"param group 0 of the state dict: 'step' is -2.0"),
]


@pytest.mark.parametrize("what,optimizer,change,error,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_state_that_cannot_be_honoured_is_refused_at_load_and_changes_nothing(what, optimizer, change, error,
                                                                                 message):
    name, options = optimizer
    opt = _ours(name, **options)
    bad = change(copy.deepcopy(opt.state_dict()))
    before = snapshot(opt)
    with pytest.raises(error, match=message):
        opt.load_state_dict(bad)
    assert_unchanged(opt, before)
    opt.step({"w": jnp.asarray(GRADS[0]), "m": jnp.asarray(GRADS[1])})  # and it still steps


# Refusals above that torch makes at its load or only at its next step: torch raises the same type.
TORCH_REFUSES = [
    ("SGD's entries under Adam's groups", "Adam", {}, lambda sd: sd.update(
        state=to_torch_state_dict(_ours("SGD", momentum=0.9).state_dict())["state"]), KeyError),
    ("an Adam entry without exp_avg", "Adam", {}, lambda sd: sd["state"][0].pop("exp_avg"), KeyError),
    ("a group without lr", "Adam", {}, lambda sd: sd["param_groups"][0].pop("lr"), KeyError),
]


@pytest.mark.parametrize("what,name,options,change,error", TORCH_REFUSES, ids=[t[0] for t in TORCH_REFUSES])
def test_torch_raises_the_same_type_at_its_load_or_next_step(what, name, options, change, error):
    opt, _ = _torch(name, **options)
    sd = copy.deepcopy(opt.state_dict())
    change(sd)
    with pytest.raises(error):
        opt.load_state_dict(sd)
        opt.step()


def _continue_both(name, options, change, steps=4):
    """Both libraries load the same edited torch state dict and take ``steps`` more steps; their parameters."""
    theirs, params = _torch(name, **options)
    sd = copy.deepcopy(theirs.state_dict())
    change(sd)
    ours = _ours(name, **options)  # the same two steps: the same parameters
    ours.load_state_dict(from_torch_state_dict(copy.deepcopy(sd)))
    theirs.load_state_dict(sd)
    for i in range(steps):
        for p, g in zip(params, GRADS):
            p.grad = torch.tensor(g * (i + 3) - 0.4)
        theirs.step()
        ours.step({"w": jnp.asarray(GRADS[0] * (i + 3) - 0.4), "m": jnp.asarray(GRADS[1] * (i + 3) - 0.4)})
    return ours, theirs, params


HONOURED = [
    ("old SGD's None momentum buffer", "SGD", dict(momentum=0.9, dampening=0.1),
     lambda sd: sd["state"][0].update(momentum_buffer=None)),
    ("old SGD's None buffer, Nesterov", "SGD", dict(momentum=0.9, nesterov=True),
     lambda sd: sd["state"][1].update(momentum_buffer=None)),
    ("a key Adam does not keep", "Adam", {}, lambda sd: sd["state"][0].update(note=torch.ones(3), tag="kept")),
    ("an empty entry", "Adam", dict(amsgrad=True), lambda sd: sd["state"].update({1: {}})),
    ("a step of zero", "Adam", {}, lambda sd: sd["state"][0].update(step=torch.tensor(0.0))),
    ("an integer moment", "RMSprop", dict(momentum=0.5),
     lambda sd: sd["state"][0].update(momentum_buffer=torch.tensor([1, -2, 3]))),
]


@pytest.mark.parametrize("what,name,options,change", HONOURED, ids=[h[0] for h in HONOURED])
def test_a_state_torch_accepts_gives_torchs_numbers(what, name, options, change):
    ours, theirs, params = _continue_both(name, options, change)
    tol = TOLERANCES["float64"]
    for p, q in zip(ours.param_groups[0]["params"], params):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=tol["rtol"], atol=tol["atol"])
    saved = ours.state_dict()["state"]
    for index, entry in theirs.state_dict()["state"].items():  # kept keys are carried, as torch carries them
        assert set(saved[index]) == set(entry)
