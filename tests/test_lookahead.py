"""gradtx.optim.Lookahead against pytorch_optimizer 4.1.0's Lookahead, live, in float64.

Each row wraps torch.optim.SGD (momentum 0.9) or Adam on both sides, with the
wrapped gradtx optimizer in each tier; the state_dict resumes bit for bit through
pickle; the errors are the reference's.
"""

from __future__ import annotations

import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_optimizer
import torch

import gradtx.optim as optim
from tests import harness
from tests.harness import assert_trees_close, make_params, run_torch

jit_grad = jax.jit(harness.grad_fn)
STEPS = 12
BASES = {"SGD": dict(lr=0.05, momentum=0.9), "Adam": dict(lr=0.05)}
TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
# (k, alpha) pairs cover k in {2, 5} and alpha in {0.5, 0.8}; every pullback mode with each.
ROWS = [(base, k, alpha, mode) for base in BASES for k, alpha in [(2, 0.5), (5, 0.8), (2, 0.8)]
        for mode in ["none", "reset", "pullback"]]


def reference_lookahead(tensors, base, **kwargs):
    """pytorch_optimizer's Lookahead over ``torch.optim.<base>`` (run_torch builds it from its parameters)."""
    return pytorch_optimizer.Lookahead(getattr(torch.optim, base)(tensors, **BASES[base]), **kwargs)


def build(params, base, tier="fused", **kwargs):
    inner = getattr(optim, base)(jax.tree.map(jnp.array, params), **BASES[base], **TIERS[tier])
    return optim.Lookahead(inner, **kwargs)


def run(opt, steps):
    trajectory = []
    for _ in range(steps):
        opt.step(jit_grad(opt.params))
        trajectory.append(jax.tree.map(np.array, opt.params))
    return trajectory


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("base,k,alpha,mode", ROWS, ids=[f"{b}-k{k}-a{a}-{m}" for b, k, a, m in ROWS])
def test_matches_pytorch_optimizer(base, k, alpha, mode, tier):
    params = make_params("float64")
    kwargs = dict(k=k, alpha=alpha, pullback_momentum=mode)
    ours = run(build(params, base, tier, **kwargs), STEPS)
    theirs = run_torch("reference_lookahead", dict(base=base, **kwargs), params, STEPS, module=__name__)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"{base} k={k} alpha={alpha} {mode} {tier} step {step + 1}")


@pytest.mark.parametrize("base,mode", [("SGD", "pullback"), ("Adam", "reset"), ("SGD", "none")])
def test_state_dict_resumes_bit_for_bit(base, mode):
    kwargs = dict(k=5, alpha=0.8, pullback_momentum=mode)
    opt = build(make_params("float64"), base, **kwargs)
    run(opt, 7)  # mid-cycle: the counters are saved too
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    assert set(saved) == {"lookahead_state", "base_optimizer"}
    resumed = build(jax.tree.map(np.array, opt.params), base, **kwargs)
    resumed.load_state_dict(saved)
    for step, (a, b) in enumerate(zip(run(resumed, 8), run(opt, 8))):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y, err_msg=f"resumed step {step + 1}")


def test_state_and_groups_as_the_reference():
    params = jax.tree.leaves(make_params("float64"))  # unnamed, as torch's list
    ours = build(params, "SGD", k=2, pullback_momentum="pullback")
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in params]
    theirs = reference_lookahead(tensors, "SGD", k=2, pullback_momentum="pullback")
    assert repr(ours) == repr(theirs)
    assert ours.defaults == theirs.defaults
    p, t = ours.param_groups[0]["params"][0], tensors[0]
    assert list(ours.state[p]) == list(theirs.state[t])
    assert ours.param_groups[0]["counter"] == theirs.param_groups[0]["counter"]


def test_optimizer_class_with_params():
    opt = optim.Lookahead(optim.SGD, params=[jnp.ones(3)], lr=0.1)
    assert isinstance(opt.optimizer, optim.SGD) and opt.optimizer.defaults["lr"] == 0.1


def _escaped(error: Exception) -> str:
    return re.escape(str(error))


ERRORS = [dict(k=0), dict(k=-1), dict(alpha=1.0), dict(alpha=-0.1), dict(pullback_momentum="nesterov")]


@pytest.mark.parametrize("kwargs", ERRORS, ids=str)
def test_errors_as_the_reference(kwargs):
    with pytest.raises(Exception) as theirs:
        pytorch_optimizer.Lookahead(torch.optim.SGD([torch.ones(3, requires_grad=True)], lr=0.1), **kwargs)
    with pytest.raises(type(theirs.value), match=f"^{_escaped(theirs.value)}$"):
        optim.Lookahead(optim.SGD([jnp.ones(3)], lr=0.1), **kwargs)


def test_class_without_params_as_the_reference():
    with pytest.raises(Exception) as theirs:
        pytorch_optimizer.Lookahead(torch.optim.SGD)
    with pytest.raises(type(theirs.value), match=f"^{_escaped(theirs.value)}$"):
        optim.Lookahead(optim.SGD)


def test_mismatched_state_dict_as_the_reference():
    one = pytorch_optimizer.Lookahead(torch.optim.SGD([torch.ones(3, requires_grad=True)], lr=0.1))
    two = pytorch_optimizer.Lookahead(torch.optim.SGD([torch.ones(3, requires_grad=True),
                                                       torch.ones(2, requires_grad=True)], lr=0.1))
    with pytest.raises(Exception) as theirs:
        two.load_state_dict(one.state_dict())
    ours = optim.Lookahead(optim.SGD([jnp.ones(3), jnp.ones(2)], lr=0.1))
    before = ours.state_dict()
    with pytest.raises(type(theirs.value), match=f"^{_escaped(theirs.value)}$"):
        ours.load_state_dict(optim.Lookahead(optim.SGD([jnp.ones(3)], lr=0.1)).state_dict())
    assert pickle.dumps(ours.state_dict()) == pickle.dumps(before)  # a rejected dict changes nothing


def test_mismatched_shape_is_rejected():
    ours = optim.Lookahead(optim.SGD([jnp.ones(3)], lr=0.1))
    with pytest.raises(ValueError, match=r"lookahead state \(0, 0\)\['slow_params'\] has shape \(2,\)"):
        ours.load_state_dict(optim.Lookahead(optim.SGD([jnp.ones(2)], lr=0.1)).state_dict())


def test_closure_steps_as_gradient_steps():
    by_grads = run(build(make_params("float64"), "SGD", k=2, pullback_momentum="pullback"), 6)
    opt = build(make_params("float64"), "SGD", k=2, pullback_momentum="pullback")
    by_closure = []
    jit_loss = jax.jit(harness.loss)
    for step in range(6):
        if step % 2:
            opt.step(lambda params: jit_loss(params))  # positional, as torch's step(closure)
        else:
            before = jit_loss(opt.params)
            assert opt.step(closure=jit_loss) == before  # the closure's loss is returned
        by_closure.append(jax.tree.map(np.array, opt.params))
    assert_trees_close(by_closure, by_grads, "float64", "closure steps")


def test_parameter_without_gradient_keeps_its_slow_weight():
    """The reference interpolates only parameters that have a gradient (a None leaf here, no .grad there)."""
    start = [np.linspace(-1.0, 1.0, 3), np.array([0.5, -0.25])]
    tensors = [torch.tensor(x, requires_grad=True) for x in start]
    theirs = pytorch_optimizer.Lookahead(torch.optim.SGD(tensors, lr=0.1, momentum=0.9), k=2, alpha=0.8)
    ours = optim.Lookahead(optim.SGD([jnp.array(x) for x in start], lr=0.1, momentum=0.9), k=2, alpha=0.8)
    for _ in range(5):
        grad = jit_grad([ours.params[0]])[0]
        tensors[0].grad = torch.tensor(np.asarray(grad))
        theirs.step()
        ours.step([grad, None])
    assert_trees_close(ours.params, [t.detach().numpy() for t in tensors], "float64", "params")
    slow = [ours.state[p]["slow_params"] for p in ours.param_groups[0]["params"]]
    assert_trees_close(slow, [theirs.state[t]["slow_params"].numpy() for t in tensors], "float64", "slow")


def test_slow_weights_for_evaluation_as_the_reference():
    params = jax.tree.leaves(make_params("float64"))
    ours = build(params, "Adam", k=5)
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in params]
    theirs = reference_lookahead(tensors, "Adam", k=5)
    for _ in range(3):
        grads = jit_grad(ours.params)
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(np.asarray(g))
        theirs.step()
        ours.step(grads)
    fast = jax.tree.map(np.array, ours.params)
    ours.backup_and_load_cache()
    theirs.backup_and_load_cache()
    assert_trees_close(ours.params, [t.detach().numpy() for t in tensors], "float64", "slow weights")
    ours.clear_and_load_backup()
    theirs.clear_and_load_backup()
    assert_trees_close(ours.params, fast, "float64", "fast weights back")
    assert "backup_params" not in ours.state[ours.param_groups[0]["params"][0]]


def test_pickled_wrapper_goes_on_bit_for_bit():
    opt = build(make_params("float64"), "SGD", k=5, pullback_momentum="pullback")
    run(opt, 3)
    copy = pickle.loads(pickle.dumps(opt))
    for a, b in zip(run(copy, 6), run(opt, 6)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)


def test_loads_the_reference_state_dict():
    """A state_dict saved by pytorch_optimizer's Lookahead (torch tensors) resumes here as it goes on there."""
    params = jax.tree.leaves(make_params("float64"))
    kwargs = dict(k=3, alpha=0.8, pullback_momentum="pullback")
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in params]
    theirs = reference_lookahead(tensors, "SGD", **kwargs)

    def torch_step():
        for t, g in zip(tensors, jit_grad([jnp.asarray(t.detach().numpy()) for t in tensors])):
            t.grad = torch.tensor(np.asarray(g))
        theirs.step()

    for _ in range(4):
        torch_step()
    ours = build([t.detach().numpy() for t in tensors], "SGD", **kwargs)
    ours.load_state_dict(theirs.state_dict())
    for _ in range(5):
        torch_step()
        ours.step(jit_grad(ours.params))
    assert_trees_close(ours.params, [t.detach().numpy() for t in tensors], "float64", "after loading")
