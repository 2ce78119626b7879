"""torch.nn.utils' gradient clipping: gradtx.optim's in-place functions and gradtx's functional ones against torch, live."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx
import gradtx.optim as optim
from tests.harness import TOLERANCES

SHAPES = [(4, 3), (5,), (), (2, 2)]

# (norm_type, max_norm): clipped and not clipped, the p-norms torch documents and the odd orders it accepts.
NORMS = [(2.0, 0.5), (2.0, 100.0), (1.0, 0.3), (math.inf, 0.2), ("inf", 0.2), (-math.inf, 0.1), (0.0, 2.0),
         (3.5, 0.4), (0.5, 1.0)]
DTYPES = ["float64", "float32", "complex128"]


def _grads(dtype: str, seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [scale * rng.normal(size=s) for s in SHAPES]
    if dtype.startswith("complex"):
        out = [g + 1j * scale * rng.normal(size=g.shape) for g in out]
    return [np.asarray(g, dtype=dtype) for g in out]


def _boxes(grads: list, none_at: tuple[int, ...] = ()) -> list[optim.Parameter]:
    boxes = []
    for i, g in enumerate(grads):
        p = optim.Parameter(jnp.zeros(g.shape, g.dtype))
        p.grad = None if i in none_at else jnp.asarray(g)
        boxes.append(p)
    return boxes


def _torch_params(grads: list, none_at: tuple[int, ...] = ()) -> list[torch.Tensor]:
    params = []
    for i, g in enumerate(grads):
        p = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        p.grad = None if i in none_at else torch.from_numpy(g.copy())
        params.append(p)
    return params


def _assert_close(ours, theirs, dtype: str) -> None:
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), equal_nan=True,
                               **TOLERANCES[dtype.replace("complex128", "float64")])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("norm_type", "max_norm"), NORMS)
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    grads = _grads(dtype, scale=0.7)
    none_at = (2,)
    boxes, params = _boxes(grads, none_at), _torch_params(grads, none_at)
    ours = optim.clip_grad_norm_(boxes, max_norm, norm_type=norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    _assert_close(ours, theirs, dtype)
    assert ours.dtype == np.dtype(str(theirs.dtype).removeprefix("torch."))
    for i, (box, p) in enumerate(zip(boxes, params)):
        assert (box.grad is None) == (p.grad is None), i
        if box.grad is not None:
            assert box.grad.dtype == np.dtype(dtype)
            _assert_close(box.grad, p.grad, dtype)
    # The functional form: the same clipped tree and norm, from a dict of gradients, under jit.
    tree = {f"g{i}": jnp.asarray(g) for i, g in enumerate(grads) if i not in none_at}
    clipped, total = jax.jit(gradtx.clip_grad_norm, static_argnames="norm_type")(tree, max_norm, norm_type=float(norm_type))
    _assert_close(total, theirs, dtype)
    for i, p in enumerate(params):
        if i not in none_at:
            _assert_close(clipped[f"g{i}"], p.grad, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])  # torch clamps real numbers only
@pytest.mark.parametrize("clip_value", [0.1, 0.5, 10.0])
def test_clip_grad_value_matches_torch(clip_value, dtype):
    grads = _grads(dtype, seed=1)
    boxes, params = _boxes(grads, (1,)), _torch_params(grads, (1,))
    assert optim.clip_grad_value_(boxes, clip_value) is None
    torch.nn.utils.clip_grad_value_(params, clip_value)
    for box, p in zip(boxes, params):
        if p.grad is not None:
            _assert_close(box.grad, p.grad, dtype)
    clipped = gradtx.clip_grad_value([jnp.asarray(g) for g in grads], clip_value)
    for g, p in zip(clipped, params):
        if p.grad is not None:
            _assert_close(g, p.grad, dtype)


@pytest.mark.parametrize(("norm_type", "max_norm"), NORMS[:4])
def test_total_norm_then_clip_with_norm_matches_torch(norm_type, max_norm):
    grads = _grads("float64", seed=2)
    boxes, params = _boxes(grads), _torch_params(grads)
    ours = optim.get_total_norm(boxes, norm_type)
    theirs = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type)
    _assert_close(ours, theirs, "float64")
    _assert_close(optim.get_total_norm([jnp.asarray(g) for g in grads], norm_type), theirs, "float64")
    optim.clip_grads_with_norm_(boxes, max_norm, ours)
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, theirs)
    for box, p in zip(boxes, params):
        _assert_close(box.grad, p.grad, "float64")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_norm_raises_as_torch_and_leaves_grads(bad):
    grads = _grads("float64", seed=3)
    grads[0][1, 2] = bad
    boxes, params = _boxes(grads), _torch_params(grads)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    before = [box.grad for box in boxes]
    with pytest.raises(RuntimeError) as ours:
        optim.clip_grad_norm_(boxes, 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)
    assert all(box.grad is g for box, g in zip(boxes, before))
    # Without the flag both scale by the non-finite norm.
    ours_norm = optim.clip_grad_norm_(boxes, 1.0)
    theirs_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    _assert_close(ours_norm, theirs_norm, "float64")
    for box, p in zip(boxes, params):
        _assert_close(box.grad, p.grad, "float64")


def test_single_parameter_mixed_dtypes_and_no_grads():
    g64, g32 = _grads("float64", seed=4)[0], _grads("float32", seed=5)[1]
    box, p = _boxes([g64])[0], _torch_params([g64])[0]
    _assert_close(optim.clip_grad_norm_(box, 0.5), torch.nn.utils.clip_grad_norm_(p, 0.5), "float64")
    _assert_close(box.grad, p.grad, "float64")
    boxes, params = _boxes([g32, g64]), _torch_params([g32, g64])
    ours, theirs = optim.clip_grad_norm_(boxes, 0.5), torch.nn.utils.clip_grad_norm_(params, 0.5)
    _assert_close(ours, theirs, "float32")
    assert [b.grad.dtype for b in boxes] == [np.float32, np.float64]
    empty = _boxes([g64], none_at=(0,))
    ours, theirs = optim.clip_grad_norm_(empty, 1.0), torch.nn.utils.clip_grad_norm_(_torch_params([g64], (0,)), 1.0)
    assert float(ours) == float(theirs) == 0.0 and ours.dtype == np.float32
    with pytest.warns(UserWarning, match="empty generator"):
        optim.clip_grad_norm_((p for p in []), 1.0)


def test_arrays_instead_of_parameters_point_to_the_functional_form():
    with pytest.raises(TypeError, match=r"parameters\[0\].*gradtx.clip_grad_norm"):
        optim.clip_grad_norm_([jnp.ones(3)], 1.0)
