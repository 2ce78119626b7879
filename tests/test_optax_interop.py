"""gradtx inside optax and optax inside gradtx: extra arguments, state utilities, masks, hyperparameters."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.cases.second_order import _linesearch_args
from tests.cases.step_rules import _loss_value
from tests.harness import assert_trees_close, make_params, run_functional


def _plain_update(updates, state, params=None):
    return updates, state


def test_optax_sees_gradtx_transforms_as_extra_args_transforms():
    tx = gradtx.adam(0.1)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert isinstance(tx, optax.GradientTransformation) and isinstance(tx, gradtx.GradientTransformation)
    assert type(tx) is gradtx.GradientTransformation
    assert optax.with_extra_args_support(tx) is tx
    plain = gradtx.GradientTransformation(gradtx.init_empty_state, _plain_update)
    assert isinstance(plain, optax.GradientTransformation)
    assert not isinstance(plain, optax.GradientTransformationExtraArgs)


def test_optax_chain_passes_extra_args_to_a_plain_gradtx_update_only_if_it_takes_them():
    plain = gradtx.GradientTransformation(gradtx.init_empty_state, _plain_update)
    tx = optax.chain(plain, gradtx.sgd(0.1))
    params = make_params()
    updates, _ = tx.update(params, tx.init(params), params, value=jnp.ones(()))
    assert_trees_close(updates, jax.tree.map(lambda p: -0.1 * p, params), "float64")


def test_gradtx_with_extra_args_support_returns_the_extra_args_class():
    wrapped = gradtx.with_extra_args_support(optax.sgd(0.1))
    assert isinstance(wrapped, gradtx.GradientTransformationExtraArgs)
    params = make_params()
    wrapped.update(params, wrapped.init(params), params, value=1.0)


# (label, lib -> the gradtx transformation wrapped in optax's wrapper, reference, extra args, steps)
INSIDE_OPTAX = [
    ("chain-lbfgs", lambda: optax.chain(gradtx.lbfgs()), lambda: optax.lbfgs(), _linesearch_args, 5),
    ("MultiSteps-polyak", lambda: optax.MultiSteps(gradtx.polyak_sgd(max_learning_rate=0.3), 2)
     .gradient_transformation(),
     lambda: optax.MultiSteps(optax.polyak_sgd(max_learning_rate=0.3), 2).gradient_transformation(), _loss_value, 10),
    ("masked-polyak", lambda: optax.masked(gradtx.polyak_sgd(max_learning_rate=0.3), {"w": True, "b": True, "s": False,
                                                                                     "nested": [True]}),
     lambda: optax.masked(optax.polyak_sgd(max_learning_rate=0.3), {"w": True, "b": True, "s": False,
                                                                    "nested": [True]}), _loss_value, 10),
    ("gradtx-MultiSteps-polyak", lambda: gradtx.MultiSteps(gradtx.polyak_sgd(max_learning_rate=0.3), 2)
     .gradient_transformation(),
     lambda: optax.MultiSteps(optax.polyak_sgd(max_learning_rate=0.3), 2).gradient_transformation(), _loss_value, 10),
    ("gradtx-chain-optax-lbfgs", lambda: gradtx.chain(optax.lbfgs()), lambda: optax.lbfgs(), _linesearch_args, 5),
]


@pytest.mark.parametrize("label,build,reference,extra_args,steps", INSIDE_OPTAX, ids=[row[0] for row in INSIDE_OPTAX])
def test_extra_args_reach_gradtx_inside_optax_wrappers(label, build, reference, extra_args, steps):
    params = make_params()
    ours = run_functional(build(), params, steps, extra_args=extra_args)
    theirs = run_functional(reference(), params, steps, extra_args=extra_args)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"{label} step {step + 1}")


@pytest.mark.parametrize("lib", [gradtx, optax], ids=["gradtx-masked", "optax-masked"])
def test_optax_map_params_over_masked_states(lib):
    params = make_params()
    mask = {"w": True, "b": False, "s": True, "nested": [False]}
    tx = lib.masked(gradtx.adam(0.1), mask)
    state = tx.init(params)
    state = tx.update(params, state, params)[1]
    doubled = optax.tree.map_params(tx.init, lambda x: 2 * x, state, transform_non_params=lambda x: x)
    inner = doubled.inner_state[0]
    np.testing.assert_allclose(inner.mu["w"], 2 * state.inner_state[0].mu["w"])
    assert isinstance(inner.mu["b"], (gradtx.MaskedNode, optax.MaskedNode))
    assert int(inner.count) == 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _CallableMask:
    """An equinox-style module: a pytree of booleans that also has ``__call__``."""

    w: bool
    b: bool

    def __call__(self, x):
        return x


@pytest.mark.parametrize("lib", [gradtx, optax])
def test_callable_pytree_of_booleans_is_a_mask_not_a_function(lib):
    mask = {"w": _CallableMask(True, False), "b": _CallableMask(False, True)}
    params = {"w": _CallableMask(jnp.ones(2), jnp.ones(3)), "b": _CallableMask(jnp.ones(2), jnp.ones(3))}
    tx = lib.masked(lib.sgd(1.0), mask)
    updates, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_array_equal(updates["w"].w, -1.0)
    np.testing.assert_array_equal(updates["w"].b, 1.0)
    tx = lib.masked(lib.sgd(1.0), _CallableMask(w=True, b=False))
    updates, _ = tx.update(params["w"], tx.init(params["w"]), params["w"])
    np.testing.assert_array_equal(updates.w, -1.0)
    np.testing.assert_array_equal(updates.b, 1.0)


def test_masked_masks_extra_args_shaped_like_the_updates():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    seen = {}

    def spy_update(updates, state, params=None, *, per_leaf, **extra_args):
        seen["per_leaf"] = per_leaf
        return updates, state

    spy = gradtx.GradientTransformation(gradtx.init_empty_state, spy_update)
    tx = gradtx.masked(spy, {"a": True, "b": False}, mask_compatible_extra_args=True)
    tx.update(params, tx.init(params), params, per_leaf=params)
    assert isinstance(seen["per_leaf"]["b"], gradtx.MaskedNode)


def test_inject_hyperparams_keeps_the_dtype_of_explicit_arrays_like_optax():
    params = make_params("float64")
    for lib in (gradtx, optax):
        state = lib.inject_hyperparams(lib.adam)(learning_rate=jnp.asarray(0.1, jnp.float32), b1=0.9).init(params)
        assert state.hyperparams["learning_rate"].dtype == jnp.float32, lib.__name__
        assert state.hyperparams["b1"].dtype == jnp.float64, lib.__name__


def test_inject_hyperparams_rejects_unknown_static_args():
    with pytest.raises(ValueError, match=r"static_args \['nope'\] are not parameters of adam"):
        gradtx.inject_hyperparams(gradtx.adam, static_args=("nope",))


class _LossScaledRate:
    """A stateful schedule: the learning rate shrinks with the running maximum of the loss."""

    def init(self):
        return {"max_value": jnp.zeros(())}

    def update(self, state, **extra_args):
        return {"max_value": jnp.maximum(state["max_value"], extra_args["value"])}

    def __call__(self, state, **extra_args):
        return 0.5 / (1.0 + jnp.maximum(state["max_value"], extra_args.get("value", 0.0)))


@pytest.mark.filterwarnings("ignore:inject_stateful_hyperparams is deprecated:DeprecationWarning")
@pytest.mark.parametrize("inject", ["inject_hyperparams", "inject_stateful_hyperparams"])
def test_stateful_schedules_match_optax(inject):
    params = make_params()

    def build(lib):
        return getattr(lib, inject)(lib.sgd)(learning_rate=_LossScaledRate(), momentum=0.5)

    ours = run_functional(build(gradtx), params, 10, extra_args=_loss_value)
    theirs = run_functional(build(optax), params, 10, extra_args=_loss_value)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"{inject} step {step + 1}")
    state = build(gradtx).init(params)
    assert isinstance(state, gradtx.InjectStatefulHyperparamsState)
    assert isinstance(gradtx.WrappedSchedule(lambda c: c), gradtx.schedules.StatefulSchedule)


def test_apply_updates_passes_none_leaves_through_like_optax():
    params = {"w": jnp.ones(3), "frozen": None}
    updates = {"w": jnp.full(3, 0.5), "frozen": None}
    ours, theirs = gradtx.apply_updates(params, updates), optax.apply_updates(params, updates)
    assert ours["frozen"] is None and theirs["frozen"] is None
    np.testing.assert_array_equal(ours["w"], theirs["w"])


@pytest.mark.parametrize("jit", [False, True])
def test_apply_updates_rejects_a_wrong_shape_naming_the_path(jit):
    params = {"layer": {"w": jnp.ones((3, 2))}}
    updates = {"layer": {"w": jnp.ones((2,))}}  # would broadcast silently
    apply = jax.jit(gradtx.apply_updates) if jit else gradtx.apply_updates
    with pytest.raises(ValueError, match=r"layer/w.*shape \(2,\).*shape \(3, 2\)"):
        apply(params, updates)


@pytest.mark.parametrize("lib", [gradtx, optax], ids=["gradtx-partition", "optax-partition"])
def test_optax_map_params_over_partition_states(lib):
    params = make_params()
    labels = {"w": "adam", "b": "sgd", "s": "adam", "nested": ["sgd"]}
    tx = lib.partition({"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.1, momentum=0.9)}, labels)
    state = tx.update(params, tx.init(params), params)[1]
    doubled = optax.tree.map_params(tx.init, lambda x: 2 * x, state, transform_non_params=lambda x: x)
    np.testing.assert_allclose(doubled.inner_states["sgd"].inner_state[0].trace["b"],
                               2 * state.inner_states["sgd"].inner_state[0].trace["b"])
