"""Real model trees and state that survives change: non-array leaves, path groups, freezing, carrying state."""

import jax
import jax.numpy as jnp
import optax
import pytest

import gradtx
from tests.harness import assert_trees_close, run_functional


def _model():
    f32 = jnp.float32
    return {
        "encoder": {"layers": [{"w": jnp.ones((4, 4), f32), "bias": jnp.zeros(4, f32)}] * 2},
        "head": {"w": jnp.ones((4, 2), f32), "bias": jnp.zeros(2, f32)},
    }


def test_non_array_leaves_are_passed_over():
    params = {"w": jnp.ones(3), "act": jax.nn.relu, "name": "mlp", "missing": None, "scale": 2.0}
    grads = {"w": jnp.ones(3), "act": jax.nn.relu, "name": "mlp", "missing": None, "scale": 0.5}
    for tx in (gradtx.adam(0.1), gradtx.sgd(0.1, momentum=0.9), gradtx.adamw(0.1),
               gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(0.1))):
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)
        new = gradtx.apply_updates(params, updates)
        assert new["act"] is jax.nn.relu and new["name"] == "mlp" and new["missing"] is None
        assert new["w"].shape == (3,) and float(new["scale"]) != 2.0


def test_init_under_eval_shape_and_state_bytes():
    params = _model()
    shapes = jax.eval_shape(gradtx.adam(1e-3).init, params)
    assert jax.tree.leaves(shapes)[0].shape == ()
    n_params = sum(x.size for x in jax.tree.leaves(params))
    assert gradtx.state_nbytes(gradtx.adam(1e-3), params) == 2 * 4 * n_params + 4  # mu, nu, and an int32 count


def test_path_labels_errors_name_the_parameter():
    params = _model()
    with pytest.raises(ValueError, match="encoder/layers/0/bias.*more than one"):
        gradtx.path_labels(params, {"**/bias": "a", "encoder/**": "b"})
    with pytest.raises(ValueError, match="head/w"):
        gradtx.path_labels(params, {"**/bias": "a", "encoder/**/w": "b"})


def test_freezing_by_path_allocates_nothing_and_updates_nothing():
    params = _model()
    labels = gradtx.path_labels(params, {"encoder/**": "frozen"}, default="train")
    tx = gradtx.multi_transform({"train": gradtx.adam(0.1), "frozen": gradtx.set_to_zero()}, labels)
    trained = run_functional(tx, params, 3)[-1]
    assert_trees_close(trained["encoder"], params["encoder"], "float32")
    assert not jnp.allclose(trained["head"]["w"], params["head"]["w"])
    head_only = sum(x.size for x in jax.tree.leaves(params["head"]))
    ours = gradtx.state_nbytes(tx, params)
    assert ours == 2 * 4 * head_only + 4
    theirs = gradtx.state_nbytes(
        optax.multi_transform({"train": optax.adam(0.1), "frozen": optax.set_to_zero()}, labels), params)
    assert ours <= theirs


def test_path_mask_decays_matrices_only():
    params = _model()
    mask = gradtx.path_mask(lambda path, x: x.ndim > 1)
    ours = run_functional(gradtx.adamw(0.1, weight_decay=0.5, mask=mask), params, 3)
    theirs = run_functional(optax.adamw(0.1, weight_decay=0.5, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
                            params, 3)
    assert_trees_close(ours[-1], theirs[-1], "float32")


def test_carry_state_to_an_edited_chain():
    params = _model()
    old_tx = gradtx.named_chain(("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale_by_learning_rate(0.1)))
    state = old_tx.init(params)
    _, state = old_tx.update(params, state, params)
    new_tx = gradtx.named_chain(("clip", gradtx.clip_by_global_norm(1.0)), ("adam", gradtx.scale_by_adam()),
                                ("lr", gradtx.scale_by_learning_rate(0.1)))
    carried, report = gradtx.carry_state(state, new_tx, params)
    assert report.carried == ["adam", "lr"] and report.fresh == ["clip"] and report.dropped == []
    assert int(carried["adam"].count) == 1
    new_tx.update(params, carried, params)
    with pytest.raises(TypeError, match="named_chain"):
        gradtx.carry_state((1, 2), new_tx, params)


def test_current_hyperparams_for_logging():
    params = _model()
    tx = gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=lambda c: 0.1 / (1 + c), weight_decay=0.01)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    values = gradtx.current_hyperparams(state)
    assert values["learning_rate"] == pytest.approx(0.1) and values["weight_decay"] == pytest.approx(0.01)
