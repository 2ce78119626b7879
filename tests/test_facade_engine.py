"""The Optimizer base class against torch.optim's behaviour: groups, skipped params, state, compilation, complex.

Most tests run a gradtx.optim optimizer and a torch.optim one in lockstep on the
same problem (gradients from JAX at each side's own parameters) and compare the
parameters after every step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx.optim as optim
from gradtx.optim import _engine
from tests import harness
from tests.harness import assert_trees_close

jit_grad = jax.jit(harness.grad_fn)


def flat_params(dtype="float64", seed=0):
    tree = harness.make_params(dtype, seed)
    return {"b": tree["b"], "n": tree["nested"][0], "s": tree["s"], "w": tree["w"]}


class Lockstep:
    """One gradtx.optim and one torch.optim optimizer over the same named parameters, stepped together."""

    def __init__(self, name, groups, dtype="float64", **defaults):
        start = flat_params(dtype)
        self.dtype = dtype
        self.tensors = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in start.items()}
        self.boxes = {k: optim.Parameter(jnp.array(v), name=k) for k, v in start.items()}
        self.theirs = getattr(torch.optim, name)(self._groups(self.tensors, groups), **defaults)
        self.ours = getattr(optim, name)(self._groups(self.boxes, groups), **defaults)

    @staticmethod
    def _groups(params, groups):
        return [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[n] for n in g["params"]]}
                for g in groups]

    def torch_values(self):
        return {k: jnp.asarray(t.detach().numpy().copy()) for k, t in self.tensors.items()}

    def step(self, only=None, check=True):
        """One step on both sides, with gradients for the names in ``only`` (all by default)."""
        ours = jit_grad({k: b.data for k, b in self.boxes.items()})
        theirs = jit_grad(self.torch_values())
        for k in self.boxes:
            give = only is None or k in only
            self.boxes[k].grad = ours[k] if give else None
            self.tensors[k].grad = torch.tensor(np.array(theirs[k])) if give else None
        self.ours.step()
        self.theirs.step()
        if check:
            self.check()

    def check(self, context=""):
        assert_trees_close({k: b.data for k, b in self.boxes.items()}, self.torch_values(), self.dtype, context)


def to_numpy(tree):
    """A torch state dict with every tensor converted by ``.numpy()``."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().numpy().copy()
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [to_numpy(v) for v in tree]
    return tree


def to_torch(tree):
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree.copy())
    if isinstance(tree, dict):
        return {k: to_torch(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [to_torch(v) for v in tree]
    return tree


# --- groups, skipped parameters, dtypes ----------------------------------------------------------------------


def test_groups_with_different_options_match_torch():
    groups = [{"params": ["w", "b"]}, {"params": ["n"], "lr": 0.1, "momentum": 0.0},
              {"params": ["s"], "nesterov": True, "weight_decay": 0.2, "foreach": True}]
    run = Lockstep("SGD", groups, lr=0.05, momentum=0.9)
    for _ in range(4):
        run.step()
    assert "momentum_buffer" not in run.ours.state.get(run.boxes["n"], {})
    assert set(run.ours.state[run.boxes["w"]]) == set(run.theirs.state[run.tensors["w"]]) == {"momentum_buffer"}


def test_add_param_group_midway_matches_torch():
    run = Lockstep("Adam", [{"params": ["w", "b"]}], dtype="float32", lr=0.05)
    for _ in range(2):
        run.step(only={"w", "b"})
    run.theirs.add_param_group({"params": [run.tensors["n"], run.tensors["s"]], "lr": 0.02, "amsgrad": True})
    run.ours.add_param_group({"params": [run.boxes["n"], run.boxes["s"]], "lr": 0.02, "amsgrad": True})
    for _ in range(3):
        run.step()
    assert float(run.ours.state[run.boxes["w"]]["step"]) == 5.0
    assert float(run.ours.state[run.boxes["n"]]["step"]) == 3.0


def test_parameters_without_grad_are_skipped_like_torch():
    run = Lockstep("AdamW", [{"params": ["w", "b", "n", "s"]}], lr=0.05, weight_decay=0.1)
    run.step(only={"w", "b"})
    assert run.boxes["n"] not in run.ours.state and run.tensors["n"] not in run.theirs.state
    before = np.array(run.boxes["b"].data)
    run.step(only={"w", "n", "s"})
    np.testing.assert_array_equal(run.boxes["b"].data, before)  # no grad: no step, no decay
    steps = {k: float(run.ours.state[b]["step"]) for k, b in run.boxes.items()}
    assert steps == {k: float(run.theirs.state[t]["step"]) for k, t in run.tensors.items()}
    assert steps == {"w": 2.0, "b": 1.0, "n": 1.0, "s": 1.0}


def test_mixed_dtypes_keep_their_dtype():
    w32 = optim.Parameter(jnp.ones((3,), jnp.float32))
    w64 = optim.Parameter(jnp.ones((2,), jnp.float64))
    half = optim.Parameter(jnp.ones((2,), jnp.bfloat16))
    opt = optim.Adam([w32, w64, half], lr=0.1, weight_decay=0.1)
    for _ in range(2):
        for p in (w32, w64, half):
            p.grad = jnp.full(p.shape, 0.5, p.dtype)
        opt.step()
        opt.load_state_dict(opt.state_dict())  # bfloat16 state goes through NumPy and back
    for p in (w32, w64, half):
        assert p.dtype == p.data.dtype
        assert {k: v.dtype for k, v in opt.state[p].items()} == {
            "step": jnp.float32, "exp_avg": p.dtype, "exp_avg_sq": p.dtype}


def test_zero_d_and_empty_parameters():
    tree = {"s": jnp.asarray(1.5), "e": jnp.zeros((0, 3)), "i": jnp.arange(3), "f": 2.0, "fn": jnp.sin}
    opt = optim.SGD(tree, lr=0.5, momentum=0.9)
    assert opt.param_groups[0]["param_names"] == ["s", "e"]  # the order written; ints, floats and functions are passed over
    opt.step(jax.tree.map(lambda x: jnp.ones_like(x) if hasattr(x, "shape") and x.dtype.kind == "f" else None,
                          opt.params))
    assert float(opt.params["s"]) == 1.0 and opt.params["e"].shape == (0, 3)
    assert opt.params["f"] == 2.0 and opt.params["fn"] is jnp.sin and opt.params["i"].dtype.kind == "i"


# --- complex parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
                                         ("SGD", dict(lr=0.002, momentum=0.9, nesterov=True))])
def test_complex_parameters_match_torch(name, kwargs):
    harness.check_complex_facade_against_torch(name, kwargs)


# --- compilation ---------------------------------------------------------------------------------------------


def test_changing_hyperparameters_never_recompiles():
    opt = optim.Adam(flat_params(), lr=0.05, weight_decay=0.1)
    opt.step(jit_grad(opt.params))
    opt.step(jit_grad(opt.params))
    traces = _engine.trace_count()
    for lr in (0.01, jnp.asarray(0.02), 3e-3):
        opt.param_groups[0].update(lr=lr, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3)
        opt.step(jit_grad(opt.params))
    assert _engine.trace_count() == traces
    opt.param_groups[0]["amsgrad"] = True  # structure: new programs (the first step creates max_exp_avg_sq)
    opt.step(jit_grad(opt.params))
    opt.step(jit_grad(opt.params))
    traces = _engine.trace_count()
    opt.param_groups[0]["lr"] = 0.5
    opt.step(jit_grad(opt.params))
    assert _engine.trace_count() == traces


def test_lr_edits_apply_like_torch():
    run = Lockstep("SGD", [{"params": ["w", "b", "n", "s"]}], lr=0.05, momentum=0.5)
    for lr in (0.05, 0.01, 0.2):
        run.theirs.param_groups[0]["lr"] = run.ours.param_groups[0]["lr"] = lr
        run.step()


# --- closures and the issue's snippet ------------------------------------------------------------------------


def test_closure_is_differentiated_and_its_loss_returned():
    a = optim.Adam(flat_params(), lr=0.05)
    b = optim.Adam(flat_params(), lr=0.05)
    for _ in range(3):
        loss_a = a.step(closure=harness.loss)
        expected = harness.loss(b.params)
        b.step(jit_grad(b.params))
        np.testing.assert_allclose(loss_a, expected, rtol=1e-12)
        assert_trees_close(a.params, b.params, "float64")
    calls = []

    def torch_style():  # a closure without arguments is called as torch calls it
        calls.append(1)
        for p in a.param_groups[0]["params"]:
            p.grad = jnp.ones_like(p.data)
        return 7.0

    assert a.step(torch_style) == 7.0 and calls == [1]


def test_issue_snippet_runs_as_written():
    key = jax.random.key(0)
    w1 = optim.Parameter(jax.random.normal(key, (3,)))
    w2, w, b = jnp.ones((2, 2)), jnp.ones((4, 3)), jnp.zeros((3,))
    params = [w1, optim.Parameter(w2)]
    base, head = [optim.Parameter(jnp.ones(3)), optim.Parameter(jnp.ones(2))], [optim.Parameter(jnp.ones(4))]
    params_tree = {"encoder": {"w": jnp.ones((4, 3))}, "head": [jnp.zeros(3)]}
    data = [jnp.asarray(0.5), jnp.asarray(-1.0)]

    def loss_fn(params, batch):
        return sum(jnp.sum((x - batch) ** 2) for x in jax.tree.leaves(params))

    opt = optim.SGD(params, lr=0.01, momentum=0.9)
    opt = optim.Adam([w1, w2], lr=1e-4)
    opt = optim.SGD([{"params": base}, {"params": head, "lr": 1e-3}], lr=1e-2, momentum=0.9)
    opt = optim.AdamW(params_tree, lr=1e-3)
    assert opt.param_groups[0]["param_names"] == ["encoder.w", "head.0"]
    opt = optim.Adam([("encoder.w", w), ("head.b", b)])
    for batch in data:
        loss, grads = jax.value_and_grad(loss_fn)(opt.params, batch)
        opt.step(grads)
        opt.zero_grad()
    loss = opt.step(closure=lambda params: loss_fn(params, batch))
    assert set(opt.params) == {"encoder.w", "head.b"} and np.isfinite(float(loss))
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["encoder.w", "head.b"]


def test_params_structure_round_trips():
    tree = {"a": [jnp.ones(2), jnp.zeros(3)], "b": jnp.ones((2, 2))}
    opt = optim.SGD(tree, lr=0.1)
    assert jax.tree.structure(opt.params) == jax.tree.structure(tree)
    opt.add_param_group({"params": {"c": jnp.ones(1)}, "lr": 0.5})
    assert isinstance(opt.params, list) and set(opt.params[1]) == {"c"}  # several groups: one entry per group
    opt.step([jax.tree.map(jnp.ones_like, tree), {"c": None}])
    np.testing.assert_allclose(opt.params[0]["b"], 0.9)
    np.testing.assert_allclose(opt.params[1]["c"], 1.0)
    assert [p.name for p in opt.param_groups[0]["params"]] == ["a.0", "a.1", "b"]


def test_arrays_given_are_kept_and_the_optimizers_own_buffers_reused():
    x = jnp.ones(3)
    opt = optim.SGD([x], lr=0.1)
    opt.step([jnp.ones(3)])
    np.testing.assert_allclose(x, 1.0)  # the caller still holds x: a value, never consumed
    np.testing.assert_allclose(opt.params[0], 0.9)
    keep = optim.SGD([jnp.ones(3)], lr=0.1)
    keep.donate_params = False  # never donate parameter buffers, even those only the optimizer holds
    keep.step([jnp.ones(3)])
    np.testing.assert_allclose(keep.params[0], 0.9)


def test_the_same_array_twice_gets_two_boxes():
    x = jnp.ones(3)
    opt = optim.SGD({"a": x, "b": x}, lr=0.1)  # a tree may share a leaf; each box gets its own buffer
    opt.step({"a": jnp.ones(3), "b": jnp.full(3, 2.0)})
    np.testing.assert_allclose(opt.params["a"], 0.9)
    np.testing.assert_allclose(opt.params["b"], 0.8)


def test_step_count_and_scheduler_flag():
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    assert opt._step_count == 0 and not opt._opt_called
    opt.step()  # no gradients: nothing to do, but a step was called
    opt.step([jnp.ones(2)])
    assert opt._step_count == 2 and opt._opt_called


def test_zero_grad():
    p = optim.Parameter(jnp.ones(2))
    opt = optim.SGD([p])
    p.grad = jnp.ones(2)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, 0.0)
    opt.zero_grad()
    assert p.grad is None


def test_repr_is_torchs():
    t = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    t.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": 0.5})
    ours = optim.Adam([jnp.zeros(2)], lr=0.01, betas=(0.8, 0.9), amsgrad=True)
    ours.add_param_group({"params": [jnp.zeros(1)], "lr": 0.5})
    assert repr(ours) == repr(t)
    assert repr(optim.SGD([jnp.zeros(1)], momentum=0.9)) == repr(torch.optim.SGD([torch.zeros(1, requires_grad=True)],
                                                                                 momentum=0.9))


def test_schedule_options_follow_the_step():
    from gradtx.optim.chains import adam_chain

    def schedule(count):
        return 0.1 / (1.0 + count)

    opt = optim.Adam(flat_params(), lr=schedule, betas=(0.8, 0.9))
    tx = adam_chain(lr=schedule, betas=(0.8, 0.9))
    params = flat_params()
    state = jax.tree.map(tx.init, params, is_leaf=lambda x: isinstance(x, jax.Array))
    for _ in range(3):
        opt.step(jit_grad(opt.params))
        grads = jit_grad(params)
        for k in params:
            u, state[k] = tx.update(grads[k], state[k], params[k])
            params[k] = params[k] + u
    assert_trees_close(opt.params, params, "float64")
    with pytest.raises(TypeError, match="keeps no step count"):
        optim.SGD([jnp.ones(2)], lr=schedule).step([jnp.ones(2)])


def test_state_follows_the_parameters_sharding():
    mesh = jax.make_mesh((2,), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    w = jax.device_put(jnp.ones((4, 3)), sharding)
    opt = optim.Adam({"w": w}, lr=0.1)
    for _ in range(2):
        opt.step({"w": jax.device_put(jnp.full((4, 3), 0.5), sharding)})
    box = opt.param_groups[0]["params"][0]
    assert box.data.sharding.is_equivalent_to(sharding, 2)
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt.state[box][key].sharding.is_equivalent_to(sharding, 2)


def test_value_and_grad_evaluates_the_closure_at_trial_points():
    opt = optim.SGD([{"params": {"w": jnp.ones(2)}}, {"params": [("b", jnp.ones(3))]}], lr=0.1)
    f = opt._value_and_grad(lambda p: jnp.sum(p[0]["w"] ** 2) + 3 * jnp.sum(p[1]["b"]))
    loss, grads = f([jnp.full(2, 2.0), jnp.zeros(3)])  # param_groups order: w, then b
    assert float(loss) == 8.0
    np.testing.assert_array_equal(grads[0], [4.0, 4.0])
    np.testing.assert_array_equal(grads[1], [3.0, 3.0, 3.0])
    with pytest.raises(NotImplementedError, match="chain_builder"):
        optim.Optimizer([jnp.ones(2)], {}).step([jnp.ones(2)])
