"""L-BFGS, line searches and SparseAdam: parity where the shared tables cannot reach, and behaviour.

The shared optax table (tests/cases/second_order.py) runs the ``lbfgs`` alias. Here:
line-search chains against optax (their members differ per library, so they cannot be
table kwargs), torch.optim.LBFGS (a closure evaluated many times per step) and
torch.optim.SparseAdam (torch sparse gradients) against the functional drivers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax.experimental import sparse as jsparse
from jax.flatten_util import ravel_pytree

import gradtx
from gradtx.optim._second_order import lbfgs_driver
from gradtx.optim.chains import sparse_adam_chain
from tests.cases.optimizers import BY_NAME
from tests.harness import TOLERANCES, assert_trees_close, grad_fn, loss, make_params


def _commit(tree):
    """Commits every leaf to the device with a strong type: a mix of committed and uncommitted leaves
    (fresh states have both) or weakly typed ones (optax's) would make the second step compile again."""
    return jax.device_put(jax.tree.map(lambda x: jnp.array(x, dtype=x.dtype), tree), jax.devices()[0])


def _linesearch_args(params, grads):
    del grads
    return dict(value=loss(params), grad=grad_fn(params), value_fn=loss)


# ----------------------------------------------------------------------------- line searches against optax

# lib -> (the library, its line-search namespace); gradtx's line searches are at its top level.
_LIBS = {"gradtx": (gradtx, gradtx), "optax": (optax, optax)}

LINESEARCH_CHAINS = {
    "backtracking": lambda m, ls: m.chain(m.scale(-2.0), ls.scale_by_backtracking_linesearch(
        4, decrease_factor=0.5, increase_factor=2.0, rtol=0.1, atol=0.01, max_learning_rate=0.7)),
    # searches that run out of steps and fall back on the best step with sufficient decrease
    "zoom-failing": lambda m, ls: m.chain(m.scale(-1.0), ls.scale_by_zoom_linesearch(
        3, curv_rtol=0.01, stepsize_precision=0.1)),
}


@pytest.mark.parametrize("name,dtype", [("backtracking", "float64"), ("backtracking", "float32"),
                                        ("zoom-failing", "float64")])
def test_linesearch_chains_match_optax(name, dtype):
    extra_args = lambda p: _linesearch_args(p, None)  # noqa: E731
    (ours, _), (theirs, _) = (_run_with_state(LINESEARCH_CHAINS[name](*_LIBS[lib]), make_params(dtype), 5, extra_args)
                              for lib in ("gradtx", "optax"))
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"{name} step {step + 1}")


def _run_with_state(tx, params, steps, extra_args):
    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad_fn(params), state, params, **extra_args(params))
        return gradtx.apply_updates(params, updates), state

    params = _commit(params)
    state, trajectory = _commit(tx.init(params)), []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory, state


def test_zoom_options_and_value_fn_arguments_match_optax_and_the_state_holds_value_and_grad():
    # Keep the last step size, cap it, plain Armijo, a stricter curvature condition; value_fn takes `weight`.
    params = make_params("float64")
    value_fn = lambda p, weight: weight * loss(p)  # noqa: E731
    extra_args = lambda p: dict(value=2.0 * loss(p), grad=jax.tree.map(lambda g: 2.0 * g, grad_fn(p)),  # noqa: E731
                                value_fn=value_fn, weight=2.0)
    build = lambda m, ls: m.chain(m.scale(-1.0), ls.scale_by_zoom_linesearch(  # noqa: E731
        6, max_learning_rate=0.3, approx_dec_rtol=None, curv_rtol=0.5, increase_factor=3.0))
    (ours, state), (theirs, _) = (_run_with_state(build(*_LIBS[lib]), params, 5, extra_args)
                                  for lib in ("gradtx", "optax"))
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"zoom step {step + 1}")
    np.testing.assert_allclose(state[1].value, 2.0 * loss(ours[-1]), rtol=1e-12)
    assert_trees_close(state[1].grad, jax.tree.map(lambda g: 2.0 * g, grad_fn(ours[-1])), "float64")


def test_backtracking_store_grad_matches_optax_and_stores_value_and_grad():
    # float64 only: optax 0.2.8's store_grad fails for float32 params under jax_enable_x64.
    build = lambda m, ls: m.chain(m.scale(-1.0), ls.scale_by_backtracking_linesearch(10, store_grad=True))  # noqa: E731
    extra_args = lambda p: _linesearch_args(p, None)  # noqa: E731
    (ours, state), (theirs, _) = (_run_with_state(build(*_LIBS[lib]), make_params("float64"), 3, extra_args)
                                  for lib in ("gradtx", "optax"))
    for a, b in zip(ours, theirs):
        assert_trees_close(a, b, "float64")
    np.testing.assert_allclose(state[1].value, loss(ours[-1]), rtol=1e-12)
    assert_trees_close(state[1].grad, grad_fn(ours[-1]), "float64")


@pytest.mark.parametrize("tx", [
    gradtx.lbfgs(),
    gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_backtracking_linesearch(5, store_grad=True)),
], ids=["lbfgs-zoom", "backtracking"])
def test_float32_params_keep_float32_state(tx):
    params = make_params("float32")
    out = jax.eval_shape(lambda p: tx.update(grad_fn(p), tx.init(p), p, **_linesearch_args(p, None)), params)
    assert {x.dtype for x in jax.tree.leaves(out) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype("float32")}


def test_linesearch_rejects_arguments_value_fn_does_not_take():
    params = make_params("float64")
    tx = gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_backtracking_linesearch(5))
    with pytest.raises(TypeError, match="unknown"):
        tx.update(grad_fn(params), tx.init(params), params, value=loss(params), grad=grad_fn(params),
                  value_fn=loss, unknown=1.0)


def test_lbfgs_validation():
    with pytest.raises(ValueError, match="memory_size"):
        gradtx.scale_by_lbfgs(memory_size=0)
    params = make_params("float64")
    tx = gradtx.scale_by_lbfgs()
    with pytest.raises(ValueError, match="parameters"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="initial_guess_strategy"):
        gradtx.scale_by_zoom_linesearch(5, initial_guess_strategy="last")


# ----------------------------------------------------------------------------- torch.optim.LBFGS

# torch's configurations, from the LBFGS record (tests/cases/optimizers.py; its facade runs them in
# tests/test_facade_parity.py): here the functional driver runs them on the flattened parameters.
TORCH_LBFGS = [case.kwargs for case in BY_NAME["LBFGS"].cases]


def _torch_lbfgs(kwargs, params, steps):
    """torch.optim.LBFGS on the flattened params; the closure evaluates JAX's loss and gradient."""
    flat, unravel = ravel_pytree(params)
    value_and_grad = jax.jit(jax.value_and_grad(lambda x: loss(unravel(x))))
    x = torch.tensor(np.asarray(flat), requires_grad=True)
    opt = torch.optim.LBFGS([x], **kwargs)

    def closure():
        value, grad = value_and_grad(jnp.asarray(x.detach().numpy()))
        x.grad = torch.tensor(np.asarray(grad))
        return float(value)

    trajectory = []
    for _ in range(steps):
        opt.step(closure)
        trajectory.append(unravel(jnp.asarray(x.detach().numpy().copy())))
    return trajectory, opt.state[x]


@functools.lru_cache(maxsize=None)
def _lbfgs_step(dtype, history_size, line_search_fn):
    """gradtx's driver on make_params(dtype), jitted once per static option set; the others are traced."""
    _, unravel = ravel_pytree(make_params(dtype))
    value_and_grad = jax.value_and_grad(lambda x: loss(unravel(x)))

    @jax.jit
    def step(x, state, options):
        driver = lbfgs_driver(history_size=history_size, line_search_fn=line_search_fn, **options)
        return driver.step(value_and_grad, x, state)

    return step


def _gradtx_lbfgs(kwargs, dtype, steps):
    flat, unravel = ravel_pytree(make_params(dtype))
    options = dict(lr=1.0, max_iter=20, tolerance_grad=1e-7, tolerance_change=1e-9)
    options.update({k: v for k, v in kwargs.items() if k in options})
    options["max_eval"] = kwargs.get("max_eval", options["max_iter"] * 5 // 4)
    history_size, line_search_fn = kwargs.get("history_size", 100), kwargs.get("line_search_fn")
    step = _lbfgs_step(dtype, history_size, line_search_fn)
    state = lbfgs_driver(history_size=history_size).init(flat)
    trajectory = []
    for _ in range(steps):
        flat, state, _ = step(flat, state, jax.tree.map(jnp.asarray, options))
        trajectory.append(unravel(flat))
    return trajectory, state


@pytest.mark.parametrize("kwargs", TORCH_LBFGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_lbfgs_driver_matches_torch_float64(kwargs):
    ours, state = _gradtx_lbfgs(kwargs, "float64", 6)
    theirs, torch_state = _torch_lbfgs(kwargs, make_params("float64"), 6)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"LBFGS {kwargs} step {step + 1}")
    assert int(state.n_iter) == torch_state["n_iter"] and int(state.func_evals) == torch_state["func_evals"]
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOLERANCES["float64"])  # noqa: E731
    close(state.d, torch_state["d"])
    close(state.t, float(torch_state["t"]))
    close(state.H_diag, float(torch_state["H_diag"]))
    close(state.prev_flat_grad, torch_state["prev_flat_grad"])
    close(state.prev_loss, torch_state["prev_loss"])
    # The ring buffers, read oldest first, are torch's history lists.
    size = len(torch_state["old_dirs"])
    slots = (int(state.history_count) - size + np.arange(size)) % state.ro.shape[0]
    close(state.old_dirs[slots], torch.stack(torch_state["old_dirs"]))
    close(state.old_stps[slots], torch.stack(torch_state["old_stps"]))
    close(state.ro[slots], torch.stack(torch_state["ro"]))


def test_lbfgs_driver_float32_stays_float32_and_reaches_torchs_loss():
    # Parameters agree with torch only to ~3e-5 relative in float32 after the first step (20
    # inner iterations amplify rounding), so float32 is compared on the loss reached.
    kwargs = dict(line_search_fn="strong_wolfe")
    ours, state = _gradtx_lbfgs(kwargs, "float32", 4)
    theirs, _ = _torch_lbfgs(kwargs, make_params("float32"), 4)
    assert {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype("float32")}
    np.testing.assert_allclose(loss(ours[-1]), loss(theirs[-1]), **TOLERANCES["float32"])


def test_lbfgs_driver_stops_at_once_on_a_small_gradient_and_validates():
    params = jnp.asarray([1e-9, -2e-9])
    driver = lbfgs_driver()
    state = driver.init(params)
    new, state, value = driver.step(jax.value_and_grad(lambda x: jnp.sum(x**2)), params, state)
    assert (new == params).all() and int(state.func_evals) == 1 and int(state.n_iter) == 0
    np.testing.assert_allclose(value, 5e-18)
    with pytest.raises(ValueError, match="flat"):
        driver.init(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="line_search_fn"):
        lbfgs_driver(line_search_fn="armijo")
    with pytest.raises(ValueError, match="lr"):
        lbfgs_driver(lr=-1.0)


# ----------------------------------------------------------------------------- torch.optim.SparseAdam


def _sparse_params(dtype):
    rng = np.random.default_rng(1)
    return {"emb": jnp.asarray(rng.normal(size=(8, 3)), dtype), "vec": jnp.asarray(rng.normal(size=(6,)), dtype),
            "cube": jnp.asarray(rng.normal(size=(5, 2, 2)), dtype)}


def _rows(step, leaf_index, n_rows):
    """The rows present in a step's gradient: always 3 of them, changing from step to step."""
    return np.sort(np.random.default_rng(100 * step + leaf_index).choice(n_rows, size=3, replace=False))


def _step_rows(params, step):
    return [jnp.asarray(_rows(step, i, x.shape[0]), jnp.int32) for i, x in enumerate(jax.tree.leaves(params))]


@jax.jit
def _row_values(params, rows):
    """JAX's gradient at the given rows of each leaf."""
    return [g[r] for g, r in zip(jax.tree.leaves(grad_fn(params)), rows)]


def _torch_sparse_adam(kwargs, params, steps, zero_row=False):
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    opt = torch.optim.SparseAdam(tensors, **kwargs)
    trajectory = []
    for step in range(steps):
        current = jax.tree.unflatten(treedef, [jnp.asarray(t.detach().numpy().copy()) for t in tensors])
        rows = _step_rows(params, step)
        for t, r, values in zip(tensors, rows, _row_values(current, rows)):
            values = np.array(values)
            if zero_row:
                values[0] = 0.0  # stored but zero: still present for torch
            t.grad = torch.sparse_coo_tensor(torch.tensor(np.asarray(r)[None]), torch.tensor(values), tuple(t.shape),
                                             check_invariants=True)
        opt.step()
        trajectory.append(jax.tree.unflatten(treedef, [jnp.asarray(t.detach().numpy().copy()) for t in tensors]))
    return trajectory


def _gradtx_sparse_adam(kwargs, params, steps, as_bcoo=False, zero_row=False):
    tx = sparse_adam_chain(**kwargs)

    @jax.jit
    def step(params, state, rows):
        leaves = []
        for x, r, values in zip(jax.tree.leaves(params), rows, _row_values(params, rows)):
            if as_bcoo:
                values = values.at[0].set(0.0) if zero_row else values
                leaves.append(jsparse.BCOO((values, r[:, None]), shape=x.shape))
            else:
                leaves.append(jnp.zeros_like(x).at[r].set(values))  # absent rows are zero rows
        grads = jax.tree.unflatten(jax.tree.structure(params), leaves)
        updates, state = tx.update(grads, state)  # no params: BCOO leaves do not match the params' structure
        return gradtx.apply_updates(params, updates), state

    params = _commit(params)
    state, trajectory = _commit(tx.init(params)), []
    for k in range(steps):
        params, state = step(params, state, _step_rows(params, k))
        trajectory.append(params)
    return trajectory, state


# The SparseAdam record's option sets: its reference takes sparse gradients only, so they run here.
SPARSE_ADAM = [case.kwargs for case in BY_NAME["SparseAdam"].cases]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kwargs", SPARSE_ADAM, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sparse_adam_dense_gradients_match_torch_sparse_gradients(kwargs, dtype):
    params = _sparse_params(dtype)
    ours, state = _gradtx_sparse_adam(kwargs, params, 6)
    theirs = _torch_sparse_adam(kwargs, params, 6)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"SparseAdam {kwargs} step {step + 1}")
    assert {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(dtype)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_adam_bcoo_gradients_match_torch_including_stored_zero_rows(dtype):
    params = _sparse_params(dtype)
    kwargs = dict(lr=0.05, betas=(0.8, 0.95))
    ours, _ = _gradtx_sparse_adam(kwargs, params, 6, as_bcoo=True, zero_row=True)
    theirs = _torch_sparse_adam(kwargs, params, 6, zero_row=True)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, dtype, f"SparseAdam BCOO step {step + 1}")


def test_sparse_adam_absent_entries_keep_their_moments_and_do_not_move():
    tx = gradtx.scale_by_sparse_adam()
    params = {"w": jnp.ones((3, 2)), "s": jnp.asarray(2.0), "skip": None}
    state = tx.init(params)
    g = {"w": jnp.asarray([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]]), "s": jnp.asarray(0.0), "skip": None}
    updates, state = tx.update(g, state)
    assert updates["skip"] is None and state.mu["skip"] is None
    np.testing.assert_array_equal(updates["w"][1], 0.0)
    np.testing.assert_array_equal(state.mu["w"][1], 0.0)
    assert float(updates["w"][0, 1]) == 0.0 and float(state.nu["w"][0, 0]) > 0.0  # a present row moves entirely
    assert float(updates["s"]) == 0.0 and int(state.count) == 1
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, g), state)  # nothing present: the step still counts
    assert int(state.count) == 2 and float(jnp.abs(updates["w"]).max()) == 0.0
    np.testing.assert_allclose(state.mu["w"][0], jnp.asarray([0.1, 0.0]), rtol=1e-12)
    elements = gradtx.scale_by_sparse_adam(entries="elements")
    updates, _ = elements.update(g, elements.init(params))
    assert float(updates["w"][0, 1]) == 0.0 and float(updates["w"][0, 0]) != 0.0


def test_sparse_adam_validation_and_traced_hyperparameters():
    with pytest.raises(ValueError, match="b1"):
        gradtx.scale_by_sparse_adam(b1=1.0)
    with pytest.raises(ValueError, match="entries"):
        gradtx.scale_by_sparse_adam(entries="columns")
    batched = jsparse.BCOO.fromdense(jnp.ones((2, 3)), n_batch=1)
    tx = gradtx.scale_by_sparse_adam()
    with pytest.raises(ValueError, match="batch"):
        tx.update({"w": batched}, tx.init({"w": jnp.ones((2, 3))}))

    @jax.jit
    def traced(b1, b2, eps, g):
        tx = gradtx.scale_by_sparse_adam(b1, b2, eps)
        return tx.update(g, tx.init(g))[0]

    g = jnp.asarray([[1.0, 2.0], [0.0, 0.0]], jnp.float32)
    out = traced(jnp.float32(0.9), jnp.float32(0.999), jnp.float32(1e-8), g)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, gradtx.scale_by_sparse_adam().update(g, tx.init(g))[0], rtol=1e-6)


# ----------------------------------------------------------------------------- the facade classes


def _facade_lbfgs(kwargs, params, steps, opt=None):
    import gradtx.optim as optim

    opt = opt or optim.LBFGS(jax.tree.map(jnp.array, params), **kwargs)
    closure = jax.jit(loss)
    trajectory = []
    for _ in range(steps):
        opt.step(closure)
        trajectory.append(jax.tree.map(np.array, opt.params))
    return trajectory, opt


@pytest.mark.parametrize("kwargs", [dict(lr=0.5, max_iter=5, history_size=3),
                                    dict(line_search_fn="strong_wolfe", history_size=3)],
                         ids=["plain", "strong_wolfe"])
def test_lbfgs_facade_matches_torch_and_its_state_dict_continues_torchs_run(kwargs):
    import gradtx.optim as optim

    params = make_params("float64")
    ours, opt = _facade_lbfgs(kwargs, params, 3)
    theirs, torch_state = _torch_lbfgs(kwargs, params, 3)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert_trees_close(a, b, "float64", f"LBFGS facade {kwargs} step {step + 1}")
    state = opt.state_dict()["state"][0]
    assert list(state) == ["func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                           "prev_flat_grad", "prev_loss"]
    assert state["n_iter"] == torch_state["n_iter"] and state["func_evals"] == torch_state["func_evals"]
    assert len(state["old_dirs"]) == len(torch_state["old_dirs"])
    # torch's state, as NumPy, loaded into a fresh optimizer at torch's parameters: both continue alike.
    torch_numpy = {k: ([t.numpy() for t in v] if isinstance(v, list) else
                       v.numpy() if isinstance(v, torch.Tensor) else v)
                   for k, v in torch_state.items() if k != "al"}
    fresh = optim.LBFGS(jax.tree.map(jnp.array, theirs[-1]), **kwargs)
    fresh.load_state_dict({"state": {0: torch_numpy}, "param_groups": opt.state_dict()["param_groups"]})
    continued, _ = _facade_lbfgs(kwargs, None, 2, opt=fresh)
    ours_continued, _ = _facade_lbfgs(kwargs, None, 2, opt=opt)
    for a, b in zip(continued, ours_continued):
        assert_trees_close(a, b, "float64", "LBFGS continued from torch's state")


def test_lbfgs_facade_complex_parameters_match_torch():
    import gradtx.optim as optim

    def objective(xp, z, w):
        return (0.5 * (z.real**2 + z.imag**2) + xp.sin(3 * z.real) * z.imag).sum() + (w**2 + xp.cos(w)).sum()

    rng = np.random.default_rng(3)
    z0, w0 = rng.normal(size=3) + 1j * rng.normal(size=3), rng.normal(size=2)
    opt = optim.LBFGS([jnp.asarray(z0), jnp.asarray(w0)], line_search_fn="strong_wolfe", history_size=3)
    tz, tw = torch.tensor(z0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    topt = torch.optim.LBFGS([tz, tw], line_search_fn="strong_wolfe", history_size=3)

    def torch_closure():
        topt.zero_grad()
        value = objective(torch, tz, tw)
        value.backward()
        return value

    closure = jax.jit(lambda p: objective(jnp, *p))
    for step in range(3):
        opt.step(closure)
        topt.step(torch_closure)
        for ours, theirs in zip(opt.params, (tz, tw)):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), **TOLERANCES["float64"],
                                       err_msg=f"step {step + 1}")


def test_lbfgs_facade_validation():
    import gradtx.optim as optim

    params = make_params("float64")
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.LBFGS(params, lr=-1.0)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [jnp.ones(2)]}, {"params": [jnp.ones(2)]}])
    with pytest.raises(RuntimeError, match="strong_wolfe"):
        optim.LBFGS(params, line_search_fn="armijo")
    opt = optim.LBFGS(params)
    with pytest.raises(TypeError, match="closure of the parameters"):
        opt.step(lambda: 1.0)
    with pytest.raises(TypeError, match="closure"):
        opt.step(grad_fn(params))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_adam_facade_matches_torch_sparse_gradients(dtype):
    import gradtx.optim as optim

    kwargs = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, maximize=True)
    params = _sparse_params(dtype)
    opt = optim.SparseAdam(jax.tree.map(jnp.array, params), **kwargs)
    dense_grads = jax.jit(lambda p, rows: jax.tree.unflatten(jax.tree.structure(p), [
        jnp.zeros_like(x).at[r].set(v) for x, r, v in zip(jax.tree.leaves(p), rows, _row_values(p, rows))]))
    theirs = _torch_sparse_adam(kwargs, params, 4)
    for step in range(4):
        opt.step(dense_grads(opt.params, _step_rows(params, step)))
        assert_trees_close(jax.tree.map(np.array, opt.params), theirs[step], dtype, f"SparseAdam facade step {step + 1}")
    assert list(opt.state_dict()["state"][0]) == ["step", "exp_avg", "exp_avg_sq"]


def test_sparse_adam_facade_validation():
    import gradtx.optim as optim

    params = [jnp.ones(3)]
    for kwargs, message in [(dict(lr=0.0), "Invalid learning rate"), (dict(eps=0.0), "Invalid epsilon value"),
                            (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
                            (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1")]:
        with pytest.raises(ValueError, match=message):
            optim.SparseAdam(params, **kwargs)
    with pytest.raises(ValueError, match="does not support complex parameters"):
        optim.SparseAdam([jnp.ones(2), jnp.ones(2, jnp.complex128)])


def test_lbfgs_load_state_dict_rejects_malformed_history_and_changes_nothing():
    import copy

    import gradtx.optim as optim

    params = make_params("float64")
    opt = optim.LBFGS(params, history_size=3)
    closure = jax.jit(loss)
    for _ in range(2):
        opt.step(closure)
    good = opt.state_dict()
    before = jax.tree.map(np.array, opt.params)
    entry = good["state"][0]
    bad_entries = {
        "negative count": {**entry, "n_iter": -1},
        "fractional count": {**entry, "func_evals": 2.5},
        "short direction": {**entry, "d": np.zeros(3)},
        "history of junk": {**entry, "old_dirs": ["x"] * len(entry["old_dirs"])},
        "history not a list": {**entry, "ro": 3.0},
        "uneven history": {**entry, "ro": list(entry["ro"])[:-1]},
        "missing prev_loss": {k: v for k, v in entry.items() if k != "prev_loss"},
    }
    for label, bad in bad_entries.items():
        broken = copy.deepcopy(good)
        broken["state"][0] = bad
        with pytest.raises((ValueError, TypeError)):
            opt.load_state_dict(broken)
        assert_trees_close(jax.tree.map(np.array, opt.params), before, "float64", label)
        assert opt.state_dict()["state"][0]["n_iter"] == entry["n_iter"], label
    opt.load_state_dict(good)
    opt.step(closure)
