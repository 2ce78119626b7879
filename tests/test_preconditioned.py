"""SOAP, Shampoo, MARS, LaProp, SCION and AdamMini beyond the shared parity table: SOAP's QR refresh, state names, errors, the aliases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
import gradtx.optim as optim
from tests.cases.preconditioned import SOAP_QR_CASES
from tests.harness import TOLERANCES, assert_trees_close, make_params, run_functional, run_torch
from tests.test_beyond_optimizers import _assert_same_params, _lockstep, _reference, step_skipping
from tests.test_facade_parity import jit_grad


def _close_at_float32_tolerance(ours, theirs, context):
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), err_msg=f"{context} step {step + 1}",
                                       **TOLERANCES["float32"])


# pytorch_optimizer.SOAP computes the QR decomposition of its basis refresh in float32 whatever the dtype (and so
# does gradtx, to follow it): after a refresh, float64 runs agree to float32's precision only.
@pytest.mark.parametrize("case", SOAP_QR_CASES, ids=lambda c: c.id)
def test_soap_refresh_matches_reference_to_float32_precision(case):
    params = case.params("float64") if case.params else make_params("float64")
    theirs = run_torch(case.torch_name, case.kwargs, params, case.steps, module=case.module)
    _close_at_float32_tolerance(run_functional(case.chain(**case.kwargs), params, case.steps), theirs, case.id)


def test_soap_facade_refresh_matches_reference_to_float32_precision():
    case = SOAP_QR_CASES[0]
    params = case.params("float64") if case.params else make_params("float64")
    theirs = run_torch(case.torch_name, case.kwargs, params, case.steps, module=case.module)
    opt = optim.SOAP(jax.tree.map(jnp.array, params), **case.kwargs)
    ours = []
    for _ in range(case.steps):
        opt.step(jit_grad(opt.params))
        ours.append(jax.tree.map(np.array, opt.params))
    _close_at_float32_tolerance(ours, theirs, case.id + " (facade)")


# The leaves of make_params are b (5,), nested (2, 2), s () and w (4, 3): nested first gets a gradient at step 5,
# and w skips it, where SOAP (precondition_frequency=4, counted from its statistics-only first step) and Shampoo
# (preconditioning_compute_steps=5) refresh. SOAP's refresh takes a float32 QR: float32 tolerance. (A late
# parameter's statistics come from one gradient; for nested they have full rank, so its basis is unique.)
LATE_STARTS = [
    ("SOAP", SOAP_QR_CASES[0].kwargs, TOLERANCES["float32"]),
    ("Shampoo", dict(lr=0.05, momentum=0.3, weight_decay=0.1, preconditioning_compute_steps=5),
     dict(rtol=1e-7, atol=1e-10)),
]


@pytest.mark.parametrize("name,kwargs,tolerance", LATE_STARTS, ids=[row[0] for row in LATE_STARTS])
def test_a_parameter_first_stepped_at_a_refresh_step_as_the_reference(name, kwargs, tolerance):
    """The refreshes follow the param group's step count: a parameter whose first gradient comes at a refresh
    step is refreshed at once (SOAP gathers its statistics and steps in the same call), one that skips a refresh
    step is not refreshed at its next."""
    import pytorch_optimizer

    params = make_params("float64")
    tensors, theirs = _reference(name, kwargs, params, pytorch_optimizer)
    ours = getattr(optim, name)(jax.tree.map(jnp.array, params), **kwargs)
    for step, skipped in enumerate([(1,), (1,), (1,), (1,), (3,), ()], 1):
        step_skipping(ours, theirs, tensors, skipped)
        for a, t in zip(jax.tree.leaves(ours.params), tensors):
            np.testing.assert_allclose(np.asarray(a), t.detach().numpy(), err_msg=f"{name} step {step}", **tolerance)


def test_soap_loads_the_references_state_dict_and_continues_as_the_reference():
    """pytorch_optimizer.SOAP's lists GG and Q (and the options it copies into each parameter's state) load as one
    entry per rotated axis; the run then continues as the reference's (the 1-D leaves have no preconditioner)."""
    import pytorch_optimizer

    from tests.test_facade_engine import to_numpy

    kwargs = dict(lr=0.05, eps=1e-3, precondition_frequency=100, weight_decay=0.1)
    params = make_params("float64")
    tensors, theirs = _reference("SOAP", kwargs, params, pytorch_optimizer)
    ours = optim.SOAP(jax.tree.map(jnp.array, params), **kwargs)
    _lockstep(ours, theirs, tensors, 3)
    loaded = optim.SOAP(jax.tree.map(jnp.array, ours.params), **kwargs)
    loaded.load_state_dict(to_numpy(theirs.state_dict()))
    w = loaded.param_groups[0]["params"][3]
    assert list(loaded.state[w]) == ["exp_avg", "exp_avg_sq", "GG.0", "GG.1", "Q.0", "Q.1"]
    for name, axis in (("GG", 0), ("Q", 1)):
        np.testing.assert_array_equal(loaded.state[w][f"{name}.{axis}"], theirs.state[tensors[3]][name][axis].numpy())
    _lockstep(loaded, theirs, tensors, 3)
    _assert_same_params(loaded, tensors, "SOAP, loaded from the reference's state dict")


def test_soap_state_names_one_entry_per_rotated_axis():
    opt = optim.SOAP({"w": jnp.ones((4, 3)), "b": jnp.ones(5)}, lr=0.1, max_precondition_dim=3)
    opt.step({"w": jnp.arange(12.0).reshape(4, 3), "b": jnp.ones(5)})
    w, b = opt.param_groups[0]["params"]  # in the order written
    assert list(opt.state[w]) == ["exp_avg", "exp_avg_sq", "GG.1", "Q.1"]  # the 4-long axis is not rotated
    assert opt.state[w]["GG.1"].shape == (3, 3)
    assert list(opt.state[b]) == ["exp_avg", "exp_avg_sq"]
    assert opt.param_groups[0]["step"] == 1  # the step count is the group's, as the reference keeps it
    np.testing.assert_array_equal(opt.params["w"], jnp.ones((4, 3)))  # the first step only gathers statistics


@pytest.mark.parametrize("name, kwargs, message", [
    ("SOAP", dict(lr=-1.0), "learning rate must be positive"),
    ("SOAP", dict(betas=(1.0, 0.9)), "beta1 must be in the range"),
    ("SOAP", dict(precondition_frequency=0), "precondition_frequency must be positive"),
    ("SOAP", dict(shampoo_beta=-0.1), "shampoo_beta must be non-negative"),
    ("MARS", dict(mars_type="sgd"), "mars_type sgd must be one of"),
    ("MARS", dict(betas_1d=(0.9, 1.5)), "beta2 must be in the range"),
    ("MARS", dict(lr_1d=-1.0), "learning rate must be positive"),
    ("LaProp", dict(weight_decay=-1.0), "weight_decay must be non-negative"),
    ("SCION", dict(momentum=0.0), "momentum must be in the range"),
    ("SCION", dict(scale=0.0), "scale must be positive"),
    ("Shampoo", dict(momentum=1.0), "momentum must be in the range"),
    ("Shampoo", dict(preconditioning_compute_steps=0), "preconditioning_compute_steps must be positive"),
    ("AdamMini", dict(num_embeds=6, num_heads=4), "6 must be divisible by 4"),
    ("AdamMini", dict(betas=(0.9, 1.0)), "beta2 must be in the range"),
])
def test_reference_validation(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(optim, name)([jnp.ones(3)], **kwargs)


def test_soap_merge_error_names_the_shape_and_the_fix():
    tx = gradtx.scale_by_soap(merge_dims=True, max_precondition_dim=100)
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*max_precondition_dim"):
        tx.init({"w": jnp.ones((4, 3))})


@pytest.mark.parametrize("alias, kwargs", [
    (gradtx.soap, dict(learning_rate=0.05, eps=1e-3, precondition_frequency=12)),
    (gradtx.mars, dict(learning_rate=0.05, weight_decay=0.1, ams_bound=True)),
    (gradtx.mars, dict(learning_rate=0.05, lion=True, cautious=True)),
    (gradtx.laprop, dict(learning_rate=0.05, centered=True, steps_before_using_centered=3, weight_decay=0.1)),
    (gradtx.scion, dict(learning_rate=0.05, norm="bias", weight_decay=0.1)),
    (gradtx.shampoo, dict(learning_rate=0.05, momentum=0.5, matrix_eps=0.1, weight_decay=0.1)),
    (gradtx.adam_mini, dict(learning_rate=0.05)),
    (gradtx.adam_mini, dict(learning_rate=0.05, block="element", weight_decay=None)),
])
def test_aliases_run_on_matrices_and_keep_dtypes(alias, kwargs):
    params = make_params("float32")
    trajectory = run_functional(alias(**kwargs), params, 4)
    assert jax.tree.map(lambda x: x.dtype, trajectory[-1]) == jax.tree.map(lambda x: x.dtype, params)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trajectory[-1]))


def test_mars_alias_with_optimize_1d_is_the_facade_chain():
    """gradtx.mars is pytorch_optimizer's MARS with optimize_1d=True (every leaf takes the MARS step)."""
    params = make_params("float64")
    ours = run_functional(gradtx.mars(0.05, weight_decay=0.1), params, 6)
    theirs = run_torch("MARS", dict(lr=0.05, optimize_1d=True, weight_decay=0.1), params, 6,
                       module="pytorch_optimizer")
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"step {step + 1}")


def test_scion_alias_is_the_reference_with_one_norm():
    """gradtx.scion with the spectral norm on matrices equals pytorch_optimizer.SCION(norm_type=2)."""
    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3))), "t": jnp.asarray(rng.normal(size=(2, 5)))}
    ours = run_functional(gradtx.scion(0.05, 0.2, "spectral", radius=2.0, weight_decay=0.1), params, 6)
    theirs = run_torch("SCION", dict(lr=0.05, momentum=0.2, norm_type=2, scale=2.0, weight_decay=0.1), params, 6,
                       module="pytorch_optimizer")
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"step {step + 1}")


def test_lmo_auto_refuses_five_dimensional_arrays_with_the_fix():
    with pytest.raises(NotImplementedError, match="choose a norm"):
        gradtx.lmo_direction(jnp.ones((1, 1, 1, 1, 2)))


def test_shampoo_alias_is_the_reference_with_decoupled_decay():
    params = make_params("float64")
    ours = run_functional(gradtx.shampoo(0.05, 0.3, weight_decay=0.1), params, 6)
    theirs = run_torch("Shampoo", dict(lr=0.05, momentum=0.3, weight_decay=0.1, weight_decouple=True), params, 6,
                       module="pytorch_optimizer")
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"step {step + 1}")


def _torch_module(tree):
    """An nn.Module whose named_parameters() are the tree's leaves under their "."-joined paths."""
    import torch

    root = torch.nn.Module()
    for name, value in tree.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(torch.tensor(np.asarray(value))))
    return root


def _nest(flat):
    tree = {}
    for name, value in flat.items():
        *path, leaf = name.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


# Every block kind of pytorch_optimizer.AdamMini: embedding (Adam), query/key projection (per head), fused
# attention (per query group and head), a norm (no decay) and the rest (one value per tensor); num_embeds=4.
ADAM_MINI_SHAPES = {"wte.weight": (5, 4), "layer.q_proj.weight": (4, 4), "layer.attn.qkv.weight": (12, 4),
                    "layer.ln_f.weight": (4,), "layer.mlp.weight": (3, 4), "layer.mlp.bias": (3,)}
ADAM_MINI_OPTIONS = [
    dict(lr=0.05, num_embeds=4, num_heads=2),
    dict(lr=0.05, betas=(0.8, 0.95), weight_decay=0.2, num_embeds=4, num_heads=2, num_query_groups=1, eps=1e-3,
         maximize=True),
]


# pytorch_optimizer.AdamMini computes in float32 whatever the parameters' dtype: compared in float32.
@pytest.mark.parametrize("kwargs", ADAM_MINI_OPTIONS, ids=str)
def test_adam_mini_matches_reference(kwargs):
    import torch
    from pytorch_optimizer import AdamMini

    rng = np.random.default_rng(9)
    flat = {name: rng.normal(size=shape).astype(np.float32) for name, shape in ADAM_MINI_SHAPES.items()}
    module = _torch_module(flat)
    theirs = AdamMini(module, **kwargs)
    named = dict(module.named_parameters())
    ours = {tier: optim.AdamMini(_nest({k: jnp.asarray(v) for k, v in flat.items()}), **kwargs, foreach=tier)
            for tier in (None, False)}
    grad = jax.jit(jax.grad(lambda p: sum(jnp.sum(jnp.sin(3 * x) + 0.5 * (i + 1) * x * x)
                                          for i, x in enumerate(jax.tree.leaves(p)))))
    for step in range(10):
        grads = grad(_nest({k: jnp.asarray(t.detach().numpy()) for k, t in named.items()}))
        for name, t in named.items():
            node = grads
            for part in name.split("."):
                node = node[part]
            t.grad = torch.tensor(np.asarray(node))
        theirs.step()
        expected = _nest({k: t.detach().numpy().copy() for k, t in named.items()})
        for tier, opt in ours.items():
            opt.step(grad(opt.params))
            assert_trees_close(jax.tree.map(np.asarray, opt.params), expected, "float32", f"{tier} step {step + 1}")


@pytest.mark.parametrize("alias, kwargs", [
    (gradtx.soap, dict(b1=lambda c: 0.9 - 0.1 * 0.5**c, eps=lambda c: 1e-3 * (1 + c), precondition_frequency=3)),
    (gradtx.mars, dict(b1=lambda c: 0.9 - 0.1 * 0.5**c, gamma=lambda c: 0.01 * c, eps=lambda c: 1e-8 * (1 + c))),
    (gradtx.laprop, dict(b2=lambda c: 0.99 - 0.1 * 0.5**c, eps=lambda c: 1e-8 * (1 + c))),
    (gradtx.shampoo, dict(momentum=lambda c: 0.5 * c / (1 + c), preconditioning_compute_steps=2, matrix_eps=0.1)),
    (gradtx.adam_mini, dict(b1=lambda c: 0.9 - 0.1 * 0.5**c, eps=lambda c: 1e-8 * (1 + c))),
], ids=lambda x: getattr(x, "__name__", ""))
def test_hyperparameters_accept_schedules(alias, kwargs):
    trajectory = run_functional(alias(lambda c: 0.05 / (1 + c), **kwargs), make_params("float64"), 4)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trajectory[-1]))
