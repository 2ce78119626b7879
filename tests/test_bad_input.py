"""Bad input to the facade: torch's exception type, a message that says what and where, and nothing changed.

Param groups edited into something a step cannot use (an option deleted, a group
replaced by a hand-built dict, a string learning rate, betas of the wrong length,
an array option of the wrong shape) fail before anything changes, naming the
group and the option; so do constructions torch refuses.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx.optim as optim
from tests.harness import assert_unchanged, snapshot

TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}


def _two_groups(name, **kwargs):
    groups = [{"params": [jnp.ones(4)]}, {"params": [jnp.ones((2, 3))]}]
    return getattr(optim, name)(groups, lr=0.1, **kwargs)


def _grads():
    return [[jnp.full(4, 0.5)], [jnp.full((2, 3), 0.5)]]


# (optimizer, constructor options, the edit to group 1, the error type, what the message must name)
EDITS = [
    ("SGD", dict(momentum=0.9), lambda g: g.pop("momentum"), KeyError, "param group 1 has no option 'momentum'"),
    ("Adam", {}, lambda g: g.pop("lr"), KeyError, "param group 1 has no option 'lr'"),
    ("Adam", {}, lambda g: g.update(lr="fast"), TypeError, "param group 1: option 'lr'"),
    ("Adam", {}, lambda g: g.update(lr=None), TypeError, "param group 1: option 'lr'"),
    ("Adam", {}, lambda g: g.update(lr=jnp.ones(3)), TypeError, "param group 1: option 'lr'"),
    ("Adam", {}, lambda g: g.update(betas=(0.9,)), TypeError, "param group 1: option 'betas'"),
    ("Adam", {}, lambda g: g.update(eps=-1.0), ValueError, "param group 1: Invalid epsilon value"),
    ("RMSprop", {}, lambda g: g.update(alpha="0.9"), TypeError, "param group 1: option 'alpha'"),
]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("name,options,edit,error,message", EDITS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(EDITS)])
def test_an_edited_group_fails_the_step_before_anything_changes(name, options, edit, error, message, tier):
    opt = _two_groups(name, **options, **TIERS[tier])
    opt.step(_grads())
    edit(opt.param_groups[1])
    before = snapshot(opt)
    with pytest.raises(error, match=message.replace("(", r"\(")):
        opt.step(_grads())
    assert_unchanged(opt, before)


def test_a_group_replaced_by_a_hand_built_dict_without_an_option_is_refused():
    opt = optim.SGD([jnp.ones(3)], lr=0.1, momentum=0.9)
    opt.step([jnp.ones(3)])
    params = opt.param_groups[0]["params"]
    opt.param_groups[0] = {"params": params, "lr": 0.1}  # momentum, dampening, ... missing
    with pytest.raises(KeyError, match="param group 0 has no option"):
        opt.step([jnp.ones(3)])


@pytest.mark.parametrize("make,error,message", [
    (lambda x: optim.SGD([x, x], lr=0.1), ValueError, "duplicate parameters"),
    (lambda x: optim.SGD([{"params": [x]}, {"params": [x]}], lr=0.1), ValueError, "more than one parameter group"),
    (lambda x: optim.SGD([jnp.arange(3)], lr=0.1), TypeError, "floating point"),
    (lambda x: optim.SGD([jnp.array([True, False])], lr=0.1), TypeError, "floating point"),
    (lambda x: optim.SGD([x], lr="0.1"), TypeError, "must be a number"),
    (lambda x: optim.Adam([x], betas=("0.9", 0.999)), TypeError, "must be a number"),
    (lambda x: optim.SGD([{"lr": 0.1}], lr=0.1), KeyError, "param group 0 has no 'params'"),
    (lambda x: optim.SGD(3, lr=0.1), TypeError, "should be an iterable"),
])
def test_constructions_torch_refuses_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        make(jnp.ones(3))


def test_a_tree_may_share_a_leaf_and_a_list_of_groups_of_trees_still_works():
    x = jnp.ones(3)
    opt = optim.SGD({"a": x, "b": x}, lr=0.1)  # tied leaves of a tree are separate leaves, as jax.grad sees them
    opt.step({"a": jnp.ones(3), "b": jnp.full(3, 2.0)})
    np.testing.assert_allclose(opt.params["a"], 0.9)
    np.testing.assert_allclose(opt.params["b"], 0.8)
    trees = optim.SGD([{"w": jnp.ones(2)}, {"b": jnp.ones(1)}], lr=0.1)  # a list of trees, not of groups
    assert len(trees.param_groups) == 1 and len(trees.param_groups[0]["params"]) == 2
