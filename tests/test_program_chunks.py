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


def _stepped_three_ways(make, params, skip, limit, steps):
    """``make(params, foreach)`` stepped chunked (``limit``), in one program and per parameter: equal bit for bit.

    Parameters in ``skip`` have no gradient at the second step."""
    runs = {}
    for label, foreach, size in (("chunked", None, limit), ("one program", None, None), ("for-loop", False, None)):
        opt = make(jax.tree.map(jnp.array, params), foreach)
        opt.program_max_params = size
        for step in range(steps):
            opt.step(_grads(opt.params, skip if step == 1 else ()))
        runs[label] = opt
    for label in ("one program", "for-loop"):
        for k in params:
            np.testing.assert_array_equal(runs["chunked"].params[k], runs[label].params[k], err_msg=f"{label} {k}")
    return runs


@pytest.mark.parametrize("skip", [(), ("p003",)])
def test_chunked_steps_equal_one_program_and_the_per_parameter_tier(skip):
    params = {**_tree(7), **{f"q{i}": v for i, v in enumerate(_tree(4, shape=(5,), seed=1).values())}}

    def make(params, foreach):
        opt = optim.NAdam(params, lr=0.01, weight_decay=0.1, foreach=foreach)
        opt.pack_max_numel = 0  # the small parameters stay apart, so the default tier chunks them
        return opt

    runs = _stepped_three_ways(make, params, skip, limit=3, steps=4)
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


@pytest.mark.parametrize("tier", ["default", "foreach"])
def test_same_shape_parameters_initialise_in_chunks(tier, monkeypatch):
    # every tier keeps the chain's own state per program (gradtx.optim._stores)
    sizes = []
    name = "stored_chain_state"
    original = getattr(_engine, name)

    def spy(decl, static, dynamic, params, *entries):
        sizes.append(len(params))
        return original(decl, static, dynamic, params, *entries)

    monkeypatch.setattr(_engine, name, spy)
    params = {**_tree(10), **{f"v{i}": v for i, v in enumerate(_tree(2, shape=(7,), seed=1).values())}}
    opt = optim.Adafactor(params, lr=0.01, foreach=None if tier == "default" else True)
    opt.program_max_params = 4
    opt.step(_grads(opt.params))
    assert sorted(sizes) == [4, 4, 4]  # two runs of four (3, 2) matrices; the other two and both vectors together


def test_many_alike_groups_compile_one_program_of_a_run():
    # one param group per parameter (as AdamMini builds them): runs of alike groups are programs of their own
    params = _tree(11, shape=(2, 7))  # a shape new to the compile cache
    boxes = [optim.Parameter(v) for v in params.values()]
    opt = optim.Adam([{"params": [box]} for box in boxes], lr=0.01)
    opt.program_max_params = 4
    for box, g in zip(boxes, _grads(params).values()):
        box.grad = g
    before = _engine.trace_count()
    opt.step()
    # (counted per group traced) two runs of four groups are one program traced once, the other three another
    assert _engine.trace_count() - before == 4 + 3


@pytest.mark.parametrize("skip", [(), ("p002",)])
def test_runs_of_alike_groups_step_as_one_program_and_the_per_parameter_tier(skip):
    params = {**_tree(9), **{f"q{i}": v for i, v in enumerate(_tree(2, shape=(5,), seed=1).values())}}
    _stepped_three_ways(lambda params, foreach: optim.AdamMini(params, lr=0.01, num_embeds=4, num_heads=2,
                                                               foreach=foreach), params, skip, limit=2, steps=3)


def test_adam_mini_compiles_for_the_block_kind_not_the_name():
    params = {f"layer{i}": {"mlp": jnp.full((3, 4), 0.1 * i), "wte": jnp.full((3, 4), 0.2 * i)} for i in range(6)}
    opt = optim.AdamMini(params, lr=0.01, num_embeds=4, num_heads=2, foreach=True)
    before = _engine.trace_count()
    opt.step(jax.tree.map(jnp.cos, opt.params))
    assert _engine.trace_count() - before == 2  # twelve groups, two kinds (whole tensor, embedding elements)


@pytest.mark.parametrize("decouple,bias", [(True, False), (False, True)])
def test_prodigy_in_runs_steps_as_one_program_and_as_gradtx_prodigy(decouple, bias):
    import gradtx

    params = {**_tree(7), **{f"q{i}": v for i, v in enumerate(_tree(3, shape=(5,), seed=1).values())}}
    kwargs = dict(weight_decay=0.1, decouple=decouple, use_bias_correction=bias, d0=1e-3)
    runs = {}
    for label, limit in (("runs", 2), ("one program", None)):
        opt = optim.Prodigy(jax.tree.map(jnp.array, params), **kwargs)
        opt.program_max_params = limit
        for _ in range(3):
            opt.step(_grads(opt.params))
        runs[label] = opt
    tx = gradtx.prodigy(1.0, (0.9, 0.999), None, 1e-8, estim_lr0=1e-3, weight_decay=0.1, bias_correction=bias,
                        decouple=decouple)
    ours, state = jax.tree.map(jnp.array, params), None
    state = tx.init(ours)
    for _ in range(3):
        updates, state = tx.update(_grads(ours), state, ours)
        ours = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), ours, updates)
    for k in params:
        np.testing.assert_array_equal(runs["runs"].params[k], runs["one program"].params[k], err_msg=k)
        # the functional step is one program over the tree: XLA:CPU contracts its multiply-adds into FMAs
        # differently than the runs' programs do (a last-bit difference in float32)
        np.testing.assert_allclose(runs["runs"].params[k], ours[k], rtol=1e-6, err_msg=k)
    for key in ("d", "d_hat", "d_denom", "d_numerator"):
        assert runs["runs"].param_groups[0][key] == runs["one program"].param_groups[0][key], key
    assert runs["runs"].param_groups[0]["d"] == pytest.approx(float(state.estim_lr), rel=1e-6)


def test_prodigy_compiles_one_program_for_many_alike_parameters():
    from gradtx.optim import _prodigy_runs

    opt = optim.Prodigy(_tree(12, shape=(3, 7)))  # a shape new to the compile caches
    opt.program_max_params = 4
    def compiled():  # each program's variants (donating or not)
        return tuple(sum(f._cache_size() for f in variants.values())
                     for variants in (_prodigy_runs._MOMENTS, _prodigy_runs._APPLY))

    before = compiled()
    opt.step(_grads(opt.params))
    assert tuple(a - b for a, b in zip(compiled(), before)) == (1, 1)
