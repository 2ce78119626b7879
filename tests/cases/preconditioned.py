"""Parity cases for pytorch_optimizer's SOAP, Shampoo, MARS, LaProp and SCION (pytorch_optimizer 4.1.0, live).

SOAP's eigenbases are unique only up to sign where every eigenvalue is simple, so its
parameter shapes keep each statistic's null space at most one-dimensional (a vector of
length 2 where 1-D leaves are rotated). SOAP computes its QR refresh in float32 for every
dtype (the reference casts to float32): the rows that refresh their bases are
SOAP_QR_CASES, compared in float64 with the float32 tolerance by tests/test_preconditioned.py.
"""

import jax.numpy as jnp
import numpy as np

from gradtx.optim.chains import laprop_chain, mars_chain, scion_chain, shampoo_chain, soap_chain
from tests.harness import TorchCase

PO = "pytorch_optimizer"
OPTAX_CASES = []  # none of these optimizers is in optax 0.2.8


def _tree(shapes, seed):
    def make(dtype):
        rng = np.random.default_rng(seed)
        return {k: jnp.asarray(rng.normal(size=shape), dtype) for k, shape in shapes.items()}

    return make


# merge_dims with max_precondition_dim=4: (2, 2, 4) -> (4, 4); NHWC (2, 2, 2, 3) -> NCHW (2, 3, 2, 2) -> (2, 3, 4);
# the 0-d leaf becomes a 1x1 statistic; the vector (longer than 4) is left alone.
merge_tree = _tree({"a": (2, 2, 4), "c": (2, 2, 2, 3), "v": (5,), "s": ()}, seed=3)
vector_tree = _tree({"w": (3, 2), "v": (2,), "s": ()}, seed=4)

# At SOAP's second step the gradient is the first one again (the first step only gathers statistics), so its
# rotated components off the eigenbasis' support are rounding noise divided by about eps: the rows take eps=1e-3,
# which keeps that noise out of the step. Where both sides of a leaf are rotated, float32 eigendecompositions from
# different LAPACKs differ by more than the float32 tolerance after a few steps: those rows compare float64 only.
# precondition_frequency >= steps keeps these rows on the eigendecomposition (no QR refresh, see SOAP_QR_CASES).
_SOAP_OPTIONS = dict(lr=0.05, betas=(0.9, 0.99), shampoo_beta=0.8, weight_decay=0.1, normalize_gradient=True,
                     maximize=True, eps=1e-3)
_SOAP_MERGE = dict(lr=0.05, merge_dims=True, max_precondition_dim=4, data_format="channels_last", eps=1e-3)
_SOAP_1D = dict(lr=0.05, precondition_1d=True, weight_decay=0.05, eps=1e-3)

TORCH_CASES = [
    TorchCase("SOAP", dict(lr=0.05, eps=1e-3), soap_chain, module=PO, steps=10, dtypes=("float64",)),
    TorchCase("SOAP", dict(_SOAP_OPTIONS, precondition_frequency=12), soap_chain, module=PO, dtypes=("float64",)),
    TorchCase("SOAP", dict(lr=0.05, correct_bias=False, weight_decay=0.0, max_precondition_dim=3,
                           precondition_frequency=100, eps=1e-3), soap_chain, module=PO),
    TorchCase("SOAP", dict(_SOAP_MERGE, precondition_frequency=12), soap_chain, module=PO, params=merge_tree,
              dtypes=("float64",)),
    TorchCase("SOAP", dict(_SOAP_1D, precondition_frequency=12), soap_chain, module=PO, params=vector_tree,
              dtypes=("float64",)),
]

TORCH_CASES += [
    TorchCase("MARS", dict(lr=0.05), mars_chain, module=PO),
    TorchCase("MARS", dict(lr=0.05, betas=(0.9, 0.95), gamma=0.1, weight_decay=0.1, lr_1d=0.02, betas_1d=(0.8, 0.9),
                           weight_decay_1d=0.05, ams_bound=True, cautious=True, maximize=True), mars_chain, module=PO),
    TorchCase("MARS", dict(lr=0.05, mars_type="lion", optimize_1d=True, weight_decay=0.1, fixed_decay=True),
              mars_chain, module=PO),
    TorchCase("MARS", dict(lr=0.05, weight_decay=0.1, weight_decouple=False, weight_decay_1d=0.2, eps=1e-3),
              mars_chain, module=PO),
    TorchCase("LaProp", dict(lr=0.05), laprop_chain, module=PO),
    TorchCase("LaProp", dict(lr=0.05, betas=(0.8, 0.99), centered=True, steps_before_using_centered=4,
                             weight_decay=0.1, ams_bound=True, eps=1e-8, maximize=True), laprop_chain, module=PO),
    TorchCase("LaProp", dict(lr=0.05, weight_decay=0.1, fixed_decay=True, cautious=True), laprop_chain, module=PO),
    TorchCase("LaProp", dict(lr=0.05, weight_decay=0.1, weight_decouple=False, centered=True), laprop_chain,
              module=PO),
]

matrix_tree = _tree({"w": (4, 3), "t": (2, 5)}, seed=5)
conv_tree = _tree({"k": (3, 2, 2, 2), "c": (2, 3, 2)}, seed=6)

TORCH_CASES += [
    TorchCase("SCION", dict(lr=0.05), scion_chain, module=PO),
    TorchCase("SCION", dict(lr=0.05, momentum=0.5, norm_type=5, weight_decay=0.1, maximize=True), scion_chain,
              module=PO),
    TorchCase("SCION", dict(lr=0.05, momentum=1.0, norm_type=4, scale=2.0, constraint=True,
                            norm_kwargs={"normalize": False}), scion_chain, module=PO, params=matrix_tree),
    TorchCase("SCION", dict(lr=0.05, norm_type=6, norm_kwargs={"normalized": True, "transpose": True},
                            weight_decay=0.1, weight_decouple=False), scion_chain, module=PO, params=matrix_tree),
    TorchCase("SCION", dict(lr=0.05, norm_type=7, norm_kwargs={"normalized": False}, momentum=0.3), scion_chain,
              module=PO, params=matrix_tree),
    TorchCase("SCION", dict(lr=0.05, norm_type=2, norm_kwargs={"max_scale": True, "normalize": False},
                            weight_decay=0.1), scion_chain, module=PO, params=matrix_tree),
    TorchCase("SCION", dict(lr=0.05, norm_type=3, scale=3.0), scion_chain, module=PO, params=conv_tree),
    TorchCase("SCION", dict(lr=0.05, norm_type=0, momentum=0.2), scion_chain, module=PO),
]

# Shampoo's inverse roots amplify rounding (float32 SVDs of different LAPACKs differ) by about matrix_eps^(-1/2k):
# the float32 rows take matrix_eps=0.1.
shampoo_tree = _tree({"w": (4, 3), "t": (2, 3, 2), "v": (5,), "s": ()}, seed=8)

TORCH_CASES += [
    TorchCase("Shampoo", dict(lr=0.05), shampoo_chain, module=PO, dtypes=("float64",)),
    TorchCase("Shampoo", dict(lr=0.05, matrix_eps=0.1), shampoo_chain, module=PO, params=shampoo_tree),
    TorchCase("Shampoo", dict(lr=0.05, momentum=0.3, weight_decay=0.1, preconditioning_compute_steps=3,
                              matrix_eps=1e-3, maximize=True), shampoo_chain, module=PO, dtypes=("float64",)),
    TorchCase("Shampoo", dict(lr=0.05, momentum=0.6, weight_decay=0.1, weight_decouple=True, matrix_eps=0.1),
              shampoo_chain, module=PO, params=shampoo_tree),
    TorchCase("Shampoo", dict(lr=0.05, weight_decay=0.1, weight_decouple=True, fixed_decay=True), shampoo_chain,
              module=PO, dtypes=("float64",)),
]

# Rows whose bases are refreshed within the run. The reference computes that QR decomposition in float32 for every
# dtype, so tests/test_preconditioned.py compares these float64 runs with the float32 tolerance.
SOAP_QR_CASES = [
    TorchCase("SOAP", dict(lr=0.05, eps=1e-3, precondition_frequency=4), soap_chain, module=PO, steps=10,
              label="SOAP-qr-refresh"),
    TorchCase("SOAP", dict(_SOAP_OPTIONS, precondition_frequency=3), soap_chain, module=PO, steps=8),
    TorchCase("SOAP", dict(_SOAP_MERGE, precondition_frequency=3), soap_chain, module=PO, params=merge_tree, steps=8),
]
