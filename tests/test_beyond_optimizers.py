"""Optimizers beyond torch.optim and optax's core against their reference packages, where the shared tables cannot
reach: ``optax.contrib`` functions, the schedule-free wrapper around any base, train/eval switching, state layouts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import schedulefree
import torch

import gradtx
import gradtx.optim as optim
from tests.cases.beyond import CONTRIB_CASES
from tests.cases.optimizers import BY_NAME, OPTIMIZERS
from tests.harness import assert_trees_close, dtype_rows, grad_fn, make_params, run_functional, run_torch
from tests.test_facade_engine import to_numpy


def _resolve(module, dotted):
    return functools.reduce(getattr, dotted.split("."), module)


# Rows of a transform option run in float64 only (float32 runs the aliases).
@pytest.mark.parametrize("case,dtype", dtype_rows(CONTRIB_CASES))
def test_matches_optax_contrib(case, dtype):
    params = make_params(dtype)
    ours = run_functional(_resolve(gradtx, case.name)(**case.kwargs), params, case.steps, extra_args=case.extra_args)
    theirs = run_functional(_resolve(optax.contrib, case.name)(**case.kwargs), params, case.steps,
                            extra_args=case.extra_args)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")


def _warmup(count):
    return 0.05 * jnp.minimum(1.0, (count + 1) / 4)


@pytest.mark.parametrize("lr,dtype", [(0.05, "float64"), (_warmup, "float32")], ids=["constant", "schedule"])
def test_schedule_free_around_any_base_matches_optax(lr, dtype):
    params = make_params(dtype)
    ours = gradtx.schedule_free(gradtx.chain(gradtx.add_decayed_weights(0.1), gradtx.adam(lr, b1=0.0)), lr, b1=0.8,
                                weight_lr_power=1.5)
    theirs = optax.contrib.schedule_free(optax.chain(optax.add_decayed_weights(0.1), optax.adam(lr, b1=0.0)), lr,
                                         b1=0.8, weight_lr_power=1.5)
    for step, (a, b) in enumerate(zip(run_functional(ours, params, 10), run_functional(theirs, params, 10))):
        assert_trees_close(a, b, dtype, f"step {step + 1}")
    # The state has optax's fields and dtypes, and the evaluation point is optax's.
    ours_state, theirs_state = ours.init(params), theirs.init(params)
    assert ours_state._fields == theirs_state._fields
    for field in ("b1", "weight_sum", "step_count", "max_lr"):
        assert getattr(ours_state, field).dtype == getattr(theirs_state, field).dtype, field
    grads = grad_fn(params)
    _, ours_state = jax.jit(ours.update)(grads, ours_state, params)
    _, theirs_state = jax.jit(theirs.update)(grads, theirs_state, params)
    assert_trees_close(gradtx.schedule_free_eval_params(ours_state, params),
                       optax.contrib.schedule_free_eval_params(theirs_state, params), dtype)


def test_schedule_free_eval_params_needs_its_state():
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        gradtx.schedule_free_eval_params(gradtx.adam(0.1).init(make_params()), make_params())


SCHEDULE_FREE = [
    ("AdamWScheduleFree", dict(lr=0.05, weight_decay=0.1, warmup_steps=3)),
    ("SGDScheduleFree", dict(lr=0.05, momentum=0.8)),
    ("RAdamScheduleFree", dict(lr=0.05, silent_sgd_phase=False)),
]


def _reference(name, kwargs, params, module=schedulefree):
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in jax.tree.leaves(params)]
    return tensors, getattr(module, name)(tensors, **kwargs)


def _lockstep(ours, theirs, tensors, steps):
    """Steps both optimizers with the gradient at the (shared) current parameters."""
    for _ in range(steps):
        grads = grad_fn(ours.params)
        for t, g in zip(tensors, jax.tree.leaves(grads)):
            t.grad = torch.tensor(np.asarray(g))
        theirs.step()
        ours.step(grads)


def step_skipping(ours, theirs, tensors, skipped):
    """One step of both optimizers (of one param group) with the gradient at the current parameters, the
    parameters at the indices ``skipped`` left without one."""
    grads = jax.tree.leaves(grad_fn(ours.params))
    for i, (box, t, g) in enumerate(zip(ours.param_groups[0]["params"], tensors, grads)):
        box.grad = None if i in skipped else g
        t.grad = None if i in skipped else torch.tensor(np.asarray(g))
    theirs.step()
    ours.step()


def _assert_same_params(opt, tensors, context):
    for a, t in zip(jax.tree.leaves(opt.params), tensors):
        np.testing.assert_allclose(np.asarray(a), t.detach().numpy(), rtol=1e-7, atol=1e-10, err_msg=context)


@pytest.mark.parametrize("name,kwargs", SCHEDULE_FREE, ids=[n for n, _ in SCHEDULE_FREE])
def test_train_and_eval_move_parameters_as_the_reference(name, kwargs):
    params = make_params("float64")
    tensors, theirs = _reference(name, kwargs, params)
    ours = getattr(optim, name)(jax.tree.map(jnp.array, params), **kwargs)
    with pytest.raises(Exception, match="not in train mode"):
        theirs.step()
    with pytest.raises(Exception, match="not in train mode"):
        ours.step(grad_fn(ours.params))
    for phase in range(2):
        ours.train()
        theirs.train()
        _assert_same_params(ours, tensors, f"train() in phase {phase}")
        _lockstep(ours, theirs, tensors, 4)
        _assert_same_params(ours, tensors, f"after the steps of phase {phase}")
        ours.eval()
        ours.eval()  # a second call changes nothing, as the reference's
        theirs.eval()
        _assert_same_params(ours, tensors, f"eval() in phase {phase}")
    # The same state names and param-group keys and counters as the reference.
    box, tensor = ours.param_groups[0]["params"][0], tensors[0]
    assert list(ours.state[box]) == list(theirs.state[tensor])
    ours_group, theirs_group = ours.state_dict()["param_groups"][0], theirs.state_dict()["param_groups"][0]
    assert set(ours_group) - {"param_names"} == set(theirs_group) - {"param_names"}
    for key in ("k", "train_mode", "lr_max", "scheduled_lr"):
        assert ours_group[key] == theirs_group[key], key
    np.testing.assert_allclose(ours_group["weight_sum"], theirs_group["weight_sum"], rtol=1e-12)


@pytest.mark.parametrize("kwargs,dtype", [(dict(lr=0.01), "float64"), (dict(lr=0.01, betas=(0.8, 0.9)), "float32")],
                         ids=["defaults", "betas"])
def test_cautious_wrapper_matches_pytorch_optimizer_cautious_lion(kwargs, dtype):
    b1, b2 = kwargs.get("betas", (0.9, 0.99))
    params = make_params(dtype)
    ours = run_functional(gradtx.cautious(gradtx.lion(kwargs["lr"], b1=b1, b2=b2, weight_decay=0.0)), params, 12)
    theirs = run_torch("Lion", dict(kwargs, cautious=True), params, 12, module="pytorch_optimizer")
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"step {step + 1}")


def test_cautious_direction_option_masks_the_same_components():
    params = make_params()
    whole = run_functional(gradtx.cautious(gradtx.adam(0.1)), params, 6)
    direction = run_functional(gradtx.chain(gradtx.cautious(gradtx.scale_by_adam(), direction=True),
                                            gradtx.scale_by_learning_rate(0.1)), params, 6)
    plain = run_functional(gradtx.adam(0.1), params, 6)
    assert_trees_close(whole[-1], direction[-1], "float64")
    with pytest.raises(AssertionError):  # the mask did drop components
        assert_trees_close(whole[-1], plain[-1], "float64")


# (record, kwargs, group keys kept here but not there: pytorch_optimizer keeps these on the optimizer)
STATE_LAYOUTS = [
    (BY_NAME["ADOPT"], dict(lr=0.05, cautious=True), {"maximize", "clip"}),
    (BY_NAME["AdEMAMix"], dict(lr=0.05, t_alpha_beta3=5), {"maximize"}),
    (BY_NAME["Prodigy"], dict(weight_decay=0.1, use_bias_correction=True), set()),
    (BY_NAME["AdamWScheduleFree"], dict(lr=0.05, warmup_steps=2, weight_decay=0.1), set()),
    (BY_NAME["RAdamScheduleFree"], dict(lr=0.05), set()),
    (BY_NAME["LaProp"], dict(lr=0.05, centered=True, steps_before_using_centered=2, ams_bound=True),
     {"maximize", "steps_before_using_centered", "cautious"}),
    (BY_NAME["MARS"], dict(lr=0.05, ams_bound=True, weight_decay=0.1), {"maximize"}),
    (BY_NAME["Shampoo"], dict(lr=0.05, momentum=0.5, preconditioning_compute_steps=2),
     {"maximize", "preconditioning_compute_steps", "foreach"}),
]


def _as_numpy(value):
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@pytest.mark.parametrize("info,kwargs,extra", STATE_LAYOUTS, ids=[row[0].name for row in STATE_LAYOUTS])
def test_state_and_groups_as_the_reference(info, kwargs, extra):
    import importlib

    name = info.name
    params = make_params("float64")
    tensors, theirs = _reference(name, kwargs, params, importlib.import_module(info.module))
    ours = info.cls(jax.tree.map(jnp.array, params), **kwargs)
    if info.train_mode:
        for opt in (ours, theirs):
            opt.train()
    _lockstep(ours, theirs, tensors, 3)
    _assert_same_params(ours, tensors, name)
    box = ours.param_groups[0]["params"][0]
    assert list(ours.state[box]) == list(theirs.state[tensors[0]])
    for key, value in theirs.state[tensors[0]].items():
        np.testing.assert_allclose(np.asarray(ours.state[box][key]), _as_numpy(value), rtol=1e-7, err_msg=key)
    extra = extra | {"param_names"}
    assert set(ours.param_groups[0]) - extra == set(theirs.param_groups[0]) - extra
    # The reference's own state dict loads (options it keeps on the optimizer come from the constructor), and the
    # run continues as the reference's.
    loaded = info.cls(jax.tree.map(jnp.array, ours.params), **kwargs)
    if info.train_mode:
        loaded.train()
    loaded.load_state_dict(to_numpy(theirs.state_dict()))
    _lockstep(loaded, theirs, tensors, 2)
    _assert_same_params(loaded, tensors, f"{name}, loaded from the reference's state dict")
    ours = loaded
    # A state dict round trip keeps the group's counters, so the bias corrections continue.
    again = info.cls(jax.tree.map(jnp.array, ours.params), **kwargs)
    again.load_state_dict(ours.state_dict())
    for opt in (ours, again):
        opt.step(grad_fn(opt.params))
    assert_trees_close(again.params, ours.params, "float64")


def test_prodigy_refuses_what_it_does_not_reproduce():
    for kwargs in [dict(growth_rate=2.0), dict(slice_p=2), dict(betas=(0.0, 0.999))]:
        with pytest.raises(ValueError, match="supports"):
            optim.Prodigy([jnp.zeros(2)], **kwargs)
    opt = optim.Prodigy([{"params": [jnp.ones(2)]}, {"params": [jnp.ones(3)], "weight_decay": 0.1}])
    with pytest.raises(ValueError, match="param group 1"):
        opt.step([[jnp.ones(2)], [jnp.ones(3)]])


@pytest.mark.parametrize("name,kwargs,error,message", [
    ("ADOPT", dict(lr=-1.0), "NegativeLRError", "learning rate must be positive"),
    ("ADOPT", dict(betas=(1.0, 0.9)), "ValueError", "beta1 must be in the range"),
    ("AdEMAMix", dict(betas=(0.9, 0.999, 1.5)), "ValueError", "beta3 must be in the range"),
    ("AdEMAMix", dict(alpha=-1.0), "ValueError", "alpha must be non-negative"),
])
def test_pytorch_optimizer_checks_as_the_reference(name, kwargs, error, message):
    import pytorch_optimizer

    with pytest.raises(Exception, match=message) as theirs:
        getattr(pytorch_optimizer, name)([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(Exception, match=message) as ours:
        getattr(optim, name)([jnp.zeros(2)], **kwargs)
    assert type(theirs.value).__name__ == type(ours.value).__name__ == error


GROUP_STEPS = [info for info in OPTIMIZERS if "step" in getattr(info.cls, "group_options", ())]


@pytest.mark.parametrize("info", GROUP_STEPS, ids=lambda info: info.name)
def test_a_parameter_without_a_gradient_still_counts_the_group_step(info):
    """pytorch_optimizer counts steps per param group: a parameter that skips a step resumes at the group's count,
    and one whose first gradient comes at a later step (the matrices here) starts at the group's count (the
    refreshes of SOAP's and Shampoo's preconditioners at such a step: tests/test_preconditioned.py)."""
    import importlib

    kwargs = next(case.kwargs for case in info.cases if "float64" in case.dtypes)  # a row compared in float64
    params = make_params("float64")
    tensors, theirs = _reference(info.name, kwargs, params, importlib.import_module(info.module))
    ours = info.cls(jax.tree.map(jnp.array, params), **kwargs)
    for skipped in ((1, 3), (0, 1), (), (0, 2), ()):
        step_skipping(ours, theirs, tensors, skipped)
        _assert_same_params(ours, tensors, f"{info.name}, skipping {skipped}")
    assert ours.param_groups[0]["step"] == theirs.param_groups[0]["step"] == 5
