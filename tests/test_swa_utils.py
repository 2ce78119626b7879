"""gradtx.optim.swa_utils against torch.optim.swa_utils, live: averaged parameters step by step, SWALR's lrs, update_bn."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx.optim as optim
from gradtx.optim import swa_utils as ours
from tests.harness import TOLERANCES, assert_trees_close, grad_fn, make_params

STEPS = 10


@dataclass(frozen=True)
class AvgCase:
    """One way of averaging, built the same way from either module (``m`` is gradtx's or torch's swa_utils)."""

    id: str
    make: Callable[[Any], dict]  # m -> AveragedModel keyword arguments
    use_buffers: bool = False
    int_buffer: bool = True  # torch's foreach SWA rule cannot average integer buffers (addcdiv on integers)


AVG_CASES = [
    AvgCase("swa-default", lambda m: {}),
    AvgCase("swa-default-buffers", lambda m: {}, use_buffers=True),
    AvgCase("swa-avg_fn", lambda m: {"avg_fn": m.get_swa_avg_fn()}, use_buffers=True),
    AvgCase("swa-multi", lambda m: {"multi_avg_fn": m.get_swa_multi_avg_fn()}, use_buffers=True, int_buffer=False),
    AvgCase("ema-multi", lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn(0.9)}, use_buffers=True),
    AvgCase("ema-multi-high", lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn(0.3)}),
    AvgCase("ema-avg_fn", lambda m: {"avg_fn": m.get_ema_avg_fn(0.8)}, use_buffers=True),
    AvgCase("custom-avg_fn", lambda m: {"avg_fn": lambda a, c, n: 0.25 * a + 0.75 * c}),
]


class TorchModel(torch.nn.Module):
    """Parameters and buffers in the order of the JAX trees' leaves."""

    def __init__(self, params: Any, buffers: Any) -> None:
        super().__init__()
        self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(np.asarray(x))) for x in jax.tree.leaves(params)])
        for i, b in enumerate(jax.tree.leaves(buffers)):
            self.register_buffer(f"b{i}", torch.tensor(np.asarray(b)))

    def load(self, params: Any, buffers: Any) -> None:
        with torch.no_grad():
            for p, x in zip(self.ps, jax.tree.leaves(params)):
                p.copy_(torch.tensor(np.asarray(x)))
            for b, x in zip(self.buffers(), jax.tree.leaves(buffers)):
                b.copy_(torch.tensor(np.asarray(x)))


def _buffers(step: int, dtype: str, with_int: bool) -> dict:
    rng = np.random.default_rng(100 + step)
    out = {"mean": jnp.asarray(rng.normal(size=(3,)), dtype), "var": jnp.asarray(rng.uniform(1, 2, size=(3,)), dtype)}
    if with_int:
        out["count"] = jnp.asarray(3 * step + 7, jnp.int64)
    return out


def _assert_matches(tree: Any, tensors: Any, dtype: str, context: str) -> None:
    expected = jax.tree.unflatten(jax.tree.structure(tree), [t.detach().numpy() for t in tensors])
    assert_trees_close(tree, expected, dtype, context)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: c.id)
def test_averaged_model_matches_torch_step_by_step(case, dtype):
    opt = optim.SGD(make_params(dtype), lr=0.05, momentum=0.9)
    buffers = _buffers(0, dtype, case.int_buffer)
    torch_model = TorchModel(opt.params, buffers)
    theirs = torch.optim.swa_utils.AveragedModel(torch_model, use_buffers=case.use_buffers, **case.make(torch.optim.swa_utils))
    mine = ours.AveragedModel(opt, use_buffers=case.use_buffers, buffers=buffers, **case.make(ours))
    for step in range(STEPS):
        opt.step(grad_fn(opt.params))
        buffers = _buffers(step + 1, dtype, case.int_buffer)
        torch_model.load(opt.params, buffers)
        theirs.update_parameters(torch_model)
        mine.update_parameters(opt, buffers=buffers)
        assert int(mine.n_averaged) == int(theirs.n_averaged) == step + 1
        _assert_matches(mine.module, theirs.module.ps, dtype, f"{case.id} params, step {step}")
        _assert_matches(mine.buffers, list(theirs.module.buffers()), dtype, f"{case.id} buffers, step {step}")
        assert jax.tree.map(lambda x: x.dtype, mine.module) == jax.tree.map(lambda x: x.dtype, opt.params)


def test_averaged_model_over_trees_and_boxes_and_state_dict():
    params = make_params("float64")
    boxes = [optim.Parameter(x) for x in jax.tree.leaves(params)]
    by_tree, by_boxes = ours.AveragedModel(params), ours.AveragedModel(boxes)
    for step in range(3):
        params = jax.tree.map(lambda x: x + 0.1 * (step + 1), params)
        for box, x in zip(boxes, jax.tree.leaves(params)):
            box.data = x
        by_tree.update_parameters(params)
        by_boxes.update_parameters(boxes)
    assert_trees_close(jax.tree.leaves(by_tree.params), by_boxes.module, "float64", "tree vs boxes")
    restored = ours.AveragedModel(make_params("float64"))
    restored.load_state_dict(copy.deepcopy(by_tree.state_dict()))
    assert int(restored.n_averaged) == 3
    assert_trees_close(restored.module, by_tree.module, "float64", "state_dict round trip")
    with pytest.raises(ValueError, match="missing from the model's parameters"):
        by_tree.update_parameters({"w": params["w"]})
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn"):
        ours.AveragedModel(params, avg_fn=ours.get_swa_avg_fn(), multi_avg_fn=ours.get_swa_multi_avg_fn())
    for make in (ours.get_ema_avg_fn, ours.get_ema_multi_avg_fn):
        with pytest.raises(ValueError, match=r"Invalid decay value 1.5 provided. Please provide a value in \[0,1\] range."):
            make(1.5)


# -- SWALR ------------------------------------------------------------------------------------------------------

SWALR_CASES = [
    dict(swa_lr=0.05),
    dict(swa_lr=0.05, anneal_strategy="linear", anneal_epochs=4),
    dict(swa_lr=[0.01, 0.2], anneal_epochs=3),
    dict(swa_lr=0.3, anneal_epochs=0),
    dict(swa_lr=0.3, anneal_epochs=1, anneal_strategy="linear"),
]


def _optimizers() -> tuple[Any, Any]:
    groups = [(0.1, 0.9), (0.02, 0.0)]
    mine = optim.SGD([{"params": [optim.Parameter(jnp.zeros(2))], "lr": lr, "momentum": m} for lr, m in groups], lr=0.1)
    theirs = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr, "momentum": m} for lr, m in groups], lr=0.1)
    mine._opt_called = theirs._opt_called = True  # the schedulers alone are driven here: no order warning
    return mine, theirs


@pytest.mark.parametrize("kwargs", SWALR_CASES, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_swalr_lrs_match_torch(kwargs):
    mine_opt, torch_opt = _optimizers()
    # An earlier schedule first, then SWALR takes over from whatever lr it left (torch's recipe).
    for opt, module in ((mine_opt, optim.lr_scheduler), (torch_opt, torch.optim.lr_scheduler)):
        before = module.ExponentialLR(opt, gamma=0.9)
        for _ in range(3):
            before.step()
    mine = ours.SWALR(mine_opt, **kwargs)
    theirs = torch.optim.swa_utils.SWALR(torch_opt, **kwargs)
    for step in range(12):
        np.testing.assert_allclose(mine.get_last_lr(), theirs.get_last_lr(), rtol=1e-14, err_msg=f"step {step}")
        assert [g["swa_lr"] for g in mine_opt.param_groups] == [g["swa_lr"] for g in torch_opt.param_groups]
        if step == 5:  # resume from a state_dict into a fresh scheduler
            state = mine.state_dict()
            assert "anneal_func" not in state and "optimizer" not in state
            mine = ours.SWALR(mine_opt, **kwargs)
            mine.load_state_dict(state)
        mine.step()
        theirs.step()


def test_swalr_takes_in_a_group_added_later():
    opt, _ = _optimizers()
    scheduler = ours.SWALR(opt, swa_lr=0.05, anneal_epochs=2)
    opt.add_param_group({"params": [optim.Parameter(jnp.zeros(3))], "lr": 0.4})
    for _ in range(3):
        scheduler.step()
    assert opt.param_groups[2]["swa_lr"] == 0.05
    np.testing.assert_allclose(scheduler.get_last_lr()[2], 0.05, rtol=1e-14)


def test_swalr_errors_are_torchs():
    mine_opt, torch_opt = _optimizers()
    for bad, match in ((dict(swa_lr=0.1, anneal_strategy="step"), "anneal_strategy must be one of 'cos' or 'linear'"),
                       (dict(swa_lr=0.1, anneal_epochs=-1), "anneal_epochs must be equal or greater than 0"),
                       (dict(swa_lr=[0.1]), "swa_lr must have the same length as optimizer.param_groups")):
        with pytest.raises(ValueError, match=match):
            torch.optim.swa_utils.SWALR(torch_opt, **bad)
        with pytest.raises(ValueError, match=match):
            ours.SWALR(mine_opt, **bad)


# -- update_bn --------------------------------------------------------------------------------------------------

def _torch_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                               torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2, momentum=0.3)).double()


def _jax_apply(momentum: float) -> Callable:
    """The same network as a JAX function; running stats follow ``new = (1 - momentum) old + momentum batch``."""

    def bn(x, p, s):
        mean, var = x.mean(0), x.var(0)
        n = x.shape[0]
        new = {"mean": (1 - momentum) * s["mean"] + momentum * mean,
               "var": (1 - momentum) * s["var"] + momentum * var * n / (n - 1),
               "num_batches_tracked": s["num_batches_tracked"] + 1}
        return (x - mean) / jnp.sqrt(var + 1e-5) * p["weight"] + p["bias"], new

    def apply(params, stats, x):
        h, s1 = bn(x @ params["l0"]["weight"].T + params["l0"]["bias"], params["bn1"], stats["bn1"])
        h = jax.nn.relu(h)
        y, s4 = bn(h @ params["l3"]["weight"].T + params["l3"]["bias"], params["bn4"], stats["bn4"])
        return y, {"bn1": s1, "bn4": s4}

    return apply


@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_update_bn_matches_torch(momentum):
    net = _torch_net()
    sd = {k: jnp.asarray(v.numpy()) for k, v in net.state_dict().items()}
    params = {"l0": {"weight": sd["0.weight"], "bias": sd["0.bias"]}, "l3": {"weight": sd["3.weight"], "bias": sd["3.bias"]},
              "bn1": {"weight": sd["1.weight"], "bias": sd["1.bias"]}, "bn4": {"weight": sd["4.weight"], "bias": sd["4.bias"]}}
    stale = {name: {"mean": jnp.full(n, 5.0), "var": jnp.full(n, 9.0), "num_batches_tracked": jnp.asarray(40, jnp.int64)}
             for name, n in (("bn1", 4), ("bn4", 2))}
    rng = np.random.default_rng(0)
    loader = [(rng.normal(size=(size, 3)), rng.integers(0, 2, size)) for size in (6, 9, 5, 8)]
    net.train(False)
    torch.optim.swa_utils.update_bn([(torch.tensor(x), torch.tensor(y)) for x, y in loader], net)
    assert not net.training
    new = ours.update_bn([(jnp.asarray(x), y) for x, y in loader], _jax_apply(momentum), params, stale)
    for name, index in (("bn1", "1"), ("bn4", "4")):
        for key, torch_key in (("mean", "running_mean"), ("var", "running_var")):
            np.testing.assert_allclose(np.asarray(new[name][key]), getattr(net, index).__getattr__(torch_key).numpy(),
                                       err_msg=f"{name}.{key}", **TOLERANCES["float64"])
        assert int(new[name]["num_batches_tracked"]) == int(getattr(net, index).num_batches_tracked) == len(loader)
    assert ours.update_bn([], _jax_apply(momentum), params, stale) is stale
