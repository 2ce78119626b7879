"""state_dict / load_state_dict (ours and torch's, both ways, by position and by name), pickling, hooks, errors."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx.optim as optim
from tests.harness import assert_unchanged, snapshot
from tests.test_facade_engine import Lockstep, flat_params, jit_grad, to_numpy, to_torch

NAMES = ["w", "b", "n", "s"]


def stepped(name, steps, **kwargs):
    opt = getattr(optim, name)(flat_params(), **kwargs)
    for _ in range(steps):
        opt.step(jit_grad(opt.params))
    return opt


# --- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
                                         ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True))])
def test_state_dict_round_trip_through_pickle_is_bit_for_bit(name, kwargs):
    uninterrupted = stepped(name, 5, **kwargs)
    first = stepped(name, 2, **kwargs)
    saved = pickle.loads(pickle.dumps(first.state_dict()))
    resumed = getattr(optim, name)(dict(first.params), **kwargs)
    resumed.load_state_dict(saved)
    also = pickle.loads(pickle.dumps(first))  # the optimizer itself pickles too
    for opt in (resumed, also):
        for _ in range(3):
            opt.step(jit_grad(opt.params))
        for a, b in zip(jax.tree.leaves(opt.params), jax.tree.leaves(uninterrupted.params)):
            np.testing.assert_array_equal(a, b)
    assert saved["state"][0].keys() == uninterrupted.state_dict()["state"][0].keys()


def test_state_dict_layout_is_torchs():
    run = Lockstep("Adam", [{"params": ["w", "b"]}, {"params": ["n", "s"], "lr": 0.01, "amsgrad": True}], lr=0.05)
    run.step(only={"w", "n", "s"})
    ours, theirs = run.ours.state_dict(), run.theirs.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys() == {0, 2, 3}
    for index, entry in theirs["state"].items():
        assert list(ours["state"][index]) == list(entry)  # same keys, same order
        for key, value in entry.items():
            assert isinstance(ours["state"][index][key], np.ndarray)
            assert ours["state"][index][key].dtype == value.numpy().dtype
            np.testing.assert_allclose(ours["state"][index][key], value.numpy(), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.05, amsgrad=True)),
                                         ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2))])
def test_torch_state_dict_loads_and_continues_as_torch(name, kwargs):
    run = Lockstep(name, [{"params": NAMES}], **kwargs)
    for _ in range(3):
        run.step()
    fresh = getattr(optim, name)([optim.Parameter(jnp.array(run.boxes[k].data), name=k) for k in NAMES], **kwargs)
    fresh.load_state_dict(to_numpy(run.theirs.state_dict()))
    run.ours = fresh
    run.boxes = {p.name: p for p in fresh.param_groups[0]["params"]}
    for _ in range(3):
        run.step()


@pytest.mark.parametrize("name,kwargs", [("AdamW", dict(lr=0.05, weight_decay=0.1)),
                                         ("SGD", dict(lr=0.05, momentum=0.9))])
def test_our_state_dict_loads_into_torch(name, kwargs):
    run = Lockstep(name, [{"params": NAMES}], **kwargs)
    for _ in range(3):
        run.step()
    tensors = {k: torch.tensor(np.array(run.boxes[k].data), requires_grad=True) for k in NAMES}
    theirs = getattr(torch.optim, name)([tensors[k] for k in NAMES], **kwargs)
    theirs.load_state_dict(to_torch(run.ours.state_dict()))
    run.theirs, run.tensors = theirs, tensors
    for _ in range(3):
        run.step()


def test_load_by_name_survives_reordering():
    first = optim.Adam([(k, v) for k, v in flat_params().items()], lr=0.05)
    for _ in range(2):
        first.step(jit_grad(first.params))
    saved = first.state_dict()
    reordered = optim.Adam([(k, first.params[k]) for k in reversed(NAMES)], lr=0.05)
    result = reordered.load_state_dict(saved, match="name")
    assert result == ([], [])
    for box in reordered.param_groups[0]["params"]:
        original = next(p for p in first.param_groups[0]["params"] if p.name == box.name)
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(reordered.state[box][key], first.state[original][key])
    with pytest.raises(ValueError, match="match='name'"):  # by position, names in another order: refused
        optim.Adam([(k, first.params[k]) for k in reversed(NAMES)], lr=0.05).load_state_dict(saved)


def test_load_by_name_non_strict_reports_keys():
    first = optim.SGD({"a": jnp.ones(2), "b": jnp.ones(3)}, lr=0.1, momentum=0.9)
    first.step({"a": jnp.ones(2), "b": jnp.ones(3)})
    second = optim.SGD({"a": jnp.ones(2), "c": jnp.ones(4)}, lr=0.1, momentum=0.9)
    before = snapshot(second)
    with pytest.raises(ValueError, match="strict=False"):
        second.load_state_dict(first.state_dict(), match="name")
    assert_unchanged(second, before)
    result = second.load_state_dict(first.state_dict(), match="name", strict=False)
    assert result.missing_keys == ["c"] and result.unexpected_keys == ["b"]
    a = second.param_groups[0]["params"][0]
    np.testing.assert_array_equal(second.state[a]["momentum_buffer"], np.ones(2))
    with pytest.raises(ValueError, match="shape"):  # a name with another shape is an error naming it
        optim.SGD({"a": jnp.ones(5)}, lr=0.1, momentum=0.9).load_state_dict(first.state_dict(), match="name",
                                                                             strict=False)


@pytest.mark.parametrize("change,message", [
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), "number of parameter groups"),
    (lambda sd: sd["param_groups"][0]["params"].pop(), "size"),
    (lambda sd: sd["state"][1].update(exp_avg=np.ones((7,))), "shape"),
    (lambda sd: sd["state"][0].update(exp_avg=np.ones((5,), np.complex128)), "complex"),
    (lambda sd: sd["state"][1].update(step=np.ones(3)), "number"),
    (lambda sd: sd["state"].update({9: {}}), "index"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "learning rate"),
    (lambda sd: sd.pop("state"), "keys"),
])
def test_rejected_state_dict_changes_nothing(change, message):
    opt = stepped("Adam", 2, lr=0.05)
    bad = opt.state_dict()
    change(bad)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    assert_unchanged(opt, before)


# --- hooks ---------------------------------------------------------------------------------------------------


def test_step_hooks_see_and_replace_arguments():
    opt = optim.SGD({"x": jnp.ones(2)}, lr=0.5)
    calls = []
    pre = opt.register_step_pre_hook(lambda o, args, kwargs: ((jax.tree.map(lambda g: 2 * g, args[0]),), kwargs))
    post = opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", float(args[0]["x"][0]))))
    glob = optim.register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append("global"))
    try:
        opt.step({"x": jnp.ones(2)})
    finally:
        glob.remove()
    assert calls == ["global", ("post", 2.0)]
    np.testing.assert_allclose(opt.params["x"], 0.0)  # the pre hook doubled the gradient
    pre.remove()
    post.remove()
    opt.step({"x": jnp.ones(2)})
    assert len(calls) == 2
    np.testing.assert_allclose(opt.params["x"], -0.5)
    bad = opt.register_step_pre_hook(lambda o, args, kwargs: "nonsense")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step({"x": jnp.ones(2)})
    bad.remove()


def test_state_dict_hooks():
    opt = stepped("SGD", 1, lr=0.1, momentum=0.9)
    order = []
    opt.register_state_dict_pre_hook(lambda o: order.append("pre"))
    opt.register_state_dict_pre_hook(lambda o: order.append("first"), prepend=True)
    handle = opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    assert opt.state_dict()["extra"] == 1 and order == ["first", "pre"]
    handle.remove()
    assert "extra" not in opt.state_dict()

    loaded = []
    opt.register_load_state_dict_pre_hook(lambda o, sd: {**sd, "param_groups": [
        {**g, "lr": 0.25} for g in sd["param_groups"]]})
    opt.register_load_state_dict_post_hook(lambda o: loaded.append(o.param_groups[0]["lr"]))
    opt.load_state_dict(opt.state_dict())
    assert loaded == [0.25]


# --- pickling ------------------------------------------------------------------------------------------------


def test_pickled_optimizer_keeps_structure_and_drops_hooks():
    opt = stepped("AdamW", 1, lr=0.05)
    opt.register_step_post_hook(lambda *a: None)
    clone = pickle.loads(pickle.dumps(opt))
    assert repr(clone) == repr(opt) and not clone._optimizer_step_post_hooks
    assert jax.tree.structure(clone.params) == jax.tree.structure(opt.params)
    assert [p.name for p in clone.param_groups[0]["params"]] == [p.name for p in opt.param_groups[0]["params"]]
    assert set(clone.state) == set(clone.param_groups[0]["params"])  # state still keyed by the same boxes


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make,error,message", [
    (lambda: optim.SGD([]), ValueError, "empty parameter list"),
    (lambda: optim.SGD({jnp.ones(2).tobytes(): 1} and set()), TypeError, "ordered collections"),
    (lambda: optim.Adam([jnp.ones(2)], lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (lambda: optim.Adam([jnp.ones(2)], betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (lambda: optim.Adam([jnp.ones(2)], betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1"),
    (lambda: optim.Adam([jnp.ones(2)], eps=-1.0), ValueError, "Invalid epsilon value"),
    (lambda: optim.AdamW([jnp.ones(2)], weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
    (lambda: optim.SGD([jnp.ones(2)], momentum=-0.5), ValueError, "Invalid momentum value"),
    (lambda: optim.SGD([jnp.ones(2)], nesterov=True), ValueError, "Nesterov momentum requires"),
    (lambda: optim.Adam([jnp.ones(2)], fused=True, foreach=True), RuntimeError, "cannot be `True` together"),
    (lambda: optim.Adam([jnp.ones(2)], fused=True, differentiable=True), RuntimeError, "does not support"),
    (lambda: optim.SGD([jnp.ones(2), 3.0]), TypeError, "can only optimize"),
    (lambda: optim.SGD([jnp.arange(2)]), TypeError, "floating point or complex"),
    (lambda: optim.SGD([("a", jnp.ones(2)), jnp.ones(2)]), ValueError, "with/without names"),
])
def test_bad_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_duplicate_parameters():
    p, q = optim.Parameter(jnp.ones(2)), optim.Parameter(jnp.ones(2))
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [q, p]}])
    with pytest.raises(ValueError, match="duplicate parameters"):
        optim.SGD([p, q, p])
    opt = optim.SGD([p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [q, p]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="Invalid learning rate"):  # group options are checked too
        opt.add_param_group({"params": [q], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("grads,message", [
    ({"w": jnp.ones((4, 3))}, "structure"),
    ({"w": jnp.ones((3, 4)), "b": jnp.ones(5)}, "shape"),
    ({"w": jnp.ones((4, 3), jnp.float32), "b": jnp.ones(5)}, "dtype"),
    ({"w": "nope", "b": jnp.ones(5)}, "must be an array"),
])
def test_bad_grads_change_nothing(grads, message):
    opt = optim.Adam({"w": jnp.ones((4, 3)), "b": jnp.ones(5)}, lr=0.1)
    opt.step({"w": jnp.ones((4, 3)), "b": None})
    before = snapshot(opt)
    with pytest.raises((ValueError, TypeError), match=message):
        opt.step(grads)
    assert_unchanged(opt, before)
    assert opt.param_groups[0]["params"][1].name == "b" and opt.param_groups[0]["params"][1].grad is None
