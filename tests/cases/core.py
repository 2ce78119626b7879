"""Parity cases for the core transforms and aliases (sgd, adam, adamw, amsgrad)."""

from gradtx.optim.chains import adam_chain, adamw_chain
from gradtx.optim.chains import sgd_chain
from tests.harness import OptaxCase, TorchCase

OPTAX_CASES = [
    OptaxCase("sgd", dict(learning_rate=0.05)),
    OptaxCase("sgd", dict(learning_rate=0.05, momentum=0.9)),
    OptaxCase("sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    OptaxCase("adam", dict(learning_rate=0.05)),
    OptaxCase("adam", dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)),
    OptaxCase("adam", dict(learning_rate=0.05, nesterov=True)),
    OptaxCase("adamw", dict(learning_rate=0.05, weight_decay=0.1)),
    OptaxCase("adamw", dict(learning_rate=0.05, weight_decay=0.1, nesterov=True)),
    OptaxCase("amsgrad", dict(learning_rate=0.05)),
    OptaxCase("amsgrad", dict(learning_rate=0.05, bias_correction_mu=False, bias_correction_nu=False)),
    OptaxCase("scale_by_adam", dict(b1=0.5, b2=0.9)),
    OptaxCase("trace", dict(decay=0.8, nesterov=True)),
    OptaxCase("clip", dict(max_delta=0.5)),
    OptaxCase("clip_by_global_norm", dict(max_norm=1.0)),
    OptaxCase("add_decayed_weights", dict(weight_decay=0.3)),
    OptaxCase("scale", dict(step_size=-0.1)),
    OptaxCase("scale_by_learning_rate", dict(learning_rate=0.1)),
]

TORCH_CASES = [
    TorchCase("SGD", dict(lr=0.05), sgd_chain),
    TorchCase("SGD", dict(lr=0.05, momentum=0.9), sgd_chain),
    TorchCase("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3), sgd_chain),
    TorchCase("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1), sgd_chain),
    TorchCase("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1, maximize=True), sgd_chain),
    TorchCase("Adam", dict(lr=0.05), adam_chain),
    TorchCase("Adam", dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1), adam_chain),
    TorchCase("Adam", dict(lr=0.05, amsgrad=True, maximize=True), adam_chain),
    TorchCase("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True), adam_chain),
    TorchCase("AdamW", dict(lr=0.05), adamw_chain),
    TorchCase("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True), adamw_chain),
    TorchCase("AdamW", dict(lr=0.05, maximize=True, betas=(0.5, 0.9)), adamw_chain),
]
