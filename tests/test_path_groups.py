"""gradtx.optim.path_groups: param groups from path patterns and predicates, frozen parameters, the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import optim
from gradtx.optim import FROZEN, Parameter, ParamGroups, path_groups
from gradtx.optim._params import grads_for, path_parts, tree_values


def _model():
    rng = np.random.default_rng(0)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    return {
        "embed": {"table": leaf(6, 3)},
        "encoder": {"layers": [{"w": leaf(3, 3), "bias": leaf(3)}, {"w": leaf(3, 3), "bias": leaf(3)}]},
        "head": {"w": leaf(3, 2), "bias": leaf(2)},
        "steps": jnp.asarray(7),          # an integer array: passed over
        "activation": jnp.tanh,           # not an array: passed over
        "dropout": 0.1,
    }


def _loss(params):
    h = params["embed"]["table"]
    for layer in params["encoder"]["layers"]:
        h = params["activation"](h @ layer["w"] + layer["bias"])
    return jnp.sum((h @ params["head"]["w"] + params["head"]["bias"]) ** 2)


def _grads(params):
    arrays = {k: v for k, v in params.items() if k not in ("activation", "dropout", "steps")}
    full = jax.grad(lambda a: _loss({**params, **a}))(arrays)
    return {**full, "steps": None, "activation": None, "dropout": None}


def _names(group):
    return [name for name, _ in group["params"]]


RULES = {"**/bias": {"weight_decay": 0.0}, "embed/**": None}


def test_groups_tree_and_names():
    model = _model()
    pg = path_groups(model, RULES, default={"lr": 0.01})
    assert isinstance(pg, ParamGroups)
    assert [_names(g) for g in pg.groups] == [
        ["encoder.layers.0.bias", "encoder.layers.1.bias", "head.bias"],
        ["encoder.layers.0.w", "encoder.layers.1.w", "head.w"],
    ]
    assert [{k: v for k, v in g.items() if k != "params"} for g in pg.groups] == [{"weight_decay": 0.0}, {"lr": 0.01}]
    # The tree holds the very boxes of the groups; frozen and non-array leaves are left as they are.
    assert pg.tree["head"]["bias"] is pg.groups[0]["params"][2][1]
    assert pg.tree["encoder"]["layers"][1]["w"] is pg.groups[1]["params"][1][1]
    assert pg.tree["embed"]["table"] is model["embed"]["table"]
    assert pg.tree["steps"] is model["steps"] and pg.tree["activation"] is jnp.tanh and pg.tree["dropout"] == 0.1
    box = pg.tree["head"]["w"]
    assert isinstance(box, Parameter) and box.name == "head.w" and box.data is model["head"]["w"]


def test_predicates_patterns_and_pairs():
    model = _model()
    matrices = lambda path, x: x.ndim == 2 and not path.startswith("embed")
    pg = path_groups(model, [(matrices, {"lr": 0.1}), ("embed/*", FROZEN), ("**/bias", {})])
    assert [_names(g) for g in pg.groups] == [
        ["encoder.layers.0.w", "encoder.layers.1.w", "head.w"],
        ["encoder.layers.0.bias", "encoder.layers.1.bias", "head.bias"],
    ]
    # "*" stays inside one segment ("head/*" is not "encoder/layers/0/w"), "**" spans any number of them.
    pg = path_groups(model, {"encoder/layers/*/w": {}, "head/*": {"lr": 0.1}}, default=FROZEN)
    assert [_names(g) for g in pg.groups] == [["encoder.layers.0.w", "encoder.layers.1.w"], ["head.bias", "head.w"]]


def test_parameter_boxes_are_kept():
    w, b = Parameter(jnp.ones((2, 2))), Parameter(jnp.zeros(2), name="given")
    pg = path_groups({"w": w, "b": b}, {"w": {}, "b": None})
    assert pg.groups[0]["params"] == [("w", w)] and w.name == "w"
    assert pg.tree == {"w": w, "b": b}


def test_frozen_marker_and_none_leaves():
    import pickle

    assert pickle.loads(pickle.dumps(FROZEN)) is FROZEN and repr(FROZEN) == "FROZEN"
    pg = path_groups({"w": jnp.ones(2), "b": None, "frozen": jnp.ones(3)}, {"frozen": FROZEN}, default={})
    assert [_names(g) for g in pg.groups] == [["w"]] and pg.tree["b"] is None


def test_two_rules_is_an_error_naming_parameter_and_rules():
    with pytest.raises(ValueError, match=r"'encoder/layers/0/bias' matches '\*\*/bias', 'encoder/\*\*'"):
        path_groups(_model(), {"**/bias": {}, "encoder/**": {"lr": 0.1}}, default={})


def test_no_rule_without_default_is_an_error_naming_parameters():
    with pytest.raises(ValueError, match=r"match no rule.*'encoder/layers/0/w'.*'head/w'.*default=\{\}"):
        path_groups(_model(), RULES)


def test_unused_rule_is_an_error_unless_not_strict():
    with pytest.raises(ValueError, match=r"rules match no parameter: '\*\*/kernel'"):
        path_groups(_model(), {**RULES, "**/kernel": {}}, default={})
    pg = path_groups(_model(), {**RULES, "**/kernel": {}}, default={}, strict=False)
    assert len(pg.groups) == 2


def test_bad_rule_values_and_all_frozen():
    with pytest.raises(TypeError, match="'embed/\\*\\*' maps to 0.1"):
        path_groups(_model(), {"embed/**": 0.1}, default={})
    with pytest.raises(ValueError, match="contain 'params'"):
        path_groups(_model(), {"embed/**": {"params": []}}, default={})
    with pytest.raises(ValueError, match="every parameter is frozen"):
        path_groups(_model(), {"embed/**": None}, default=FROZEN)


def _dotted(tree):
    """``{name: leaf}`` for the float leaves (boxes read as their arrays), named as the optimizer names them."""
    flat = jax.tree_util.tree_flatten_with_path(tree_values(tree))[0]
    return {".".join(path_parts(path)): x for path, x in flat
            if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)}


def _with(model, values):
    """``model`` with the leaves named in ``values`` replaced."""
    return jax.tree_util.tree_map_with_path(lambda path, x: values.get(".".join(path_parts(path)), x), model)


def _reference(steps):
    """AdamW over hand-built named groups: biases without decay, matrices with lr 0.01, the embedding frozen."""
    model = _model()
    flat = _dotted(model)
    biases = [(n, jnp.array(x)) for n, x in flat.items() if n.endswith("bias")]
    weights = [(n, jnp.array(x)) for n, x in flat.items() if n.endswith(".w")]
    opt = optim.AdamW([{"params": biases, "weight_decay": 0.0}, {"params": weights, "lr": 0.01}], lr=0.05)
    boxes = {name: box for group in opt.param_groups for name, box in zip(group["param_names"], group["params"])}
    for _ in range(steps):
        grads = _dotted(_grads(_with(model, {name: box.data for name, box in boxes.items()})))
        for name, box in boxes.items():
            box.grad = grads[name]
        opt.step()
    return {name: box.data for name, box in boxes.items()}


def _check_against_reference(opt, values, steps):
    reference = _reference(steps)
    for group in opt.param_groups:
        for name, box in zip(group["param_names"], group["params"]):
            np.testing.assert_allclose(np.asarray(box.data), np.asarray(reference[name]), rtol=1e-6, atol=1e-7)
    assert len(opt.state) == 6                                    # no state for the frozen embedding
    np.testing.assert_array_equal(np.asarray(values["embed"]["table"]), np.asarray(_model()["embed"]["table"]))


def test_optimizer_from_groups_trains_like_hand_built_groups():
    pg = path_groups(_model(), RULES, default={"lr": 0.01})
    opt = optim.AdamW(pg.groups, lr=0.05)
    assert [g["param_names"] for g in opt.param_groups] == [_names(g) for g in pg.groups]
    for _ in range(3):
        for box, grad in grads_for(pg.tree, _grads(tree_values(pg.tree))):
            box.grad = grad
        opt.step()
    _check_against_reference(opt, tree_values(pg.tree), 3)


def test_optimizer_takes_param_groups_directly():
    """``AdamW(path_groups(...))``: opt.params and opt.step(grads) in the structure of the tree."""
    opt = optim.AdamW(path_groups(_model(), RULES, default={"lr": 0.01}), lr=0.05)
    for _ in range(3):
        opt.step(_grads(opt.params))        # the frozen embedding's gradient is ignored
    values = opt.params
    assert values["activation"] is jnp.tanh and values["dropout"] == 0.1
    _check_against_reference(opt, values, 3)
