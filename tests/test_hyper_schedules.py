"""Schedules for momentum, betas, eps and weight decay, in both faces.

A hyperparameter given as a schedule ``count -> value`` gives the numbers of the
same optimizer whose value is set by hand before each step: through
``inject_hyperparams`` in the functional face, by editing ``param_groups`` in the
facade. Bias corrections use the current value (:math:`1-\\beta_1(t)^t`), which is
what setting the value by hand gives.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx import optim
from tests.cases import OPTIMIZERS
from tests.cases.optimizers import falling, rising
from tests.harness import assert_trees_close, grad_fn, make_params


# (alias, fixed arguments, scheduled argument, schedule)
FUNCTIONAL = [
    (gradtx.adam, {"learning_rate": 0.05}, "b1", rising(0.5, 0.9)),
    (gradtx.adam, {"learning_rate": 0.05}, "b2", rising(0.9, 0.999)),
    (gradtx.adam, {"learning_rate": 0.05}, "eps", falling(1e-2)),
    (gradtx.adam, {"learning_rate": 0.05, "nesterov": True}, "b1", rising(0.5, 0.9)),
    (gradtx.adamw, {"learning_rate": 0.05}, "weight_decay", falling(0.3)),
    (gradtx.amsgrad, {"learning_rate": 0.05}, "b2", rising(0.5, 0.99)),
    (gradtx.sgd, {"learning_rate": 0.05}, "momentum", rising(0.0, 0.9)),
    (gradtx.sgd, {"learning_rate": 0.05, "nesterov": True}, "momentum", rising(0.0, 0.9)),
    (gradtx.rmsprop, {"learning_rate": 0.05}, "decay", rising(0.5, 0.95)),
    (gradtx.rmsprop, {"learning_rate": 0.05, "momentum": 0.5, "centered": True}, "eps", falling(1e-2)),
    (gradtx.rmsprop, {"learning_rate": 0.05}, "momentum", rising(0.0, 0.9)),
    (gradtx.adagrad, {"learning_rate": 0.05}, "eps", falling(1e-2)),
    (gradtx.adadelta, {"learning_rate": 0.5, "weight_decay": 0.1}, "rho", rising(0.5, 0.95)),
    (gradtx.adamax, {"learning_rate": 0.05}, "b1", rising(0.5, 0.9)),
    (gradtx.nadam, {"learning_rate": 0.05}, "b1", rising(0.5, 0.9)),
    (gradtx.radam, {"learning_rate": 0.05}, "b2", rising(0.9, 0.999)),
    (gradtx.adabelief, {"learning_rate": 0.05}, "b1", rising(0.5, 0.9)),
    (gradtx.yogi, {"learning_rate": 0.05}, "b2", rising(0.9, 0.999)),
    (gradtx.lion, {"learning_rate": 0.05}, "b1", rising(0.5, 0.9)),
    (gradtx.lamb, {"learning_rate": 0.05}, "weight_decay", falling(0.3)),
    (gradtx.muon, {"learning_rate": 0.05}, "beta", rising(0.5, 0.95)),
]


# Integer arguments that shape the computation stay static under inject_hyperparams (as in optax).
STATIC_ARGS = {gradtx.muon: ("ns_steps",)}


def _id(case):
    alias, fixed, name, _ = case
    extra = ",".join(f"{k}={v}" for k, v in fixed.items() if k != "learning_rate")
    return f"{alias.__name__}[{name}]" + (f"({extra})" if extra else "")


@pytest.mark.parametrize("case", FUNCTIONAL, ids=_id)
def test_functional_schedule_equals_inject_hyperparams_set_by_hand(case):
    alias, fixed, name, schedule = case
    params = make_params("float64")
    scheduled = alias(**fixed, **{name: schedule})
    by_hand = gradtx.inject_hyperparams(alias, STATIC_ARGS.get(alias, ()))(**fixed, **{name: schedule(0)})

    @jax.jit
    def step(tx_params, tx_state, ref_params, ref_state, value):
        ref_state = ref_state._replace(hyperparams={**ref_state.hyperparams, name: value})
        updates, tx_state = scheduled.update(grad_fn(tx_params), tx_state, tx_params)
        ref_updates, ref_state = by_hand.update(grad_fn(ref_params), ref_state, ref_params)
        return (gradtx.apply_updates(tx_params, updates), tx_state,
                gradtx.apply_updates(ref_params, ref_updates), ref_state)

    ours, state, theirs, ref_state = params, scheduled.init(params), params, by_hand.init(params)
    for k in range(6):
        ours, state, theirs, ref_state = step(ours, state, theirs, ref_state, jnp.asarray(schedule(k), jnp.float64))
        assert_trees_close(ours, theirs, "float64", f"{_id(case)} step {k + 1}")


def test_bias_correction_uses_the_current_beta():
    """With b1 scheduled, step t divides by 1 - b1(t)**t (the value now), not by the product of past factors."""
    b1 = rising(0.5, 0.9)
    tx = gradtx.scale_by_adam(b1=b1, b2=0.5, eps=0.0)
    g = jnp.asarray([2.0])
    state = tx.init(g)
    m = 0.0
    for t in range(1, 5):
        updates, state = tx.update(g, state)
        beta = b1(t - 1)                   # the schedule's value at count = steps taken before this one
        m = beta * m + (1 - beta) * 2.0
        v = 2.0 ** 2                       # constant gradient: nu's corrected value is g**2
        np.testing.assert_allclose(updates, m / (1 - beta ** t) / np.sqrt(v), rtol=1e-12)


# --- the facade ------------------------------------------------------------------------------------------------

# (record, scheduled option) for every schedule a record lists
FACADE = [(info, scheduled) for info in OPTIMIZERS for scheduled in info.schedules]


def _value(scheduled, value, defaults):
    if scheduled.index is None:
        return value
    pair = list(scheduled.fixed.get(scheduled.option, defaults[scheduled.option]))
    pair[scheduled.index] = value
    return tuple(pair)


@pytest.mark.parametrize("info,scheduled", FACADE, ids=[f"{info.name}-{s.label}" for info, s in FACADE])
def test_facade_schedule_equals_editing_param_groups_by_hand(info, scheduled):
    cls, fixed, option, schedule = info.cls, scheduled.fixed, scheduled.option, scheduled.schedule
    defaults = cls([jnp.zeros(1)]).defaults
    params = make_params("float64")
    scheduled_run = cls(jax.tree.map(jnp.array, params), **fixed, **{option: _value(scheduled, schedule, defaults)})
    by_hand = cls(jax.tree.map(jnp.array, params), **fixed, **{option: _value(scheduled, schedule(0), defaults)})
    for k in range(5):
        by_hand.param_groups[0][option] = _value(scheduled, float(schedule(k)), defaults)
        scheduled_run.step(grad_fn(scheduled_run.params))
        by_hand.step(grad_fn(by_hand.params))
        assert_trees_close(scheduled_run.params, by_hand.params, "float64",
                           f"{info.name}-{scheduled.label} step {k + 1}")


def test_facade_schedules_are_static_and_betas_accept_one():
    opt = optim.Adam([jnp.ones(2)], betas=(rising(0.5, 0.9), 0.999))
    assert callable(opt.param_groups[0]["betas"][0])
    with pytest.raises(ValueError, match="both floats or both Tensors"):
        optim.Adam([jnp.ones(2)], betas=(0.9, jnp.asarray(0.999)))   # torch's rule still holds for numbers


def test_sgd_refuses_schedules_it_cannot_count():
    """torch's SGD keeps no step, so a schedule-valued option is refused with an explanation."""
    opt = optim.SGD([jnp.ones(2)], lr=0.1, momentum=rising(0.0, 0.9))
    with pytest.raises(TypeError, match="SGD keeps no step count.*'momentum' cannot be a schedule"):
        opt.step([jnp.ones(2)])
