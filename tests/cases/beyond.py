"""Parity cases for the optimizers beyond torch.optim and optax's core: schedule-free, ADOPT, AdEMAMix, Prodigy.

CONTRIB_CASES run ``gradtx.<name>`` against ``optax.contrib.<name>`` (tests/test_beyond_optimizers.py);
TORCH_CASES name the reference package in ``module`` and feed the shared facade suite.
The schedule-free and pytorch_optimizer classes keep their counters in the param group, so they have no
standalone chain row.
"""

import gradtx
from tests.harness import OptaxCase, TorchCase

OPTAX_CASES = []

CONTRIB_CASES = [
    OptaxCase("schedule_free_adamw", dict(learning_rate=0.05)),
    OptaxCase("schedule_free_adamw", dict(learning_rate=0.05, warmup_steps=4, b1=0.8, b2=0.99, eps=1e-6,
                                          weight_decay=0.1, weight_lr_power=1.0), label="schedule_free_adamw-options"),
    OptaxCase("schedule_free_sgd", dict(learning_rate=0.05)),
    OptaxCase("schedule_free_sgd", dict(learning_rate=0.05, warmup_steps=4, b1=0.7, weight_decay=0.1,
                                        weight_lr_power=3.0), label="schedule_free_sgd-options"),
]

_SF = "schedulefree"
TORCH_CASES = [
    TorchCase("AdamWScheduleFree", dict(lr=0.05), module=_SF),
    TorchCase("AdamWScheduleFree", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup_steps=4,
                                        r=0.5, weight_lr_power=1.0), module=_SF),
    TorchCase("SGDScheduleFree", dict(lr=0.05), module=_SF),
    TorchCase("SGDScheduleFree", dict(lr=0.05, momentum=0.8, weight_decay=0.1, warmup_steps=3, r=1.0), module=_SF),
    # beta2=0.999 rectifies from step 6 on: 12 steps cover the silent phase and the rectified one.
    TorchCase("RAdamScheduleFree", dict(lr=0.05), module=_SF),
    TorchCase("RAdamScheduleFree", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, r=0.5,
                                        silent_sgd_phase=False), module=_SF),
]


def _decaying(count):
    return 0.9999 - 0.1 / (1.0 + count)


CONTRIB_CASES += [
    OptaxCase("adopt", dict(learning_rate=0.05)),
    OptaxCase("adopt", dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-4, nesterov=True), label="adopt-nesterov"),
    OptaxCase("adopt", dict(learning_rate=0.05, use_clipping=False), label="adopt-unclipped", dtypes=("float64",)),
    OptaxCase("scale_by_adopt", dict(b1=0.5, clip_value_fn=lambda count: 0.5 + 0.1 * count), label="scale_by_adopt-clip",
              dtypes=("float64",)),
    OptaxCase("ademamix", dict(learning_rate=0.05)),
    OptaxCase("ademamix", dict(learning_rate=0.05, b1=0.8, b2=0.99, b3=_decaying, alpha=lambda c: 0.5 * c,
                               eps=1e-6, eps_root=1e-8, weight_decay=0.1), label="ademamix-schedules"),
    OptaxCase("scale_by_ademamix", dict(b3=0.99, alpha=2.0), dtypes=("float64",)),
    OptaxCase("simplified_ademamix", dict(learning_rate=0.01)),
    OptaxCase("simplified_ademamix", dict(learning_rate=0.01, b1=0.9, b2=0.99, alpha=lambda c: 0.1 * c, eps=1e-6,
                                          eps_root=1e-8, weight_decay=0.1), label="simplified_ademamix-schedule"),
    OptaxCase("scale_by_simplified_ademamix", dict(alpha=2.0), dtypes=("float64",)),
]

_PO = "pytorch_optimizer"
TORCH_CASES += [
    TorchCase("ADOPT", dict(lr=0.05), module=_PO),
    TorchCase("ADOPT", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.1, eps=1e-4, maximize=True), module=_PO),
    TorchCase("ADOPT", dict(lr=0.05, weight_decay=0.1, weight_decouple=True, clip_lambda=None), module=_PO),
    TorchCase("ADOPT", dict(lr=0.05, weight_decay=0.1, weight_decouple=True, fixed_decay=True, cautious=True),
              module=_PO),
    TorchCase("AdEMAMix", dict(lr=0.05), module=_PO),
    TorchCase("AdEMAMix", dict(lr=0.05, betas=(0.8, 0.99, 0.999), alpha=2.0, t_alpha_beta3=6, weight_decay=0.1,
                               eps=1e-6, maximize=True), module=_PO),
    TorchCase("AdEMAMix", dict(lr=0.05, weight_decay=0.1, weight_decouple=True, t_alpha_beta3=20, cautious=True),
              module=_PO),
]


def prodigy_torch_chain(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0, decouple=True,
                        use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0):
    """prodigyopt.Prodigy's step for the whole tree: gradtx.prodigy with its options."""
    return gradtx.prodigy(lr, betas, beta3, eps, estim_lr0=d0, estim_lr_coef=d_coef, weight_decay=weight_decay,
                          safeguard_warmup=safeguard_warmup, bias_correction=use_bias_correction, decouple=decouple)


CONTRIB_CASES += [
    OptaxCase("prodigy", dict()),
    OptaxCase("prodigy", dict(learning_rate=0.5, betas=(0.8, 0.99), beta3=0.9, eps=1e-6, estim_lr0=1e-3,
                              estim_lr_coef=0.5, weight_decay=0.1, safeguard_warmup=True), label="prodigy-options"),
    OptaxCase("prodigy", dict(learning_rate=lambda count: 1.0 / (1.0 + count), betas=(0.0, 0.99)),
              label="prodigy-schedule-no-momentum", dtypes=("float64",)),
]

# Prodigy's d is one number for all parameters: the chain runs over the whole tree, and so does gradtx.optim.Prodigy.
# (prodigyopt with betas[0] == 0 steps with the new d, a branch gradtx.prodigy does not reproduce.)
TORCH_CASES += [
    TorchCase("Prodigy", dict(), prodigy_torch_chain, module="prodigyopt"),
    TorchCase("Prodigy", dict(lr=0.5, betas=(0.8, 0.99), beta3=0.9, eps=1e-6, weight_decay=0.1, d0=1e-3, d_coef=0.5,
                              use_bias_correction=True, safeguard_warmup=True), prodigy_torch_chain,
              module="prodigyopt"),
    # prodigyopt keeps d in Python float64, gradtx (as optax) in the parameters' dtype: with L2 decay the float32
    # estimate drifts past the float32 tolerance by step 12 in the facade (traced hyperparameters round once more).
    TorchCase("Prodigy", dict(weight_decay=0.1, decouple=False, betas=(0.5, 0.999)), prodigy_torch_chain,
              module="prodigyopt", dtypes=("float64",)),
]
