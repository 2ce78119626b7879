"""Parity cases for GaLore, Sophia and Kron: optax.contrib's functions and pytorch-optimizer's classes.

optax's GaLore and Sophia live in ``optax.contrib``: those cases are CONTRIB_CASES,
run against ``optax.contrib.<name>`` by tests/test_projected.py. TORCH_CASES name
``module="pytorch_optimizer"``; the shared facade suite runs them through
``gradtx.optim``. Sophia-H and Kron draw random probes, so their facades are compared
on injected probes in tests/test_projected.py instead.
"""

import optax

from gradtx.optim.chains import galore_chain
from tests.harness import OptaxCase, TorchCase, loss


def _objective(params, grads):
    del params, grads
    return dict(obj_fn=loss)


def _decaying_lr(count):
    return 0.05 / (1.0 + 0.5 * count)


OPTAX_CASES: list = []

# gradtx.<name> against optax.contrib.<name>: the same float32 SVD and the same PRNG keys give the same numbers.
CONTRIB_CASES = [
    OptaxCase("galore", dict(learning_rate=0.05, rank=2, update_proj_gap=5)),
    OptaxCase("galore", dict(learning_rate=_decaying_lr, rank=1, update_proj_gap=3, scale=0.5, weight_decay=0.1,
                             base_optimizer=optax.scale_by_lion(b1=0.5)), label="galore-schedule-lion-decay"),
    OptaxCase("scale_by_galore", dict(rank=2, update_proj_gap=4), steps=4),
    OptaxCase("sophia", dict(learning_rate=0.05), steps=6, extra_args=_objective),
    OptaxCase("sophia", dict(learning_rate=0.05, b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.1, gamma=0.5,
                             update_interval=3, clip_threshold=None), steps=8, extra_args=_objective),
]

_PO = "pytorch_optimizer"
TORCH_CASES = [
    TorchCase("GaLore", dict(lr=0.05), galore_chain, module=_PO),
    TorchCase("GaLore", dict(lr=0.05, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1), galore_chain, module=_PO),
    # Projected groups: pytorch-optimizer takes the SVD in float32 (`.float()`) whatever the dtype, so these rows
    # compare in float32. tests/test_projected.py runs them in float64 too, with the reference's own SVD.
    TorchCase("GaLore", dict(lr=0.05, rank=2, update_proj_gap=5, scale=0.5, projection_type="std"), galore_chain,
              dtypes=("float32",), module=_PO),
    TorchCase("GaLore", dict(lr=0.05, weight_decay=0.1, rank=1, update_proj_gap=3, scale=1.0,
                             projection_type="reverse_std"), galore_chain, dtypes=("float32",), module=_PO),
    TorchCase("GaLore", dict(lr=0.05, rank=2, update_proj_gap=4, scale=1.0, projection_type="left"), galore_chain,
              dtypes=("float32",), module=_PO),
]

# Kron with update probability 0 never draws a probe (the factors stay at their initial scale): deterministic rows
# of the momentum, bias correction, RMS clipping and both weight decays. Runs with probes: tests/test_projected.py.
TORCH_CASES += [
    TorchCase("Kron", dict(lr=0.05, pre_conditioner_update_probability=0.0), module=_PO),
    TorchCase("Kron", dict(lr=0.05, momentum=0.5, weight_decay=0.1, pre_conditioner_update_probability=0.0,
                           maximize=True), module=_PO),
    TorchCase("Kron", dict(lr=0.05, weight_decay=0.1, weight_decouple=False, pre_conditioner_update_probability=0.0),
              module=_PO),
]
