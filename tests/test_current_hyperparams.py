"""current_hyperparams: injected values, or a plain chain's schedules read at its counts; never a silent {}."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import gradtx

LR = gradtx.cosine_decay_schedule(0.1, 10)
B1 = gradtx.linear_schedule(0.8, 0.9, 5)

# factory, its scheduled arguments, and names that differ in the transform holding the schedule:
# current_hyperparams(state, tx) reports what inject_hyperparams reports
CASES = {
    "adamw-lr": (gradtx.adamw, {"learning_rate": LR}, {}),
    "adam-lr-b1": (gradtx.adam, {"learning_rate": LR, "b1": B1}, {}),
    "sgd-momentum": (gradtx.sgd, {"learning_rate": LR, "momentum": gradtx.constant_schedule(0.9)},
                     {"momentum": "decay"}),  # gradtx.trace(decay=momentum)
    "lion": (gradtx.lion, {"learning_rate": LR}, {}),
}


@pytest.mark.parametrize("name", CASES)
def test_plain_chain_reports_what_inject_hyperparams_reports(name):
    factory, scheduled, renamed = CASES[name]
    params = {"w": jnp.ones(3)}
    plain = gradtx.chain(gradtx.clip_by_global_norm(1.0), factory(**scheduled))
    injected = gradtx.inject_hyperparams(factory)(**scheduled)
    state, injected_state = plain.init(params), injected.init(params)
    for _ in range(4):
        values = gradtx.current_hyperparams(state, plain)
        reference = gradtx.current_hyperparams(injected_state)
        assert values == {renamed.get(k, k): pytest.approx(reference[k], rel=1e-6) for k in scheduled}
        _, state = plain.update(params, state, params)
        _, injected_state = injected.update(params, injected_state, params)


def test_a_name_found_twice_gets_its_state_path():
    tx = gradtx.named_chain(("encoder", gradtx.sgd(LR)), ("head", gradtx.sgd(B1)))
    state = tx.init({"w": jnp.ones(2)})
    assert gradtx.current_hyperparams(state, tx) == {"encoder/1/learning_rate": pytest.approx(0.1),
                                                     "head/1/learning_rate": pytest.approx(0.8)}


def test_nothing_found_is_an_error_that_says_what_to_do():
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"current_hyperparams\(state, tx\).*inject_hyperparams"):
        gradtx.current_hyperparams(gradtx.adam(LR).init(params))
    with pytest.raises(ValueError, match="no gradtx schedule.*inject_hyperparams"):
        gradtx.current_hyperparams(gradtx.adam(0.1).init(params), gradtx.adam(0.1))
    tx = gradtx.adam(lambda count: 0.1)
    with pytest.raises(ValueError, match="not gradtx schedules"):
        gradtx.current_hyperparams(tx.init(params), tx)
