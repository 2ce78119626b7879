"""A large group runs as programs over ``opt.program_max_params`` parameters each, alike ones compiled once.

Numbers are the one-program and per-parameter tiers' bit for bit (every record: tests/test_facade_parity.py's
"chunked" rows); here, what chunking promises besides: one compile for many same-shape parameters, one step
array per bucket however it is split, and a clear error for a bad setting that changes nothing.
"""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import optim
from gradtx.optim import _engine
from tests.harness import assert_unchanged, snapshot


def _tree(n, shape=(3, 2), seed=0):
    rng = np.random.default_rng(seed)
    return {f"p{i:03d}": jnp.asarray(rng.normal(size=shape), jnp.float32) for i in range(n)}


def _grads(params, skip=()):
    return {k: None if k in skip else jnp.cos(3.0 * v) for k, v in params.items()}


@pytest.mark.parametrize("foreach,shape", [(None, (3, 5)), (True, (3, 6))])  # shapes new to the compile cache
def test_same_shape_parameters_compile_one_program_of_a_chunk(foreach, shape):
    opt = optim.Adafactor(_tree(24, shape=shape), lr=0.01, foreach=foreach)
    opt.program_max_params = 4
    before = _engine.trace_count()
    opt.step(_grads(opt.params))
    assert _engine.trace_count() - before == 1  # six chunks of four matrices: one trace


@pytest.mark.parametrize("skip", [(), ("p003",)])
def test_chunked_steps_equal_one_program_and_the_per_parameter_tier(skip):
    params = {**_tree(7), **{f"q{i}": v for i, v in enumerate(_tree(4, shape=(5,), seed=1).values())}}
    runs = {}
    for label, foreach, limit in (("chunked", None, 3), ("one program", None, None), ("for-loop", False, None)):
        opt = optim.NAdam(jax.tree.map(jnp.array, params), lr=0.01, weight_decay=0.1, foreach=foreach)
        opt.pack_max_numel = 0  # the small parameters stay apart, so the default tier chunks them
        opt.program_max_params = limit
        for step in range(4):
            opt.step(_grads(opt.params, skip if step == 1 else ()))
        runs[label] = opt
    for label in ("one program", "for-loop"):
        for k in params:
            np.testing.assert_array_equal(runs["chunked"].params[k], runs[label].params[k], err_msg=f"{label} {k}")
    state = runs["chunked"].state
    group = runs["chunked"].param_groups[0]["params"]
    steps = {float(state[p]["step"]) for p in group}
    assert steps == ({4.0} if not skip else {3.0, 4.0})
    stepped_together = [p for p, name in zip(group, params) if name not in skip]
    assert len({id(state[p]["step"]) for p in stepped_together}) == 1  # one array per bucket across its chunks


@pytest.mark.parametrize("value", [0, -2, 1.5, "8", True])
def test_a_bad_program_max_params_is_refused_and_changes_nothing(value):
    opt = optim.Adam(_tree(5), lr=0.1, foreach=True)
    opt.step(_grads(opt.params))
    opt.program_max_params = value
    for p, g in zip(opt.param_groups[0]["params"], jax.tree.leaves(_grads(opt.params))):
        p.grad = g
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"opt.program_max_params must be a positive int .* or None"):
        opt.step()
    assert_unchanged(opt, before)


def test_program_max_params_survives_pickling():
    opt = optim.Adam(_tree(3), lr=0.1)
    opt.program_max_params = 7
    assert pickle.loads(pickle.dumps(opt)).program_max_params == 7


def test_same_shape_parameters_initialise_in_chunks(monkeypatch):
    sizes = []
    original = _engine.init_states

    def spy(decl, static, dynamic, params):
        sizes.append(len(params))
        return original(decl, static, dynamic, params)

    monkeypatch.setattr(_engine, "init_states", spy)
    params = {**_tree(10), **{f"v{i}": v for i, v in enumerate(_tree(2, shape=(7,), seed=1).values())}}
    opt = optim.Adafactor(params, lr=0.01)
    opt.program_max_params = 4
    opt.step(_grads(opt.params))
    assert sorted(sizes) == [4, 4, 4]  # two runs of four (3, 2) matrices; the other two and both vectors together
