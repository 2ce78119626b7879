"""Buckets: parameters with equal step counts step through one chain state, with torch's per-parameter numbers.

torch keeps a step per parameter; the engine steps parameters whose steps are
equal as one tree (one state, one bias correction, one trace), gives a parameter
that skipped a step a bucket of its own, and merges buckets whose steps are
equal again (after a load). Every tier gives the same numbers, bit for bit, and
torch's, checked live.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx.optim as optim
from gradtx.optim import _engine

jax.config.update("jax_enable_x64", True)

TIERS = {"fused": {}, "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
# Large enough not to be packed in the default tier (pack_max_numel: 8192); a 2-D, a 1-D and a 3-D parameter.
SHAPES = {"w": (100, 90), "b": (9000,), "k": (3, 50, 60)}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape) for name, shape in SHAPES.items()}


def _grads(step):
    """Gradients of step ``step`` (1-based); ``b`` has none at step 2, so it skips that step."""
    rng = np.random.default_rng(100 + step)
    return {name: None if (name == "b" and step == 2) else rng.normal(size=shape) for name, shape in SHAPES.items()}


def _gradtx_run(name, tier, steps=4, **options):
    opt = getattr(optim, name)({k: jnp.asarray(v) for k, v in _params().items()}, **options, **TIERS[tier])
    for step in range(1, steps + 1):
        opt.step({k: None if g is None else jnp.asarray(g) for k, g in _grads(step).items()})
    return opt


def _torch_run(name, steps=4, **options):
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in _params().items()}
    opt = getattr(torch.optim, name)(list(tensors.values()), **options)
    for step in range(1, steps + 1):
        for k, g in _grads(step).items():
            tensors[k].grad = None if g is None else torch.tensor(g)
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RAdam", "Adamax"])
def test_a_parameter_that_skips_a_step_keeps_its_own_count_in_every_tier(name):
    expected = _torch_run(name, lr=0.01)
    results = {tier: _gradtx_run(name, tier, lr=0.01) for tier in TIERS}
    for tier, opt in results.items():
        for k, value in opt.params.items():
            np.testing.assert_allclose(np.asarray(value), expected[k], rtol=1e-7, atol=1e-12, err_msg=f"{tier} {k}")
        steps = {k: float(opt.state[p]["step"]) for k, p in zip(SHAPES, opt.param_groups[0]["params"])}
        assert steps == {"w": 4.0, "b": 3.0, "k": 4.0}
    for tier in ("foreach", "for-loop"):  # the tiers agree bit for bit
        for k in SHAPES:
            np.testing.assert_array_equal(np.asarray(results[tier].params[k]), np.asarray(results["fused"].params[k]))


@pytest.mark.parametrize("tier", TIERS)
def test_parameters_that_stepped_together_share_one_step_array(tier):
    opt = _gradtx_run("NAdam", tier, steps=1, lr=0.01)
    w, b, k = opt.param_groups[0]["params"]
    assert opt.state[w]["step"] is opt.state[b]["step"] is opt.state[k]["step"]
    opt.step({name: None if name == "b" else jnp.ones(shape) for name, shape in SHAPES.items()})
    assert opt.state[w]["step"] is opt.state[k]["step"]
    assert opt.state[b]["step"] is not opt.state[w]["step"]


def test_a_group_compiles_one_bucket_however_many_parameters(monkeypatch):
    calls = []
    original = _engine.store_update

    def spy(decl, static, dynamic, params, *args, **kwargs):
        calls.append(len(params))
        return original(decl, static, dynamic, params, *args, **kwargs)

    monkeypatch.setattr(_engine, "store_update", spy)
    n = optim.NAdam.program_max_params  # a larger group runs as several programs (test_program_chunks.py)
    params = {f"p{i:02d}": jnp.full((300 + i,), 0.5) for i in range(n)}  # new shapes: a fresh trace
    opt = optim.NAdam(params, lr=0.01, foreach=True)
    opt.step(jax.tree.map(jnp.ones_like, params))
    assert calls == [n]


@pytest.mark.parametrize("tier", TIERS)
def test_loaded_steps_merge_back_into_one_bucket_with_the_same_numbers(tier):
    reference = _gradtx_run("Adam", tier, steps=3, lr=0.01)
    loaded = getattr(optim, "Adam")({k: jnp.asarray(v) for k, v in reference.params.items()}, lr=0.01,
                                    **TIERS[tier])
    loaded.load_state_dict(reference.state_dict())
    w, b, k = loaded.param_groups[0]["params"]
    assert loaded.state[w]["step"] is not loaded.state[k]["step"]  # each loaded as an array of its own
    for opt in (reference, loaded):
        opt.step({name: jnp.ones(shape) for name, shape in SHAPES.items()})
        opt.step({name: jnp.ones(shape) for name, shape in SHAPES.items()})
    for key in SHAPES:
        np.testing.assert_array_equal(np.asarray(loaded.params[key]), np.asarray(reference.params[key]))
    # w and k (step 5) merged; b (step 4: it skipped step 2) keeps its own
    assert loaded.state[w]["step"] is loaded.state[k]["step"]
    assert float(loaded.state[b]["step"]) == 4.0
