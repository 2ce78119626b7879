"""Parity cases for Adam's relatives: NAdam, RAdam, AdaBelief, Yogi, NovoGrad, Lion, Adan, LAMB, LARS, Fromage."""

import jax

from gradtx.optim.chains import nadam_chain, radam_chain
from tests.harness import OptaxCase, TorchCase


def _matrices_only(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _decaying_lr(count):
    return 0.05 / (1.0 + 0.5 * count)


# Defaults are checked against optax's signatures in tests/test_adam_variants.py; options that an alias
# cannot reach (modes, initial values) are run through the transform itself.
OPTAX_CASES = [
    OptaxCase("nadam", dict(learning_rate=0.05, b1=0.8, eps_root=1e-8)),
    OptaxCase("nadamw", dict(learning_rate=0.05, weight_decay=0.1)),
    # b2=0.999 rectifies only from step 6 on, so 12 steps cover both branches.
    OptaxCase("radam", dict(learning_rate=0.05)),
    OptaxCase("scale_by_radam", dict(b2=0.9, eps=1e-4, eps_root=1e-8, threshold=3.0, nesterov=True)),
    OptaxCase("adabelief", dict(learning_rate=0.05)),
    OptaxCase("scale_by_belief", dict(b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, nesterov=True)),
    OptaxCase("yogi", dict(learning_rate=0.05)),
    OptaxCase("scale_by_yogi", dict(b1=0.5, b2=0.9, eps=1e-2, eps_root=1e-8, initial_accumulator_value=0.3)),
    OptaxCase("novograd", dict(learning_rate=0.05)),
    OptaxCase("scale_by_novograd", dict(b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8, weight_decay=0.1)),
    OptaxCase("lion", dict(learning_rate=0.01)),
    OptaxCase("lion", dict(learning_rate=0.01, b1=0.5, b2=0.9, weight_decay=0.1, mask=_matrices_only),
              label="lion-masked-decay"),
    OptaxCase("scale_by_lion", dict(mode="smooth", smooth_beta=2.0)),
    OptaxCase("scale_by_lion", dict(b1=0.5, mode="refined")),
    OptaxCase("adan", dict(learning_rate=0.05, weight_decay=0.1, mask=_matrices_only), label="adan-masked-decay"),
    OptaxCase("scale_by_adan", dict(b1=0.9, b2=0.8, b3=0.95, eps=1e-6, eps_root=1e-8)),
    OptaxCase("lamb", dict(learning_rate=0.05)),
    OptaxCase("lamb", dict(learning_rate=0.05, b1=0.8, eps=1e-8, eps_root=1e-8, weight_decay=0.1,
                           mask=_matrices_only), label="lamb-options-masked-decay"),
    OptaxCase("lars", dict(learning_rate=0.5)),
    OptaxCase("lars", dict(learning_rate=0.5, weight_decay=0.1, weight_decay_mask=_matrices_only,
                           trust_coefficient=0.01, eps=1e-3, trust_ratio_mask=_matrices_only, momentum=0.5,
                           nesterov=True), label="lars-options-masks"),
    OptaxCase("scale_by_trust_ratio", dict(min_norm=0.5, trust_coefficient=0.1, eps=1e-3)),
    OptaxCase("fromage", dict(learning_rate=0.05)),
    OptaxCase("fromage", dict(learning_rate=_decaying_lr, min_norm=1e-2), label="fromage-schedule"),
]

TORCH_CASES = [
    TorchCase("NAdam", dict(lr=0.05), nadam_chain),
    TorchCase("NAdam", dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, momentum_decay=0.05),
              nadam_chain),
    TorchCase("NAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), nadam_chain),
    TorchCase("RAdam", dict(lr=0.05), radam_chain),
    TorchCase("RAdam", dict(lr=0.05, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1), radam_chain),
    TorchCase("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), radam_chain),
]
