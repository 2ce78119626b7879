"""Parity cases for the optimizers beyond torch.optim and optax's core: schedule-free, ADOPT, AdEMAMix, Prodigy.

CONTRIB_CASES run ``gradtx.<name>`` against ``optax.contrib.<name>`` (tests/test_beyond_optimizers.py);
TORCH_CASES name the reference package in ``module`` and feed the shared facade suite.
The schedule-free classes keep their counters in the param group, so they have no standalone chain.
"""

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
