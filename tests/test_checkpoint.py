"""Functional state survives pickle, .npz and orbax: a resumed run equals an uninterrupted one, bit for bit."""

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.cases import OPTIMIZERS
from tests.cases.factored import matrices
from tests.harness import grad_fn, make_params

# Every record's functional chain with the options that give it the most state (matrices for a record that takes
# only matrices), and two compositions whose state nests other states: a chain and inject_hyperparams.
CHAINED = [info for info in OPTIMIZERS if info.chain is not None]
COMPOSITIONS = {
    "injected": lambda: gradtx.inject_hyperparams(gradtx.adam)(learning_rate=lambda c: 0.1 / (1 + c)),
    "amsgrad-clip": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.amsgrad(0.05)),
}
ROWS = [(info.name, functools.partial(info.chain, **info.state_options), info.params) for info in CHAINED]
ROWS += [(name, build, "any") for name, build in COMPOSITIONS.items()]


def _make_step(tx):
    def step(params, state):
        updates, state = tx.update(grad_fn(params), state, params)
        return gradtx.apply_updates(params, updates), state

    return jax.jit(step)


def _steps(step, params, state, n):
    for _ in range(n):
        params, state = step(params, state)
    return params, state


def _round_trip(kind, state, like, tmp_path):
    if kind == "pickle":
        return pickle.loads(pickle.dumps(jax.device_get(state)))
    if kind == "npz":
        gradtx.save_npz(tmp_path / "state.npz", state)
        return gradtx.load_npz(tmp_path / "state.npz", like)
    ocp = pytest.importorskip("orbax.checkpoint")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "orbax", state)
    checkpointer.wait_until_finished()
    return checkpointer.restore(tmp_path / "orbax", like)


@pytest.mark.parametrize("name,build,kinds", ROWS, ids=[row[0] for row in ROWS])
def test_resume_is_bit_for_bit(name, build, kinds, tmp_path):
    """6 steps == 3 steps, a round trip of the state through pickle, .npz and orbax, then 3 more."""
    tx = build()
    step = _make_step(tx)
    params = matrices("float32") if kinds == "matrices" else make_params("float32")
    full, _ = _steps(step, params, tx.init(params), 6)
    half, half_state = _steps(step, params, tx.init(params), 3)
    for kind in ("pickle", "npz", "orbax"):
        restored = _round_trip(kind, half_state, tx.init(params), tmp_path)
        resumed, _ = _steps(step, half, restored, 3)
        for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name} through {kind}")


def test_npz_keeps_bfloat16_and_rejects_mismatches(tmp_path):
    params = make_params("bfloat16")
    tx = gradtx.adam(1e-3)
    state = tx.init(params)
    gradtx.save_npz(tmp_path / "s.npz", state)
    again = gradtx.load_npz(tmp_path / "s.npz", state)
    assert jax.tree.map(lambda x: x.dtype, again) == jax.tree.map(lambda x: x.dtype, state)
    with pytest.raises(ValueError, match="0/mu/w"):
        other = tx.init({**params, "w": jnp.zeros((2, 2), jnp.bfloat16)})
        gradtx.load_npz(tmp_path / "s.npz", other)
    with pytest.raises(ValueError, match="missing"):
        gradtx.load_npz(tmp_path / "s.npz", gradtx.chain(gradtx.clip(1.0), gradtx.adam(1e-3)).init(params))


# --- the facade's state_dict as .npz -------------------------------------------------------------------------


def test_state_dict_npz_keeps_every_value_and_type(tmp_path):
    from gradtx import optim

    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.float64)}
    opt = optim.Adafactor(params, lr=np.float64(0.01), eps=(None, 1e-3))
    opt.step({"w": jnp.full((2, 3), 0.5, jnp.bfloat16), "b": jnp.full(3, 0.25)})
    saved = opt.state_dict()
    saved["param_groups"][0].update(note="text", flags=(True, None, 2, 2.5, -0.0, float("inf")), big=2**70)
    saved["extra"] = {"k": [1 + 2j, ("x",)], 3: np.float32(0.5)}
    gradtx.save_state_dict_npz(tmp_path / "opt.npz", saved)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as data:  # readable without pickle
        assert "state/0/step" in data.files
    loaded = gradtx.load_state_dict_npz(tmp_path / "opt.npz")
    assert list(loaded) == list(saved) and list(loaded["state"]) == list(saved["state"])
    for key, entry in saved["state"].items():
        assert list(loaded["state"][key]) == list(entry)
        for name, value in entry.items():
            assert loaded["state"][key][name].dtype == value.dtype
            np.testing.assert_array_equal(loaded["state"][key][name], value)
    for ours, theirs in zip(loaded["param_groups"], saved["param_groups"]):
        assert list(ours) == list(theirs)
        for name, value in theirs.items():
            assert ours[name] == value and type(ours[name]) is type(value), name
    assert loaded["extra"] == saved["extra"] and type(loaded["extra"][3]) is np.float32
    assert loaded["param_groups"][0]["param_names"] == ["w", "b"]  # the order the dict was written in
    opt.load_state_dict(loaded)


def test_state_dict_npz_refuses_what_needs_pickle(tmp_path):
    from gradtx import optim

    opt = optim.Adam([jnp.ones(2)], lr=lambda count: 0.1 / (1 + count))
    with pytest.raises(TypeError, match=r"state_dict\['param_groups'\]\[0\]\['lr'\] is a callable"):
        gradtx.save_state_dict_npz(tmp_path / "opt.npz", opt)
    assert not (tmp_path / "opt.npz").exists()
    with pytest.raises(TypeError, match=r"\['extra'\] is a builtins.object"):
        gradtx.save_state_dict_npz(tmp_path / "opt.npz", {"state": {}, "param_groups": [], "extra": object()})
    with pytest.raises(TypeError, match="state dict or an object with state_dict"):
        gradtx.save_state_dict_npz(tmp_path / "opt.npz", [1, 2])
    gradtx.save_npz(tmp_path / "functional.npz", {"mu": jnp.ones(2)})
    with pytest.raises(ValueError, match="not written by save_state_dict_npz"):
        gradtx.load_state_dict_npz(tmp_path / "functional.npz")


# --- what the loaders refuse, and the .npz suffix -------------------------------------------------------------


def _npy(path):
    np.save(path, np.ones(3))


def _deep_header(path):
    header = '{"format": "gradtx.state_dict", "version": 1, "tree": ' + "[" * 100_000 + "]" * 100_000 + "}"
    np.savez(path, __gradtx_state_dict__=np.array(header))


def _deep_tree(path):  # valid JSON, but a tree nested past the recursion limit
    tree = "[" * 5_000 + "]" * 5_000
    header = '{"format": "gradtx.state_dict", "version": 1, "tree": ' + tree + "}"
    np.savez(path, __gradtx_state_dict__=np.array(header))


@pytest.mark.parametrize("write,message", [
    (_npy, "single .npy array"),
    (_deep_header, "not a readable description|nested too deeply"),
    (_deep_tree, "not a readable description|nested too deeply"),
], ids=["npy", "deep-json", "deep-tree"])
def test_loaders_refuse_other_files_with_a_value_error(write, message, tmp_path):
    path = tmp_path / "file.npz"
    write(path)
    path = path if path.exists() else tmp_path / "file.npz.npy"
    with pytest.raises(ValueError, match=message):
        gradtx.load_state_dict_npz(path)
    if write is _npy:
        with pytest.raises(ValueError, match=message):
            gradtx.load_npz(path, {"x": jnp.ones(3)})


def test_a_name_without_suffix_loads_back(tmp_path):
    from gradtx import optim

    state = {"mu": jnp.arange(3.0)}
    gradtx.save_npz(tmp_path / "ckpt", state)
    assert (tmp_path / "ckpt.npz").exists()  # numpy's np.savez adds the suffix
    np.testing.assert_array_equal(gradtx.load_npz(tmp_path / "ckpt", state)["mu"], state["mu"])
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    gradtx.save_state_dict_npz(str(tmp_path / "opt"), opt)
    assert gradtx.load_state_dict_npz(str(tmp_path / "opt"))["param_groups"][0]["lr"] == 0.1


# --- orbax: the recipe of docs/checkpoints.md -----------------------------------------------------------------


def _orbax_save(path, opt, opt_state):
    import orbax.checkpoint as ocp

    description, arrays = gradtx.state_dict_to_data(opt)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.Composite(
            facade_arrays=ocp.args.StandardSave(arrays),
            facade=ocp.args.JsonSave(description),
            opt_state=ocp.args.StandardSave(opt_state)))


def _orbax_restore(path, opt_state_like):
    import orbax.checkpoint as ocp

    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(
            facade_arrays=ocp.args.StandardRestore(),
            facade=ocp.args.JsonRestore(),
            opt_state=ocp.args.StandardRestore(opt_state_like)))
    return gradtx.state_dict_from_data(restored.facade, restored.facade_arrays), restored.opt_state


def test_orbax_recipe_resumes_facade_and_functional_state_bit_for_bit(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    from gradtx import optim

    tx = gradtx.adamw(gradtx.cosine_decay_schedule(0.05, 10), weight_decay=0.1)
    step = _make_step(tx)

    def make(params):  # a copy: the facade's step donates its parameters' buffers
        return optim.Adam(jax.tree.map(jnp.array, params), lr=gradtx.linear_schedule(0.1, 0.01, 5), betas=(0.8, 0.99))

    def facade_steps(opt, n):
        for _ in range(n):
            opt.step(jax.tree.map(lambda x: jnp.cos(x) * 0.1, opt.params))

    params = make_params("float32")
    full_params, _ = _steps(step, params, tx.init(params), 4)
    full = make(params)
    facade_steps(full, 4)

    half_params, half_state = _steps(step, params, tx.init(params), 2)
    half = make(params)
    facade_steps(half, 2)
    _orbax_save(tmp_path / "ckpt", half, half_state)

    state_dict, opt_state = _orbax_restore(tmp_path / "ckpt", tx.init(params))
    assert state_dict["param_groups"][0]["lr"] == gradtx.linear_schedule(0.1, 0.01, 5)
    resumed = make(half.params)
    resumed.load_state_dict(state_dict)
    facade_steps(resumed, 2)
    resumed_params, _ = _steps(step, half_params, opt_state, 2)
    for a, b in zip(jax.tree.leaves(resumed.params) + jax.tree.leaves(resumed_params),
                    jax.tree.leaves(full.params) + jax.tree.leaves(full_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
