"""Checks and links the declarations share: torch's Tensor-lr check and the ``maximize`` link."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradtx
from gradtx import optim

# Every facade class whose torch counterpart checks a Tensor lr's size (torch.optim's, in torch 2.13).
TENSOR_LR_CHECKED = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax", "NAdam", "RAdam", "Rprop",
                     "ASGD", "Adafactor", "Muon", "LBFGS", "SparseAdam"]


def _raised(build):
    try:
        build()
    except Exception as error:  # noqa: BLE001 - the type and message are what is compared
        return type(error), str(error)
    return None


@pytest.mark.parametrize("name", TENSOR_LR_CHECKED)
def test_a_tensor_lr_of_two_elements_raises_torchs_error(name):
    theirs = _raised(lambda: getattr(torch.optim, name)([torch.zeros(2, 2, requires_grad=True)], lr=torch.ones(2)))
    ours = _raised(lambda: getattr(optim, name)([jnp.zeros((2, 2))], lr=jnp.ones(2)))
    assert theirs == (ValueError, "Tensor lr must be 1-element")
    assert ours == theirs


@pytest.mark.parametrize("name", TENSOR_LR_CHECKED)
def test_a_one_element_tensor_lr_is_accepted(name):
    getattr(optim, name)([jnp.zeros((2, 2))], lr=jnp.full((1,), 0.01))


@pytest.mark.parametrize("flag, sign", [(True, -1.0), (False, 1.0)])
def test_negate_if(flag, sign):
    tx = gradtx.negate_if(flag)
    updates = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    out, _ = tx.update(updates, tx.init(updates))
    for key in updates:
        np.testing.assert_array_equal(out[key], sign * updates[key])
