"""GaLore and Sophia: what the shared parity tables cannot show.

optax.contrib's functions against gradtx's (same SVD, same PRNG keys); the GaLore
facade in float64 given pytorch-optimizer's own SVD (the reference takes it in
float32, and LAPACK builds may choose other signs for singular vectors, which
matters when moments cross a projector refresh); SophiaH against
pytorch-optimizer's on the same probe vectors (torch's RNG cannot be reproduced:
the probes are injected into both), on given Hessian estimates, and on its own
probes as a loss that decreases.
"""

import operator
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch

import gradtx
import gradtx.optim as optim
import gradtx._transforms.galore as galore_module
from tests.cases.projected import CONTRIB_CASES
from tests.harness import TOLERANCES, assert_trees_close, grad_fn, make_params, run_functional, run_torch

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONTRIB_CASES, ids=operator.attrgetter("id"))
def test_matches_optax_contrib(case, dtype):
    params = make_params(dtype)
    ours = run_functional(getattr(gradtx, case.name)(**case.kwargs), params, case.steps, extra_args=case.extra_args)
    theirs = run_functional(getattr(optax.contrib, case.name)(**case.kwargs), params, case.steps,
                            extra_args=case.extra_args)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{case.id} step {step + 1}")


def _tensors(dtype):
    rng = np.random.default_rng(3)
    shapes = {"attn": (4, 2, 3), "w": (3, 5), "b": (5,)}
    return {k: jnp.asarray(rng.normal(size=shape), dtype) for k, shape in shapes.items()}


DIM_NUMS = [
    lambda m: m.GaLoreDimensionNumbers(reduction_axis=0, output_axis=(1, 2)),
    lambda m: {"attn": m.GaLoreDimensionNumbers(reduction_axis=(0, 1), output_axis=-1), "w": None, "b": None},
    lambda m: (lambda p: {"attn": m.GaLoreDimensionNumbers(2, (0, 1)), "w": m.GaLoreDimensionNumbers(1, 0),
                          "b": None}),
]


@pytest.mark.parametrize("which", range(len(DIM_NUMS)), ids=["one-spec", "tree", "callable"])
def test_galore_dimension_numbers_match_optax(which):
    params = _tensors("float64")
    if which == 0:  # one spec for every leaf of rank >= 2: (0, (1, 2)) fits the 3-D leaf only
        del params["w"]

    def run(module):
        tx = module.galore(0.05, rank=2, update_proj_gap=3, weight_dimension_numbers=DIM_NUMS[which](module))
        return run_functional(tx, params, 6)

    for step, (a, b) in enumerate(zip(run(gradtx), run(optax.contrib))):
        assert_trees_close(a, b, "float64", f"step {step + 1}")


def test_galore_state_matches_optax_structure():
    params = make_params("float64")
    ours, theirs = gradtx.scale_by_galore(rank=2).init(params), optax.contrib.scale_by_galore(rank=2).init(params)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, tuple(theirs))
    assert type(ours).__name__ == type(theirs).__name__ == "GaLoreState"


def test_hutchinson_estimate_matches_optax():
    params = make_params("float64")
    key = jax.random.PRNGKey(7)

    def loss(p):  # couples every leaf, so the estimate has cross terms
        return jnp.sum(jnp.sin(jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(p)])).prod() ** 2)

    for module in (gradtx, optax.contrib):
        est = module.hutchinson_estimator_diag_hessian(key)
        state, update = est.init(params), jax.jit(lambda s, p, est=est: est.update(None, s, p, obj_fn=loss))
        for _ in range(2):  # the second estimate checks the key's split
            diag, state = update(state, params)
        if module is gradtx:
            ours = diag
    assert_trees_close(ours, diag, "float64", "Hutchinson diag")


def test_sophia_update_needs_params_and_obj_fn():
    tx = gradtx.sophia(0.1)
    params = make_params("float64")
    state = tx.init(params)
    with pytest.raises(ValueError, match="params must be provided"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="obj_fn must be provided"):
        tx.update(params, state, params)


# -- GaLore's facade against pytorch-optimizer in float64, given the reference's SVD ---------------------------


def torch_svd_factors(matrix):
    """pytorch-optimizer's SVD (torch.linalg.svd of the float32 matrix) called from inside the compiled step."""

    def host(m):
        u, _, vh = torch.linalg.svd(torch.tensor(np.asarray(m, np.float32)), full_matrices=False)
        return u.numpy(), vh.numpy()

    m, n = matrix.shape
    k = min(m, n)
    shapes = (jax.ShapeDtypeStruct((m, k), jnp.float32), jax.ShapeDtypeStruct((k, n), jnp.float32))
    u, vh = jax.pure_callback(host, shapes, matrix.astype(jnp.float32))
    return u.astype(matrix.dtype), vh.astype(matrix.dtype)


GALORE_OPTIONS = [
    dict(lr=0.05, rank=2, update_proj_gap=5, scale=0.5, projection_type="std"),
    dict(lr=0.05, weight_decay=0.1, rank=1, update_proj_gap=3, scale=1.0, projection_type="reverse_std"),
    dict(lr=0.05, rank=2, update_proj_gap=4, scale=1.0, projection_type="left"),
    # all singular vectors, refreshed at steps 4, 8, 12: the case where JAX's own SVD signs part from torch's
    dict(lr=0.05, rank=None, update_proj_gap=4, scale=1.0, projection_type="right", betas=(0.8, 0.9)),
    dict(lr=0.05, rank=3, update_proj_gap=2, scale=2.0, projection_type="random", maximize=True, eps=1e-3),
]


@pytest.fixture
def reference_svd():
    jax.clear_caches()  # compiled steps hold the SVD they were traced with
    with mock.patch.object(galore_module, "svd_factors", torch_svd_factors):
        yield
    jax.clear_caches()


def _facade_run(name, kwargs, params, steps, closure=None):
    opt = getattr(optim, name)(jax.tree.map(jnp.array, params), **kwargs)
    trajectory = []
    for _ in range(steps):
        if closure is None:
            opt.step(grad_fn(opt.params))
        else:
            opt.step(closure=closure)
        trajectory.append(jax.tree.map(np.array, opt.params))
    return opt, trajectory


@pytest.mark.parametrize("kwargs", GALORE_OPTIONS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_galore_facade_matches_pytorch_optimizer_given_its_svd(kwargs, reference_svd):
    dtype = "float64"  # float32 runs with JAX's own SVD in the shared facade suite
    params = make_params(dtype)
    opt, ours = _facade_run("GaLore", kwargs, params, 12)
    theirs = run_torch("GaLore", kwargs, params, 12, module="pytorch_optimizer")
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"step {step + 1}")
    assert opt.param_groups[0]["step"] == 12


def test_galore_state_is_pytorch_optimizers():
    params = make_params("float64")
    kwargs = dict(lr=0.05, rank=2, update_proj_gap=5, scale=0.5, projection_type="std")
    opt, _ = _facade_run("GaLore", kwargs, params, 3)
    leaves = jax.tree.leaves(params)
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    ref = pytorch_optimizer.GaLore(tensors, **kwargs)
    for _ in range(3):
        for t, g in zip(tensors, jax.tree.leaves(grad_fn(jax.tree.unflatten(jax.tree.structure(params),
                                                                            [t.detach().numpy() for t in tensors])))):
            t.grad = torch.tensor(np.asarray(g))
        ref.step()
    boxes = opt.param_groups[0]["params"]
    for box, t in zip(boxes, tensors):
        theirs = dict(ref.state[t])
        if "projector" in theirs:
            theirs["projector"] = theirs["projector"].ortho_matrix
        assert list(opt.state[box]) == list(theirs)
        for key, value in theirs.items():
            assert opt.state[box][key].shape == tuple(value.shape), key
    assert opt.param_groups[0]["step"] == ref.param_groups[0]["step"]
    assert "step" in opt.state_dict()["param_groups"][0]


def test_galore_options_are_checked():
    params = make_params("float64")
    with pytest.raises(KeyError, match="update_proj_gap"):
        optim.GaLore(params, rank=2)
    with pytest.raises(NotImplementedError, match="full"):
        optim.GaLore(params, rank=2, update_proj_gap=5, scale=1.0, projection_type="full")
    with pytest.raises(ValueError, match="learning rate must be positive"):
        optim.GaLore(params, lr=-1.0)
    with pytest.raises(ValueError, match="beta2 must be in the range"):
        optim.GaLore(params, betas=(0.9, 1.0))


# -- SophiaH against pytorch-optimizer on the same probes ------------------------------------------------------

_rng = np.random.default_rng(0)
X, Y = _rng.normal(size=(6, 4)), _rng.normal(size=(6, 3))
SOPHIA_PARAMS = {"b": _rng.normal(size=(3,)), "w": _rng.normal(size=(4, 3))}  # tree order: b, w


def coupled_loss(p):
    """A loss whose Hessian is not diagonal, so that z * (H z) carries cross terms."""
    return jnp.sum((jnp.tanh(X @ p["w"] + p["b"]) - Y) ** 2) + 0.1 * jnp.sum(p["w"] ** 4)


def coupled_loss_torch(b, w):
    return torch.sum((torch.tanh(torch.tensor(X) @ w + b) - torch.tensor(Y)) ** 2) + 0.1 * torch.sum(w**4)


SOPHIA_OPTIONS = [
    dict(lr=0.05, update_period=3),
    dict(lr=0.05, update_period=2, num_samples=2, hessian_distribution="rademacher", weight_decay=0.1,
         weight_decouple=False, p=0.5, betas=(0.8, 0.9)),
    dict(lr=0.02, update_period=4, weight_decay=0.1, fixed_decay=True, maximize=True, eps=1e-3, p=1.0),
]


def _probe_sets(steps, num_samples, distribution, seed):
    rng = np.random.default_rng(seed)
    draw = (lambda s: rng.normal(size=s)) if distribution == "gaussian" else (lambda s: rng.choice([-1.0, 1.0], s))
    return [[draw(SOPHIA_PARAMS[k].shape) for k in ("b", "w")] for _ in range(steps * num_samples)]


@pytest.mark.parametrize("kwargs", SOPHIA_OPTIONS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_sophia_h_matches_pytorch_optimizer_on_the_same_probes(kwargs):
    steps = 8
    probes = _probe_sets(steps, kwargs.get("num_samples", 1), kwargs.get("hessian_distribution", "gaussian"), 1)
    torch_probes = iter([torch.tensor(z) for zs in probes for z in zs])
    our_probes = iter(probes)
    b, w = (torch.tensor(SOPHIA_PARAMS[k], requires_grad=True) for k in ("b", "w"))
    theirs = pytorch_optimizer.SophiaH([b, w], **kwargs)
    ours = optim.SophiaH({k: jnp.asarray(v) for k, v in SOPHIA_PARAMS.items()}, **kwargs)
    # torch's probes come from torch.randn_like / randint_like (0/1, mapped to -1/+1); ours from ours._probes
    with mock.patch.object(torch, "randn_like", side_effect=lambda p: next(torch_probes)), \
         mock.patch.object(torch, "randint_like", side_effect=lambda p, low, high: (next(torch_probes) + 1) / 2), \
         mock.patch.object(ours, "_probes", side_effect=lambda arrays: [jnp.asarray(z) for z in next(our_probes)]):
        for step in range(steps):
            b.grad, w.grad = torch.autograd.grad(coupled_loss_torch(b, w), (b, w), create_graph=True)
            theirs.step()
            ours.step(closure=coupled_loss)
            expected = {"b": b.detach().numpy(), "w": w.detach().numpy()}
            assert_trees_close(jax.tree.map(np.asarray, ours.params), expected, "float64", f"step {step + 1}")
    for box, t in zip(ours.param_groups[0]["params"], (b, w)):
        assert list(ours.state[box]) == list(theirs.state[t])
        for key, value in theirs.state[t].items():
            np.testing.assert_allclose(ours.state[box][key], value.detach().numpy(), rtol=1e-7, atol=1e-12,
                                       err_msg=key)


@pytest.mark.parametrize(("dtype", "tier"), [("float64", {}), ("float32", {}), ("float64", dict(foreach=True)),
                                             ("float64", dict(foreach=False))], ids=["float64", "float32",
                                                                                     "foreach", "for-loop"])
def test_sophia_h_matches_pytorch_optimizer_on_given_hessians(dtype, tier):
    """step(hessian=...) at every step: no probes at all, so the whole trajectory is comparable (on every tier)."""
    params = make_params(dtype)
    kwargs = dict(lr=0.05, betas=(0.9, 0.95), weight_decay=0.1, p=0.5, update_period=100)
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    theirs = pytorch_optimizer.SophiaH(tensors, **kwargs)
    ours = optim.SophiaH(jax.tree.map(jnp.array, params), **kwargs, **tier)
    for step in range(10):
        current = treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])
        hessian = [np.asarray(jnp.cos(3.0 * x) + 0.5 * step) for x in leaves]  # some positive, some negative
        for t, g in zip(tensors, jax.tree.leaves(grad_fn(current))):
            t.grad = torch.tensor(np.asarray(g))
        theirs.step(hessian=[torch.tensor(h) for h in hessian])
        ours.step(grad_fn(ours.params), hessian=hessian)
        expected = treedef.unflatten([t.detach().numpy() for t in tensors])
        assert_trees_close(jax.tree.map(np.asarray, ours.params), expected, dtype, f"step {step + 1}")


def test_sophia_h_descends_on_its_own_probes():
    opt = optim.SophiaH({k: jnp.asarray(v) for k, v in SOPHIA_PARAMS.items()}, lr=0.05, p=1.0, update_period=2,
                        hessian_distribution="rademacher", seed=3)
    losses = [float(opt.step(closure=coupled_loss)) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]
    assert np.all(np.diff(losses) < 0)


def test_sophia_h_needs_the_loss_when_an_estimate_is_due():
    params = make_params("float64")
    opt = optim.SophiaH(jax.tree.map(jnp.array, params))
    with pytest.raises(RuntimeError, match="closure=loss_fn"):
        opt.step(grad_fn(params))
    with pytest.raises(ValueError, match="update_period must be positive"):
        optim.SophiaH(params, update_period=0)
    with pytest.raises(ValueError, match="hessian_distribution"):
        optim.SophiaH(params, hessian_distribution="uniform")


# -- Kron: the factor functions against pytorch-optimizer's own, then whole runs on the same probes ----------

from pytorch_optimizer.optimizer import psgd as reference_psgd  # noqa: E402

KRON_SHAPES = [((4, 3), None), ((5,), None), ((), None), ((2, 3, 4), None), ((6, 3), "one_diag"),
               ((3, 6), "smart_one_diag")]


def _solve_in_float64(x, a):
    out = torch.linalg.solve_triangular(a, x.reshape(-1, x.size(-1)), upper=True, left=False)
    return out.reshape_as(x)


def _our_solve_in_float64(x, a):
    flat = x.reshape(-1, x.shape[-1])
    return jax.scipy.linalg.solve_triangular(a, flat.T, trans="T", lower=False).T.reshape(x.shape)


@pytest.fixture(params=["float32-solve", "float64-solve"])
def solve_precision(request):
    """The reference's triangular solve runs in float32 whatever the dtype (then the factors agree to float32's
    tolerance); with both solves switched to float64 the update rule agrees to float64's."""
    if request.param == "float32-solve":
        yield "float32"
        return
    with mock.patch.object(reference_psgd, "solve_triangular_right", _solve_in_float64), \
         mock.patch.object(gradtx._transforms.psgd, "_solve_triangular_right", _our_solve_in_float64):
        yield "float64"


@pytest.mark.parametrize(("shape", "mode"), KRON_SHAPES, ids=lambda x: str(x))
def test_kron_factor_update_matches_the_reference_functions(shape, mode, solve_precision):
    tol = TOLERANCES[solve_precision]
    rng = np.random.default_rng(sum(shape) + 1)
    qs_t, expressions = reference_psgd.initialize_q_expressions(torch.zeros(shape, dtype=torch.float64), 0.7, 8192, 2,
                                                                mode, dtype=torch.float64)
    qs, ours_expressions = gradtx.init_kron_factors(shape, 0.7, 8192, 2, mode, jnp.float64)
    assert ours_expressions == expressions
    for _ in range(2):  # the factors move away from the identity, so the second solve is non-trivial
        probe, grad = rng.normal(size=shape), rng.normal(size=shape)
        reference_psgd.update_precondition(qs_t, expressions, torch.tensor(probe), torch.tensor(grad), 0.1,
                                           gradtx._transforms.psgd.EPS)
        qs = gradtx.update_kron_factors(qs, ours_expressions, jnp.asarray(probe), jnp.asarray(grad), 0.1)
        for q, q_t in zip(qs, qs_t):
            np.testing.assert_allclose(np.asarray(q), q_t.numpy(), **tol)
    grad = rng.normal(size=shape)
    np.testing.assert_allclose(np.asarray(gradtx.kron_precondition(qs, ours_expressions, jnp.asarray(grad))),
                               reference_psgd.get_precondition_grad(qs_t, expressions, torch.tensor(grad)).numpy(),
                               **tol)
    reference_psgd.balance_q(qs_t)
    for q, q_t in zip(gradtx.balance_kron_factors(qs), qs_t):
        np.testing.assert_allclose(np.asarray(q), q_t.numpy(), **tol)


KRON_OPTIONS = [
    dict(lr=0.05, precondition_dtype=torch.float64),
    dict(lr=0.05, precondition_dtype=torch.float64, pre_conditioner_update_probability=0.5, weight_decay=0.1,
         momentum=0.5, balance_prob=0.5, memory_save_mode="one_diag"),
    dict(lr=0.05, precondition_dtype=torch.float64, weight_decay=0.1, weight_decouple=False, maximize=True,
         momentum_into_precondition_update=False, pre_conditioner_update_probability=lambda step: 1.0 / (1 + step)),
    dict(lr=0.05),  # float32 factors (the reference's default)
]


@pytest.mark.parametrize("kwargs", KRON_OPTIONS, ids=lambda k: ",".join(f"{a}={b if not callable(b) else 'fn'}" for a, b in k.items()))
def test_kron_matches_pytorch_optimizer_on_the_same_probes(kwargs):
    """Both draw their probes and balancing decisions from injected sequences (torch's RNG cannot be reproduced)."""
    steps, params = 8, make_params("float64")
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(5)
    dtype = str(kwargs.get("precondition_dtype", torch.float32)).replace("torch.", "")
    probes = [rng.normal(size=x.shape).astype(dtype) for _ in range(steps) for x in leaves]
    draws = [0.5, 0.001, 0.9, 0.002] * steps  # balance at the 2nd and 4th draws when the factors move
    torch_probes, our_probes = iter([torch.tensor(z) for z in probes]), iter(probes)
    torch_draws, our_draws = iter(draws), iter(draws)
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    theirs = pytorch_optimizer.Kron(tensors, **kwargs)
    ours = optim.Kron(jax.tree.map(jnp.array, params), **kwargs)
    # float32 factors: the reference keeps them in float32 whatever the parameters' dtype, so compare at float32's
    tolerance = "float64" if dtype == "float64" else "float32"
    with mock.patch.object(torch, "randn_like", side_effect=lambda t, dtype=None: next(torch_probes)), \
         mock.patch.object(np.random, "random", side_effect=lambda: next(torch_draws)), \
         mock.patch.object(ours, "_probe", side_effect=lambda shape, dtype: jnp.asarray(next(our_probes))), \
         mock.patch.object(ours, "_balance_draw", side_effect=lambda: next(our_draws)):
        for step in range(steps):
            current = treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])
            for t, g in zip(tensors, jax.tree.leaves(grad_fn(current))):
                t.grad = torch.tensor(np.asarray(g))
            theirs.step()
            ours.step(grad_fn(ours.params))
            expected = treedef.unflatten([t.detach().numpy() for t in tensors])
            assert_trees_close(jax.tree.map(np.asarray, ours.params), expected, tolerance, f"step {step + 1}")
    for box, t in zip(ours.param_groups[0]["params"], tensors):
        assert list(ours.state[box]) == list(theirs.state[t])
        assert ours.state[box]["expressions"] == theirs.state[t]["expressions"]
        for q, q_t in zip(ours.state[box]["Q"], theirs.state[t]["Q"]):
            assert q.shape == tuple(q_t.shape) and q.dtype == jnp.dtype(dtype)
    assert ours.param_groups[0]["update_counter"] == theirs.param_groups[0]["update_counter"]


def test_kron_descends_on_its_own_probes():
    params = {k: jnp.asarray(v) for k, v in SOPHIA_PARAMS.items()}
    value_and_grad = jax.jit(jax.value_and_grad(coupled_loss))
    opt = optim.Kron(params, lr=0.05, seed=1)
    losses = []
    for _ in range(20):
        value, grads = value_and_grad(opt.params)
        opt.step(grads)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0]
    tx = gradtx.kron(0.05, key=1)

    @jax.jit
    def step(p, state):
        value, grads = value_and_grad(p)
        updates, state = tx.update(grads, state, p)
        return gradtx.apply_updates(p, updates), state, value

    state, p, functional = tx.init(params), params, []
    for _ in range(20):
        p, state, value = step(p, state)
        functional.append(float(value))
    assert functional[-1] < 0.5 * functional[0]


def test_kron_functional_matches_facade_without_probes():
    """With update probability 0 no probe is drawn, so gradtx.kron and gradtx.optim.Kron give the same numbers."""
    params = make_params("float64")
    ours = run_functional(gradtx.kron(0.05, b1=0.5, weight_decay=0.1, preconditioner_update_probability=0.0),
                          params, 8)
    opt, facade = _facade_run("Kron", dict(lr=0.05, momentum=0.5, weight_decay=0.1,
                                           pre_conditioner_update_probability=0.0), params, 8)
    for step, (a, b) in enumerate(zip(ours, facade)):
        assert_trees_close(a, b, "float64", f"step {step + 1}")


@pytest.mark.parametrize(("name", "extra"), [("GaLore", {}), ("SophiaH", {"hessian": [np.ones((2, 2))]}),
                                           ("Kron", {})], ids=["GaLore", "SophiaH", "Kron"])
def test_complex_parameters_are_refused(name, extra):
    z = jnp.ones((2, 2), jnp.complex128)
    opt = getattr(optim, name)({"z": z})
    with pytest.raises(TypeError, match="complex parameters"):
        opt.step({"z": jnp.ones_like(z)}, **extra)
    assert not opt.state
