"""Parity cases for the factored and matrix optimizers: Adafactor (optax's and torch's), SM3, Muon.

OPTAX_CASES and TORCH_CASES feed the shared suites. optax's SM3 rejects 0-d
leaves (which make_params has) and Muon lives in ``optax.contrib``: those cases are
SM3_CASES and MUON_CASES, run on matrix-only trees by tests/test_factored.py.
"""

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.optim.chains import adafactor_chain, muon_chain
from tests.harness import OptaxCase, TorchCase


def _matrices_only(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _decaying_lr(count):
    return 0.05 / (1.0 + 0.5 * count)


def matrices(dtype):
    """Two 2-D leaves, one tall and one wide (Muon takes only matrices; optax's SM3 no 0-d leaves)."""
    rng = np.random.default_rng(1)
    return {"a": jnp.asarray(rng.normal(size=(4, 3)), dtype), "b": [jnp.asarray(rng.normal(size=(3, 5)), dtype)]}


def ranks_0_to_3(dtype):
    """make_params' leaves plus a 3-D one, whose leading axis is a batch axis for Adafactor's factoring."""
    rng = np.random.default_rng(2)
    shapes = {"t": (2, 3, 4), "w": (4, 3), "b": (5,), "s": ()}
    return {k: jnp.asarray(rng.normal(size=shape), dtype) for k, shape in shapes.items()}


# min_dim_size_to_factor=2 factors the 4x3 and the 2x2 leaves (the tie takes np.argsort's order);
# factored=False is the path of every leaf at optax's default 128 on these small trees.
OPTAX_CASES = [
    OptaxCase("adafactor", dict(learning_rate=0.05, min_dim_size_to_factor=2)),
    # momentum in optax's default float32 buffer: the step uses the full-precision sum, only the stored copy is cast
    OptaxCase("adafactor", dict(learning_rate=_decaying_lr, min_dim_size_to_factor=2, decay_rate=0.5,
                                decay_offset=-3, multiply_by_parameter_scale=False, clipping_threshold=None,
                                momentum=0.9, weight_decay_rate=0.1, eps=1e-3),
              label="adafactor-schedule-momentum-decay"),
    OptaxCase("adafactor", dict(learning_rate=0.05, clipping_threshold=0.5, factored=False, weight_decay_rate=0.1,
                                weight_decay_mask=_matrices_only, momentum=0.5, dtype_momentum=None),
              label="adafactor-unfactored-clip-masked-decay"),
    OptaxCase("adafactor", dict(learning_rate=None, min_dim_size_to_factor=3)),
    OptaxCase("scale_by_factored_rms", dict(min_dim_size_to_factor=2, decay_rate=0.6, epsilon=1e-3)),
    OptaxCase("scale_by_param_block_rms", dict(min_scale=0.6)),
]

# Run against optax on `matrices` (no 0-d leaves) by tests/test_factored.py.
SM3_CASES = [
    OptaxCase("sm3", dict(learning_rate=0.1)),
    OptaxCase("sm3", dict(learning_rate=0.1, momentum=0.5)),
    OptaxCase("scale_by_sm3", dict(b1=0.5, b2=0.9, eps=1e-4)),
]

# gradtx.<name> against optax.contrib.<name>, by tests/test_factored.py. Adaptive Muon is
# chaotic in float32 (optax's own jit and no-jit runs differ by 1e-3 in 12 steps): float64 only.
MUON_CASES = [
    OptaxCase("muon", dict(learning_rate=0.05)),
    OptaxCase("muon", dict(learning_rate=_decaying_lr, ns_steps=3, beta=0.8, eps=1e-3, weight_decay=0.1, nesterov=False,
                           consistent_rms=0.2, adam_b1=0.5, adam_weight_decay=0.1, adam_learning_rate=0.02),
              label="muon-options"),
    OptaxCase("muon", dict(learning_rate=0.05, ns_coeffs="dion", preconditioning="aol")),
    OptaxCase("muon", dict(learning_rate=0.05, preconditioning="schatten", weight_decay=0.1,
                           weight_decay_mask=lambda p: jax.tree.map(lambda x: x.shape[0] == 4, p)),
              label="muon-schatten-masked-decay"),
    OptaxCase("muon", dict(learning_rate=0.05, preconditioning="spectral", adaptive=True), dtypes=("float64",)),
]

TORCH_CASES = [
    TorchCase("Adafactor", dict(lr=0.05), adafactor_chain, params=ranks_0_to_3),
    TorchCase("Adafactor", dict(lr=0.2, beta2_decay=-0.5, eps=(1e-3, 1e-2), d=1.2, weight_decay=0.1),
              adafactor_chain),
    TorchCase("Adafactor", dict(lr=0.05, eps=(None, 0.5), maximize=True), adafactor_chain),
    TorchCase("Adafactor", dict(lr=0.5, eps=(0.3, 1e-3)), adafactor_chain, params=ranks_0_to_3),
    # torch runs Newton-Schulz in bfloat16 whatever the dtype; muon_chain reproduces its roundings.
    # (The facade suite runs these cases through gradtx.optim.Adafactor / Muon too.)
    TorchCase("Muon", dict(lr=0.05), muon_chain, params=matrices),
    TorchCase("Muon", dict(lr=0.05, momentum=0.8, nesterov=False, weight_decay=0.0,
                           adjust_lr_fn="match_rms_adamw"), muon_chain, params=matrices),
    TorchCase("Muon", dict(lr=0.05, ns_steps=3, ns_coefficients=(3.0, -3.2, 1.2), eps=1e-3,
                           adjust_lr_fn="original", weight_decay=0.3), muon_chain, params=matrices),
]
