"""Errors say where: tree paths and hyperparameters in the functional face, paths (never arrays) in the facade,
the real parameter paths when a ``path_groups`` rule matches nothing; pickles name no private jax function."""

from __future__ import annotations

import io
import pickle
import pickletools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
import gradtx.optim as optim
from gradtx.optim import Parameter

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
ALIASES = {
    "adam": lambda: gradtx.adam(0.1),
    "adamw": lambda: gradtx.adamw(0.1),
    "sgd": lambda: gradtx.sgd(0.1, momentum=0.9),
    "rmsprop": lambda: gradtx.rmsprop(0.1),
}


def _update(tx, grads, state_for=PARAMS, params=PARAMS):
    return tx.update(grads, tx.init(state_for), params)


# (what, the call, error type, what the message names)
FUNCTIONAL = [
    ("gradients of another structure", lambda tx: _update(tx, {"w": PARAMS["w"]}), ValueError,
     r"missing from updates: \['b'\]"),
    ("gradients with a leaf more", lambda tx: _update(tx, {**PARAMS, "c": jnp.ones(1)}), ValueError,
     r"not in params: \['c'\]"),
    ("a gradient of another shape", lambda tx: _update(tx, {"w": PARAMS["w"], "b": jnp.ones(3)}), TypeError,
     r"at 'b' \(shapes: .*the gradients \(3,\)"),
    ("a state built for other params", lambda tx: _update(tx, PARAMS, state_for={"w": PARAMS["w"]}), ValueError,
     r"the state \(built by init for other params\?\).*\['b'\]"),
    ("a state built for other shapes", lambda tx: _update(tx, PARAMS, state_for={"w": PARAMS["w"], "b": jnp.ones(5)}),
     TypeError, r"at 'b' \(shapes: .*the state \(built by init for other params\?\) \(5,\)"),
    ("a state built for other shapes, no params",
     lambda tx: _update(tx, PARAMS, state_for={"w": PARAMS["w"], "b": jnp.ones(5)}, params=None), TypeError,
     r"at 'b'.*\(5,\)"),
]


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("what,call,error,message", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_shape_and_structure_errors_name_the_path(alias, what, call, error, message):
    with pytest.raises(error, match=message):
        call(ALIASES[alias]())


@pytest.mark.parametrize("make,message", [
    (lambda: gradtx.adam(0.1, b1=jnp.ones(4)), r"It failed at 'b'.*hyperparameter given as an array"),
    (lambda: gradtx.adam(jnp.ones(3)), r"It failed at 'b'.*hyperparameter given as an array"),
    (lambda: gradtx.sgd(0.1, momentum=jnp.ones(4)), r"at 'b'.*hyperparameter given as an array"),
])
def test_a_hyperparameter_array_that_fits_no_parameter_names_the_path(make, message):
    with pytest.raises(TypeError, match=message):
        _update(make(), PARAMS)


@pytest.mark.parametrize("make", [lambda: gradtx.adamw(0.1, mask={"w": True}),
                                  lambda: gradtx.masked(gradtx.sgd(0.1), {"w": True, "c": False})])
def test_a_mask_of_another_structure_shows_both_paths(make):
    with pytest.raises(ValueError, match=r"the mask .* the mask has paths \[('c', )?'w'\], the params \['b', 'w'\]"):
        _update(make(), PARAMS)


def test_apply_updates_names_the_path():
    with pytest.raises(ValueError, match=r"updates at 'b' has shape \(1,\)"):
        gradtx.apply_updates(PARAMS, {"w": PARAMS["w"], "b": jnp.ones(1)})


@pytest.mark.parametrize("grads,message", [
    ([jnp.ones((3, 2)), jnp.ones(2)], (r"opt.params is a dict with 2 parameter\(s\) at \['b', 'w'\]; grads a list "
                                       r"with 2 leaf\(s\) at \['0', '1'\]; grads lack \['b', 'w'\]")),
    ({"w": jnp.ones((3, 2))}, r"grads lack \['b'\]"),
    ({"w": jnp.ones((3, 2)), "b": jnp.ones(2), "c": jnp.ones(4)}, r"grads have \['c'\], which opt.params does not"),
])
def test_the_facades_gradient_structure_error_prints_paths_not_arrays(grads, message):
    opt = optim.Adam({k: jnp.array(v) for k, v in PARAMS.items()}, lr=0.1)
    with pytest.raises(ValueError, match=message) as info:
        opt.step(grads)
    assert "Array(" not in str(info.value) and "[[" not in str(info.value)


def test_a_rule_matching_nothing_shows_the_real_paths():
    nnx_like = {"layer": {"kernel": {"value": jnp.ones((2, 2))}, "bias": {"value": jnp.ones(2)}}}
    with pytest.raises(ValueError, match=r"rules match no parameter: '\*\*/bias'. The parameters' paths are "
                                         r"'layer/bias/value', 'layer/kernel/value' \(flax nnx paths end in '/value'"):
        optim.path_groups(nnx_like, {"**/bias": {"weight_decay": 0.0}}, default={})


# --- pickles ------------------------------------------------------------------------------------------------

class _WithoutBoxes(pickle.Pickler):
    """Pickles an optimizer with its Parameter boxes left out (they pickle themselves): its own arrays only."""

    def persistent_id(self, obj):
        return id(obj) if isinstance(obj, Parameter) else None


def _private_jax_names(data: bytes) -> set:
    return {arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str) and "jax._src" in arg}


def _stepped(name, **options):
    opt = getattr(optim, name)({k: jnp.array(v) for k, v in PARAMS.items()}, lr=0.1, **options)
    opt.param_groups[0]["lr"] = jnp.asarray(0.05)  # an option held as a jax array
    _step(opt)
    return opt


def _step(opt):
    if isinstance(opt, optim.LBFGS):
        return opt.step(closure=lambda p: sum(jnp.sum((x - 0.5) ** 4) for x in jax.tree.leaves(p)))
    return opt.step({"w": jnp.full((3, 2), 0.3), "b": jnp.full(2, -0.2)})


PICKLED = [("Adam", dict(amsgrad=True)), ("SGD", dict(momentum=0.9)), ("LBFGS", {}), ("Prodigy", {})]


@pytest.mark.parametrize("name,options", PICKLED, ids=[p[0] for p in PICKLED])
def test_an_optimizers_own_pickled_arrays_are_numpy(name, options):
    buffer = io.BytesIO()
    _WithoutBoxes(buffer).dump(_stepped(name, **options))
    assert _private_jax_names(buffer.getvalue()) == set()


def test_a_whole_optimizer_pickle_names_no_private_jax_function():
    assert _private_jax_names(pickle.dumps(_stepped("Adam"))) == set()


@pytest.mark.parametrize("name,options", PICKLED, ids=[p[0] for p in PICKLED])
def test_a_pickle_round_trip_steps_identically(name, options):
    opt = _stepped(name, **options)
    copy = pickle.loads(pickle.dumps(opt))
    for a in (opt, copy):
        _step(a)
        _step(a)
    for a, b in zip(jax.tree.leaves(opt.params), jax.tree.leaves(copy.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ours, theirs = opt.state_dict(), copy.state_dict()
    assert repr(ours["param_groups"]) == repr(theirs["param_groups"])
    for index, entry in ours["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(np.asarray(theirs["state"][index][key], dtype=object),
                                          np.asarray(value, dtype=object))
