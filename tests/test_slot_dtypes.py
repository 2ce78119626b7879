"""Per-slot state dtypes: float32 moments for bfloat16 parameters, bfloat16 moments to halve the state.

Two references:

- float32 slots with bfloat16 parameters compute exactly what a float32 run on the
  same (bfloat16-valued) gradients computes, with the update rounded to bfloat16 at
  the end: equal to float32 tolerance, the state too.
- bfloat16 slots with float32 parameters follow a float32 run within bfloat16 tolerance.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.harness import assert_trees_close, make_params, run_functional

F32, BF16 = jnp.dtype("float32"), jnp.dtype("bfloat16")

# name -> (factory of the transform with every slot in `dtype`, the state fields that are slots)
SLOTTED = {
    "scale_by_adam": (lambda d: gradtx.scale_by_adam(mu_dtype=d, nu_dtype=d), ("mu", "nu")),
    "scale_by_adam-amsgrad": (lambda d: gradtx.scale_by_adam(mu_dtype=d, nu_dtype=d, amsgrad=True),
                              ("mu", "nu", "nu_max")),
    "scale_by_adam-nesterov": (lambda d: gradtx.scale_by_adam(mu_dtype=d, nu_dtype=d, nesterov=True), ("mu", "nu")),
    "scale_by_rss": (lambda d: gradtx.scale_by_rss(sum_of_squares_dtype=d), ("sum_of_squares",)),
    "scale_by_rms": (lambda d: gradtx.scale_by_rms(nu_dtype=d, bias_correction=True), ("nu",)),
    "scale_by_stddev": (lambda d: gradtx.scale_by_stddev(mu_dtype=d, nu_dtype=d), ("mu", "nu")),
    "scale_by_adamax": (lambda d: gradtx.scale_by_adamax(mu_dtype=d, nu_dtype=d), ("mu", "nu")),
    "scale_by_nadam": (lambda d: gradtx.scale_by_nadam(mu_dtype=d, nu_dtype=d), ("mu", "nu")),
    "scale_by_radam": (lambda d: gradtx.scale_by_radam(b2=0.5, nesterov=True, mu_dtype=d, nu_dtype=d), ("mu", "nu")),
    "scale_by_radam-torch": (lambda d: gradtx.scale_by_radam(b2=0.5, eps_on_raw=True, strict_threshold=True,
                                                             mu_dtype=d, nu_dtype=d), ("mu", "nu")),
}

ALIASES = {
    "adam": lambda d: gradtx.adam(0.01, mu_dtype=d, nu_dtype=d),
    "adamw": lambda d: gradtx.adamw(0.01, mu_dtype=d, nu_dtype=d),
    "amsgrad": lambda d: gradtx.amsgrad(0.01, mu_dtype=d, nu_dtype=d),
    "nadam": lambda d: gradtx.nadam(0.01, mu_dtype=d, nu_dtype=d),
    "adagrad": lambda d: gradtx.adagrad(0.01, sum_of_squares_dtype=d),
    "rmsprop": lambda d: gradtx.rmsprop(0.01, nu_dtype=d),
    "rmsprop-centered": lambda d: gradtx.rmsprop(0.01, centered=True, nu_dtype=d, mu_dtype=d),
    "adamax": lambda d: gradtx.adamax(0.01, mu_dtype=d, nu_dtype=d),
    "radam": lambda d: gradtx.radam(0.01, mu_dtype=d, nu_dtype=d),
}


def _gradients(steps, dtype, seed=0):
    """A fixed sequence of gradients for make_params' tree (values exactly representable in ``dtype``)."""
    rng = np.random.default_rng(seed)
    shapes = jax.tree.map(np.shape, make_params())
    return [jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s) * 10.0 ** rng.integers(-3, 2), dtype), shapes,
                         is_leaf=lambda s: isinstance(s, tuple)) for _ in range(steps)]


def _run(tx, params, grads_sequence):
    update = jax.jit(tx.update)
    state, outs = tx.init(params), []
    for grads in grads_sequence:
        updates, state = update(grads, state, params)
        outs.append(updates)
    return outs, state


def _slots(state, fields):
    return [getattr(s, f) for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "_fields"))
            if hasattr(s, "_fields") for f in fields if f in s._fields]


def _widen(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def _against_reference(name, param_dtype, slot_dtype):
    """Runs the transform with every slot in ``slot_dtype`` and a float32 reference on the same gradients."""
    factory, fields = SLOTTED[name]
    params, grads = make_params(param_dtype), _gradients(6, param_dtype)
    ours, state = _run(factory(slot_dtype), params, grads)
    reference, ref_state = _run(factory(None), _widen(params), [_widen(g) for g in grads])
    assert {x.dtype for slot in _slots(state, fields) for x in jax.tree.leaves(slot)} == {jnp.dtype(slot_dtype)}
    for updates in ours:
        assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(param_dtype)}
    return zip(ours, reference), zip(_slots(state, fields), _slots(ref_state, fields))


@pytest.mark.parametrize("name", sorted(SLOTTED))
def test_float32_slots_for_bfloat16_params_equal_a_float32_run(name):
    steps, slots = _against_reference(name, "bfloat16", jnp.float32)
    for step, (a, b) in enumerate(steps):
        # the update is the float32 one, rounded once to bfloat16 at the end
        assert_trees_close(_widen(a), _widen(jax.tree.map(lambda x: x.astype(jnp.bfloat16), b)), "float32",
                           f"{name} step {step + 1}")
    for a, b in slots:
        assert_trees_close(a, b, "float32", f"{name} state")


@pytest.mark.parametrize("name", sorted(SLOTTED))
def test_bfloat16_slots_follow_a_float32_run(name):
    steps, _ = _against_reference(name, "float32", jnp.bfloat16)
    for step, (a, b) in enumerate(steps):
        assert_trees_close(a, b, "bfloat16", f"{name} step {step + 1}")


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_aliases_train_bfloat16_params_with_float32_state(name):
    tx = ALIASES[name](jnp.float32)
    params = make_params("bfloat16")
    state = tx.init(params)
    floats = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {F32}
    ours = run_functional(tx, params, 5)
    reference = run_functional(ALIASES[name](None), jax.tree.map(lambda x: x.astype(jnp.float32), params), 5)
    assert all(x.dtype == BF16 for x in jax.tree.leaves(ours[-1]))
    assert_trees_close(jax.tree.map(lambda x: x.astype(jnp.float32), ours[-1]), reference[-1], "bfloat16")


def test_bfloat16_slots_halve_the_state():
    params = {"w": jnp.zeros((256, 256), jnp.float32)}
    full = gradtx.state_nbytes(gradtx.adam(1e-3), params)
    half = gradtx.state_nbytes(gradtx.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16), params)
    assert full == 2 * 256 * 256 * 4 + 4 and half == 2 * 256 * 256 * 2 + 4  # + the int32 count


def test_default_slots_keep_the_params_dtype_and_complex_second_moments_stay_real():
    z = {"z": jnp.ones((3,), jnp.complex64)}
    state = gradtx.scale_by_adam().init(z)
    assert state.mu["z"].dtype == jnp.complex64 and state.nu["z"].dtype == F32
    updates, state = jax.jit(gradtx.scale_by_adam(nu_dtype=jnp.float64).update)(
        z, gradtx.scale_by_adam(nu_dtype=jnp.float64).init(z))
    assert state.nu["z"].dtype == jnp.float64 and updates["z"].dtype == jnp.complex64


OPTAX_NAMES = ["scale_by_adam", "scale_by_amsgrad", "adam", "adamw", "amsgrad", "nadam", "nadamw", "scale_by_rss",
               "adagrad", "scale_by_rms", "scale_by_stddev", "rmsprop", "scale_by_adamax", "adamax", "adamaxw",
               "scale_by_radam", "radam"]


@pytest.mark.parametrize("name", OPTAX_NAMES)
def test_optax_arguments_kept_new_ones_keyword_only_none(name):
    def parameters(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    ours, theirs = parameters(getattr(gradtx, name)), parameters(getattr(optax, name))
    assert [p for p in ours if p[1] is not inspect.Parameter.KEYWORD_ONLY] == \
        [p for p in theirs if p[1] is not inspect.Parameter.KEYWORD_ONLY]
    assert [p for p in theirs if p[1] is inspect.Parameter.KEYWORD_ONLY] == \
        [p for p in ours if p[1] is inspect.Parameter.KEYWORD_ONLY and p[0] in {q[0] for q in theirs}]
    assert all(p[2] is None for p in ours if p[0].endswith("_dtype") and p[0] not in {q[0] for q in theirs})
