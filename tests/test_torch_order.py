"""torch's parameter order: a positional load gives torch's index i to the parameter torch had at index i.

JAX flattens dicts in sorted key order; torch numbers parameters in module
(registration) order. The facade numbers a tree's parameters in the order the
user wrote them (dict insertion order, a dataclass's field order), so loading a
real ``torch.optim.AdamW`` state dict into a tree that mirrors the torch model
pairs every moment with its own parameter, also when all parameters have the
same shape. Also: ``to_torch_state_dict`` / ``from_torch_state_dict`` through
``torch.save`` / ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx
from gradtx import optim
from gradtx.optim._params import ordered_flatten, positional_order_error
from tests.harness import TOLERANCES

F32 = TOLERANCES["float32"]


def _two_linears():
    model = torch.nn.Module()
    model.encoder = torch.nn.Linear(6, 6, bias=False)
    model.decoder = torch.nn.Linear(6, 6, bias=False)
    return model


def _nested():
    block = torch.nn.Module()
    block.mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    block.attn = torch.nn.Linear(4, 4)
    model = torch.nn.Module()
    model.head = torch.nn.Linear(4, 4)  # registered first, sorts last
    model.block = block
    return model


def _as_nested_dicts(model):
    """``{"head": {"weight": ..., "bias": ...}, "block": {...}}`` in torch's order, as a flax params dict is."""
    tree: dict = {}
    for name, p in model.named_parameters():
        *path, leaf = name.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(p.detach().numpy())
    return tree


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Linear:  # an equinox-like module: a pytree of fields, flattened in declaration order
    weight: jax.Array
    bias: jax.Array | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Autoencoder:
    encoder: Linear
    decoder: Linear


def _as_dataclasses(model):
    return Autoencoder(Linear(jnp.asarray(model.encoder.weight.detach().numpy())),
                       Linear(jnp.asarray(model.decoder.weight.detach().numpy())))


CASES = {  # model builder, tree builder
    "same-shaped-dict": (_two_linears, _as_nested_dicts),
    "nested-modules": (_nested, _as_nested_dicts),
    "flax-like": (_nested, lambda model: {"params": _as_nested_dicts(model)}),
    "equinox-like": (_two_linears, _as_dataclasses),
}


def _torch_loss(model):
    x = torch.linspace(-1.0, 1.0, 3 * 6).reshape(3, 6)[:, : next(model.parameters()).shape[1]]
    out = x
    for p in model.parameters():
        out = out @ p.T if p.ndim == 2 else out + p
    return (out**2).sum()


def _torch_steps(model, opt, n):
    for _ in range(n):
        opt.zero_grad()
        _torch_loss(model).backward()
        opt.step()


def _torch_grads(model):
    model.zero_grad()
    _torch_loss(model).backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def _ours_for_torch_index(opt):
    """Our boxes in order: the box at position i is the one a positional load pairs with torch's index i."""
    return [p for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("named", [False, True], ids=["parameters", "named_parameters"])
@pytest.mark.parametrize("case", CASES)
def test_torch_adamw_state_loads_by_position_into_its_own_parameters(case, named):
    make_model, make_tree = CASES[case]
    torch.manual_seed(0)
    model = make_model()
    params = model.named_parameters() if named else model.parameters()
    torch_opt = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    _torch_steps(model, torch_opt, 2)
    ours = optim.AdamW(make_tree(model), lr=0.01, weight_decay=0.1)
    ours.load_state_dict(optim.from_torch_state_dict(torch_opt.state_dict()))
    torch_params = list(model.parameters())
    boxes = _ours_for_torch_index(ours)
    assert [b.shape for b in boxes] == [tuple(p.shape) for p in torch_params]
    for box, p in zip(boxes, torch_params):
        np.testing.assert_array_equal(np.asarray(box.data), p.detach().numpy())  # the same parameter
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(np.asarray(ours.state[box][key]), torch_opt.state[p][key].numpy())
    # one more step on both, each parameter with its own gradient
    grads = _torch_grads(model)
    torch_opt.step()
    _, rebuild = ordered_flatten(ours.params)  # the tree's leaves in the order the parameters are numbered
    ours.step(rebuild([jnp.asarray(g) for g in grads]))
    for box, p in zip(boxes, torch_params):
        np.testing.assert_allclose(np.asarray(box.data), p.detach().numpy(), **F32)


def test_params_keep_the_order_they_were_written_in():
    tree = {"head": {"w": jnp.ones(2)}, "block": {"mlp": [jnp.ones(2), jnp.ones(2)], "attn": jnp.ones(2)}}
    opt = optim.SGD(tree, lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["head.w", "block.mlp.0", "block.mlp.1", "block.attn"]
    opt.step(jax.tree.map(jnp.ones_like, opt.params))
    assert list(opt.params) == ["head", "block"] and list(opt.params["block"]) == ["mlp", "attn"]
    assert jax.tree.structure(opt.params) == jax.tree.structure(tree)
    np.testing.assert_allclose(opt.params["head"]["w"], np.full(2, 0.9), **F32)
    assert optim.SGD(_as_dataclasses(_two_linears()), lr=0.1).param_groups[0]["param_names"] == [
        "encoder.weight", "decoder.weight"]


def test_reordered_names_are_a_positional_misassignment():
    saved = optim.AdamW({"decoder": jnp.ones(3), "encoder": jnp.zeros(3)}).state_dict()
    opt = optim.AdamW({"encoder": jnp.zeros(3), "decoder": jnp.ones(3)})
    message = positional_order_error(opt.param_groups, saved["param_groups"])
    assert "parameter 0 is 'decoder'" in message and "parameter 0 is 'encoder'" in message
    assert "match='name'" in message
    assert positional_order_error(opt.param_groups, opt.state_dict()["param_groups"]) is None
    unnamed = {**saved, "param_groups": [{k: v for k, v in g.items() if k != "param_names"}
                                         for g in saved["param_groups"]]}
    assert positional_order_error(opt.param_groups, unnamed["param_groups"]) is None


def test_names_for_a_state_dict_saved_from_model_parameters():
    torch.manual_seed(0)
    model = _two_linears()
    torch_opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    _torch_steps(model, torch_opt, 1)
    names = [n for n, _ in model.named_parameters()]
    tree = _as_nested_dicts(model)
    ours = optim.AdamW({"decoder": tree["decoder"], "encoder": tree["encoder"]}, lr=0.01)  # another order
    sd = optim.from_torch_state_dict(torch_opt.state_dict(), names=names)
    assert sd["param_groups"][0]["param_names"] == ["encoder.weight", "decoder.weight"]
    assert positional_order_error(ours.param_groups, sd["param_groups"]) is not None
    ours.load_state_dict(sd, match="name")
    for name, box in zip(ours.param_groups[0]["param_names"], ours.param_groups[0]["params"]):
        torch_p = model.get_parameter(name)
        np.testing.assert_array_equal(np.asarray(ours.state[box]["exp_avg"]), torch_opt.state[torch_p]["exp_avg"])
    with pytest.raises(ValueError, match="names has 1 names.*named_parameters"):
        optim.from_torch_state_dict(torch_opt.state_dict(), names=names[:1])


# --- torch.save / torch.load ---------------------------------------------------------------------------------


def test_torch_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _two_linears()
    tree = _as_nested_dicts(model)
    ours = optim.AdamW(tree, lr=0.01, weight_decay=0.1)
    grads = jax.tree.map(lambda x: jnp.cos(x) * 0.1, ours.params)
    for _ in range(2):
        ours.step(grads)
    saved = ours.state_dict()
    torch.save(optim.to_torch_state_dict(saved), tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert isinstance(loaded["state"][0]["exp_avg"], torch.Tensor)
    back = optim.from_torch_state_dict(loaded)
    for key, entry in saved["state"].items():
        for name, value in entry.items():
            assert back["state"][key][name].dtype == value.dtype
            np.testing.assert_array_equal(back["state"][key][name], value)
    assert back["param_groups"] == saved["param_groups"]
    # a torch optimizer continues from it, as ours does
    with torch.no_grad():
        for p, (name, value) in zip(model.parameters(), [("encoder", ours.params["encoder"]["weight"]),
                                                         ("decoder", ours.params["decoder"]["weight"])]):
            p.copy_(torch.from_numpy(np.array(value)))
    torch_opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    torch_opt.load_state_dict(loaded)
    for p, g in zip(model.parameters(), [grads["encoder"]["weight"], grads["decoder"]["weight"]]):
        p.grad = torch.from_numpy(np.array(g))
    torch_opt.step()
    ours.step(grads)
    for p, value in zip(model.parameters(), [ours.params["encoder"]["weight"], ours.params["decoder"]["weight"]]):
        np.testing.assert_allclose(p.detach().numpy(), np.asarray(value), **F32)


def test_torch_conversion_keeps_bfloat16_and_refuses_schedules():
    opt = optim.Adam([jnp.ones(3, jnp.bfloat16)], lr=0.1)
    opt.step([jnp.full(3, 0.5, jnp.bfloat16)])
    converted = optim.to_torch_state_dict(opt.state_dict())
    assert converted["state"][0]["exp_avg"].dtype == torch.bfloat16
    back = optim.from_torch_state_dict(converted)
    assert back["state"][0]["exp_avg"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(back["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt = optim.Adam([jnp.ones(3)], lr=gradtx.linear_schedule(0.1, 0.0, 10))
    with pytest.raises(TypeError, match=r"\['param_groups'\]\[0\]\['lr'\] is a schedule.*save_state_dict_npz"):
        optim.to_torch_state_dict(opt.state_dict())
