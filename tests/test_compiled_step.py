"""``opt.compile_step(loss_fn)``: one compiled training step with the numbers of the two-call loop.

The reference is always the loop it replaces, run live on a twin optimizer:
``loss, g = jax.value_and_grad(loss_fn)(opt.params, *batch); opt.step(g)`` (or
``opt.step(closure)`` for a closure-driven optimizer).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx import optim
from gradtx.optim import _engine
from tests import harness
from tests.cases import TORCH_CASES
from tests.cases.optimizers import BY_NAME
from tests.harness import assert_trees_close, assert_unchanged, make_params, snapshot

CASES = list(TORCH_CASES)  # every record's torch configurations (a missing class fails)


def _richest_case_per_class():
    best = {}
    for case in CASES:
        if case.torch_name not in best or len(case.kwargs) > len(best[case.torch_name].kwargs):
            best[case.torch_name] = case
    return [best[name] for name in sorted(best)]


RICHEST = _richest_case_per_class()
STEPS = 3


def batch_loss(params, scale):
    """The parity suites' loss, times a batch value (so that the step takes a batch)."""
    return harness.loss(params) * scale


jit_grad = jax.jit(jax.value_and_grad(batch_loss))
jit_loss = jax.jit(batch_loss)


def _make(case, dtype, params=None):
    params = case.params(dtype) if case.params else make_params(dtype)
    opt = getattr(optim, case.torch_name)(jax.tree.map(jnp.array, params), **case.kwargs)
    if BY_NAME[case.torch_name].train_mode:  # schedule-free optimizers step only in train mode
        opt.train()
    return opt


def _state_arrays(opt):
    return [dict(opt.state[p]) for g in opt.param_groups for p in g["params"]]


# (case, dtype) for the dtypes each case is compared in; float32 runs are marked slow.
PARITY_ROWS = [pytest.param(case, dtype, id=f"{case.id}-{dtype}",
                            marks=(pytest.mark.slow,) if dtype == "float32" else ())
               for case in RICHEST for dtype in case.dtypes]


@pytest.mark.parametrize("case, dtype", PARITY_ROWS)
def test_compiled_step_matches_the_two_call_loop(case, dtype):
    ours, theirs = _make(case, dtype), _make(case, dtype)
    step_fn = ours.compile_step(batch_loss)
    scale = jnp.asarray(1.0, dtype)
    for step in range(STEPS):
        loss = step_fn(scale)
        if case.closure:
            expected = theirs.step(functools.partial(jit_loss, scale=scale))
        else:
            expected, grads = jit_grad(theirs.params, scale)
            theirs.step(grads)
        assert_trees_close(ours.params, theirs.params, dtype, f"{case.id} step {step + 1}")
        assert_trees_close(loss, expected, dtype, f"{case.id} loss at step {step + 1}")
    assert ours._step_count == theirs._step_count == STEPS
    for a, b in zip(_state_arrays(ours), _state_arrays(theirs)):
        assert list(a) == list(b)
        numeric = [(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if not isinstance(x, str)]
        assert [x for x in jax.tree.leaves(a) if isinstance(x, str)] == [y for y in jax.tree.leaves(b)
                                                                         if isinstance(y, str)]
        if numeric:
            assert_trees_close(*zip(*numeric), dtype, f"{case.id} state")
    for a, b in zip(ours.param_groups, theirs.param_groups):
        assert repr({k: v for k, v in a.items() if k != "params"}) == repr({k: v for k, v in b.items() if k != "params"})


def _mlp(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": jnp.asarray(rng.normal(size=(3, 8)) * 0.5, dtype), "b1": jnp.zeros(8, dtype),
            "w2": jnp.asarray(rng.normal(size=(8, 2)) * 0.5, dtype), "b2": jnp.zeros(2, dtype)}


def mlp_loss(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def _batch(n=16, seed=1, dtype="float64"):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, 3)), dtype), jnp.asarray(rng.normal(size=(n, 2)), dtype)


def test_edited_options_and_a_scheduler_never_recompile_and_a_new_shape_compiles_once():
    opt = optim.AdamW(_mlp(), lr=0.01, weight_decay=0.1)
    twin = optim.AdamW(_mlp(), lr=0.01, weight_decay=0.1)
    schedulers = [optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (opt, twin)]
    step_fn = opt.compile_step(mlp_loss)
    x, y = _batch()
    step_fn(x, y)
    schedulers[0].step()
    twin.step(jax.grad(mlp_loss)(twin.params, x, y))
    schedulers[1].step()
    traced = _engine.trace_count()
    for i in range(5):
        for o in (opt, twin):
            o.param_groups[0]["betas"] = (0.9 - 0.01 * i, 0.99)
            o.param_groups[0]["weight_decay"] = 0.1 + 0.01 * i
        step_fn(x, y)
        twin.step(jax.grad(mlp_loss)(twin.params, x, y))
        for s in schedulers:
            s.step()
    assert _engine.trace_count() == traced
    assert_trees_close(opt.params, twin.params, "float64", "edited options")
    small = _batch(n=4)
    step_fn(*small)
    step_fn(*small)
    assert _engine.trace_count() == traced + 1  # one compilation for the new shape
    step_fn(x, y)
    assert _engine.trace_count() == traced + 1


def test_hooks_skip_nonfinite_and_counts():
    opt = optim.Adam(_mlp(), lr=0.01)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", args, kwargs)))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", args, kwargs)))
    step_fn = opt.compile_step(mlp_loss)
    x, y = _batch()
    step_fn(x, y)
    assert calls == [("pre", (), {}), ("post", (), {})] and opt._step_count == 1

    opt.skip_nonfinite = True
    before = snapshot(opt)
    step_fn(x.at[0, 0].set(jnp.nan), y)
    assert opt.skipped_steps == 1
    params, state, groups, _ = before
    assert_unchanged(opt, (params, state, groups, 2))  # the step ran (hooks, count), nothing else changed
    step_fn(x, y)
    assert opt.skipped_steps == 1 and int(opt.state[opt.param_groups[0]["params"][0]]["step"]) == 2


def test_skipped_first_step_creates_no_state():
    opt = optim.Adam(_mlp(), lr=0.01)
    opt.skip_nonfinite = True
    x, y = _batch()
    opt.compile_step(mlp_loss)(x * jnp.inf, y)
    assert opt.skipped_steps == 1 and not any(opt.state[p] for p in opt.param_groups[0]["params"])


def test_frozen_parameters_get_no_gradient_work():
    @jax.custom_vjp
    def no_backward(x):
        return x

    def fwd(x):
        return x, None

    def bwd(_, g):
        raise AssertionError("a frozen parameter was differentiated")

    no_backward.defvjp(fwd, bwd)

    def loss_fn(params, x, y):
        params = dict(params, w2=no_backward(params["w2"]))
        return mlp_loss(params, x, y)

    tree = _mlp()
    opt = optim.Adam(optim.path_groups(tree, {"w2": None}, default={}), lr=0.01)
    twin = optim.Adam(optim.path_groups(_mlp(), {"w2": None}, default={}), lr=0.01)
    step_fn = opt.compile_step(loss_fn)
    x, y = _batch()
    for _ in range(3):
        step_fn(x, y)
        twin.step(jax.grad(mlp_loss)(twin.params, x, y))
    assert_trees_close(opt.params, twin.params, "float64", "frozen")
    np.testing.assert_array_equal(opt.params["w2"], tree["w2"])


def test_max_grad_norm_clips_between_backward_and_step():
    opt, twin = optim.SGD(_mlp(), lr=0.1, momentum=0.9), optim.SGD(_mlp(), lr=0.1, momentum=0.9)
    step_fn = opt.compile_step(mlp_loss, max_grad_norm=0.05)
    assert step_fn.last_grad_norm is None
    x, y = _batch()
    for _ in range(3):
        loss = step_fn(x, y)
        expected, grads = jax.value_and_grad(mlp_loss)(twin.params, x, y)
        twin._set_grads(grads)
        norm = optim.clip_grad_norm_([p for p in twin.param_groups[0]["params"]], 0.05)
        twin.step()
        np.testing.assert_allclose(step_fn.last_grad_norm, norm, rtol=1e-12)
        np.testing.assert_allclose(loss, expected, rtol=1e-12)
    assert float(norm) > 0.05  # the test clips
    assert_trees_close(opt.params, twin.params, "float64", "clipped")


def test_has_aux_returns_loss_and_aux():
    def loss_fn(params, x, y):
        return mlp_loss(params, x, y), {"first": params["b2"][0], "x": x.shape[0]}

    for cls in (optim.Adam, optim.Prodigy):  # one program, and an optimizer driving its own step
        opt = cls(_mlp())
        before = opt.params["b2"][0]
        loss, aux = opt.compile_step(loss_fn, has_aux=True)(*_batch())
        np.testing.assert_allclose(loss, mlp_loss(_mlp(), *_batch()), rtol=1e-12)
        assert float(aux["first"]) == float(before) and int(aux["x"]) == 16


def test_arrays_the_user_holds_stay_valid():
    tree = _mlp()
    opt = optim.Adam(tree, lr=0.1)
    step_fn = opt.compile_step(mlp_loss)
    x, y = _batch()
    step_fn(x, y)
    held = opt.params
    state = {k: v for k, v in opt.state[opt.param_groups[0]["params"][0]].items()}
    copies = jax.tree.map(np.array, (tree, held, state, x, y))
    step_fn(x, y)
    step_fn(x, y)
    for a, b in zip(jax.tree.leaves((tree, held, state, x, y)), jax.tree.leaves(copies)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_donate_params_off_and_lbfgs_closure():
    opt = optim.Adam(_mlp())
    opt.donate_params = False
    held = [p._data for p in opt.param_groups[0]["params"]]
    opt.compile_step(mlp_loss)(*_batch())
    assert all(not a.is_deleted() for a in held)

    ours, theirs = optim.LBFGS(_mlp(), history_size=5, max_iter=4), optim.LBFGS(_mlp(), history_size=5, max_iter=4)
    step_fn = ours.compile_step(mlp_loss)
    x, y = _batch()
    for _ in range(3):
        loss = step_fn(x, y)
        expected = theirs.step(lambda p: mlp_loss(p, x, y))
        np.testing.assert_allclose(loss, expected, rtol=1e-10)
    assert not step_fn.one_program
    assert_trees_close(ours.params, theirs.params, "float64", "LBFGS")

    # SophiaH estimates its Hessian from the closure: the compiled loss is that closure
    ours, theirs = optim.SophiaH(_mlp(), lr=0.01, seed=3), optim.SophiaH(_mlp(), lr=0.01, seed=3)
    step_fn = ours.compile_step(mlp_loss)
    for _ in range(3):
        step_fn(x, y)
        theirs.step(lambda p: mlp_loss(p, x, y))
    assert_trees_close(ours.params, theirs.params, "float64", "SophiaH")


def _rejects(opt, call, error, match):
    before = snapshot(opt)
    with pytest.raises(error, match=match):
        call()
    assert_unchanged(opt, before)


def test_rejected_calls_change_nothing():
    opt = optim.Adam(_mlp(), lr=0.1)
    x, y = _batch()
    opt.compile_step(mlp_loss)(x, y)
    _rejects(opt, lambda: opt.compile_step(lambda p, x, y: (x @ p["w1"]).sum(0))(x, y), TypeError, "scalar")
    _rejects(opt, lambda: opt.compile_step(mlp_loss, has_aux=True)(x, y), TypeError, "pair")
    step_fn = opt.compile_step(mlp_loss)
    step_fn(x, y)
    _rejects(opt, lambda: step_fn((x,), y), ValueError, "tree structure changed")
    _rejects(opt, lambda: jax.jit(lambda x: step_fn(x, y))(x), RuntimeError, "JAX transformation")
    step_fn(x, y)  # (a call that finds nothing changed, given concrete arrays under a transformation)
    _rejects(opt, lambda: jax.jit(lambda: step_fn(x, y))(), RuntimeError, "JAX transformation")
    _rejects(opt, lambda: jax.vmap(lambda v: step_fn(x, y) * v)(jnp.ones(2)), RuntimeError, "JAX transformation")

    leaked = []
    jax.jit(lambda v: leaked.append(v) or v)(jnp.ones(()))
    _rejects(opt, lambda: opt.compile_step(lambda p, x, y: mlp_loss(p, x, y) * leaked[0])(x, y), RuntimeError,
             "closes over a tracer")
    with pytest.raises(ValueError, match="max_grad_norm"):
        optim.Prodigy(_mlp()).compile_step(mlp_loss, max_grad_norm=1.0)


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 (simulated) devices")
def test_parameters_on_two_devices_are_a_clear_error():
    """One program takes one device's (or one mesh's) arrays: the error names two parameters and the ways out."""
    devices = jax.devices()
    opt = optim.Adam({k: jax.device_put(v, devices[k == "b2"]) for k, v in _mlp().items()}, lr=0.1)
    opt.step(jax.tree.map(jnp.ones_like, opt.params))  # step() runs each device's parameters apart
    x, y = _batch()
    _rejects(opt, lambda: opt.compile_step(mlp_loss)(x, y), ValueError,
             r"parameter 'w1' on .*0, parameter 'b2' on .*1\); one compiled program .* opt.step\(grads\)")


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (simulated) devices")
@pytest.mark.parametrize("zero", [False, True], ids=["sharded", "zero-1"])
def test_sharded_parameters_keep_their_shardings(zero):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}
    if zero:
        specs = {k: P() for k in specs}

    def placed():
        return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in _mlp().items()}

    def make(params):
        if zero:
            return optim.ZeroRedundancyOptimizer(params, optim.Adam, mesh=mesh, axis="data", lr=0.05)
        return optim.Adam(params, lr=0.05)

    ours, theirs = make(placed()), make(placed())
    step_fn = ours.compile_step(mlp_loss)
    x, y = _batch()
    for _ in range(3):
        step_fn(x, y)
        theirs.step(jax.grad(mlp_loss)(theirs.params, x, y))
    assert_trees_close(ours.params, theirs.params, "float64", "sharded")
    for key, value in ours.params.items():
        assert value.sharding.is_equivalent_to(NamedSharding(mesh, specs[key]), value.ndim), key
    for a, b in zip(ours.param_groups[0]["params"], theirs.param_groups[0]["params"]):
        for name, value in ours.state[a].items():
            expected = theirs.state[b][name]
            assert value.sharding.is_equivalent_to(expected.sharding, value.ndim), name


def test_functional_twin_reference():
    """The facade's compiled step equals a hand-written jitted step of the functional alias."""
    opt = optim.AdamW(_mlp(), lr=0.01, weight_decay=0.01)
    step_fn = opt.compile_step(mlp_loss)
    tx = gradtx.adamw(0.01, weight_decay=0.01)
    params = _mlp()
    state = tx.init(params)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    x, y = _batch()
    for _ in range(4):
        loss = step_fn(x, y)
        params, state, expected = step(params, state, x, y)
        np.testing.assert_allclose(loss, expected, rtol=1e-12)
    assert_trees_close(opt.params, params, "float64", "functional")


def test_assigned_arrays_loaded_state_and_mixed_steps_are_seen():
    """The call's cached plan notices what changed since the last call: p.data, the state, step() in between."""
    ours, theirs = optim.Adam(_mlp(), lr=0.05), optim.Adam(_mlp(), lr=0.05)
    step_fn = ours.compile_step(mlp_loss)
    x, y = _batch()

    def reference():
        theirs.step(jax.grad(mlp_loss)(theirs.params, x, y))

    step_fn(x, y)
    reference()
    for opt in (ours, theirs):
        opt.param_groups[0]["params"][0].data = jnp.zeros((3, 8))
    step_fn(x, y)
    reference()
    ours.step(jax.grad(mlp_loss)(ours.params, x, y))  # the engine's own step (packing small parameters) between
    reference()
    saved = theirs.state_dict()
    ours.load_state_dict(saved)
    theirs.load_state_dict(saved)
    step_fn(x, y)
    reference()
    assert_trees_close(ours.params, theirs.params, "float64", "after edits")
    assert_trees_close(_state_arrays(ours), _state_arrays(theirs), "float64", "state after edits")


def test_complex_parameters():
    target = jnp.asarray([1.0 + 2.0j, -0.5j, 3.0])

    def loss_fn(params, t):
        return jnp.sum(jnp.abs(params["z"] - t) ** 4)

    ours, theirs = (optim.Adam({"z": jnp.zeros(3, jnp.complex128)}, lr=0.1) for _ in range(2))
    step_fn = ours.compile_step(loss_fn)
    for _ in range(3):
        step_fn(target)
        theirs.step(jax.grad(loss_fn)(theirs.params, target))
    np.testing.assert_allclose(ours.params["z"], theirs.params["z"], **harness.TOLERANCES["float64"])


def _first(opt):
    return opt.param_groups[0]["params"][0]


def _replace_entry(opt, name, value):
    opt.state[_first(opt)][name] = value


# What a call must notice since the last one (each applied to both optimizers between steps): the call that
# finds nothing changed reuses what it checked before, and each of these makes it look again.
EDITS = [
    ("p.data assigned", lambda o: setattr(_first(o), "data", jnp.full((3, 8), 0.25))),
    ("a state entry replaced", lambda o: _replace_entry(o, "exp_avg", jnp.full((3, 8), 0.5))),
    ("a shared entry replaced", lambda o: _replace_entry(o, "step", o.state[_first(o)]["step"] + 5)),
    ("a state dict replaced", lambda o: o.state.__setitem__(_first(o), {**o.state[_first(o)],
                                                                        "exp_avg_sq": jnp.full((3, 8), 0.1)})),
    ("a state dict reordered", lambda o: o.state.__setitem__(_first(o), dict(reversed(o.state[_first(o)].items())))),
    ("load_state_dict", lambda o: o.load_state_dict(o.state_dict())),
    ("a param group added", lambda o: o.add_param_group({"params": {"extra": jnp.linspace(-1.0, 1.0, 5)},
                                                         "lr": 0.02})),
    ("an option number edited", lambda o: o.param_groups[0].__setitem__("eps", 1e-3)),
    ("an option changed type", lambda o: o.param_groups[0].__setitem__("lr", jnp.asarray(0.03))),
    ("betas as a list", lambda o: o.param_groups[0].__setitem__("betas", [0.8, 0.9])),
    ("a static option changed", lambda o: o.param_groups[0].__setitem__("maximize", True)),
    ("an option added", lambda o: o.param_groups[0].__setitem__("note", "mine")),
    ("a step hook registered", lambda o: o.register_step_pre_hook(
        lambda opt, args, kwargs: opt.param_groups[0].__setitem__("lr", opt.param_groups[0]["lr"] * 0.5))),
    ("skip_nonfinite turned on", lambda o: setattr(o, "skip_nonfinite", True)),
    ("donate_params turned off", lambda o: setattr(o, "donate_params", False)),
]


@pytest.mark.parametrize("edit", [e for _, e in EDITS], ids=[name for name, _ in EDITS])
def test_an_unchanged_call_reuses_its_checks_and_every_edit_is_seen(edit):
    ours, theirs = optim.AdamW(_mlp(), lr=0.05), optim.AdamW(_mlp(), lr=0.05)
    step_fn = ours.compile_step(batch_loss)
    scale = jnp.asarray(1.5)

    def steps(n):
        for _ in range(n):
            loss = step_fn(scale)
            expected, grads = jax.value_and_grad(batch_loss)(theirs.params, scale)
            theirs.step(grads)
            np.testing.assert_allclose(loss, expected, rtol=1e-12)

    steps(2)
    plan = step_fn._plan
    steps(1)
    assert step_fn._plan is plan  # nothing changed: the checked plan serves again
    for opt in (ours, theirs):
        edit(opt)
    steps(3)
    assert ours._step_count == theirs._step_count == 6
    assert_trees_close(ours.params, theirs.params, "float64", "params after the edit")
    assert_trees_close(_state_arrays(ours), _state_arrays(theirs), "float64", "state after the edit")
    assert [sorted(s) for s in _state_arrays(ours)] == [sorted(s) for s in _state_arrays(theirs)]


def test_a_global_step_hook_registered_between_calls_runs():
    opt = optim.Adam(_mlp(), lr=0.01)
    step_fn = opt.compile_step(mlp_loss)
    x, y = _batch()
    step_fn(x, y)
    step_fn(x, y)
    calls = []
    with optim.register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append(o._step_count)):
        step_fn(x, y)
    step_fn(x, y)
    assert calls == [3] and opt._step_count == 4
