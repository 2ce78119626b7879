"""Parity cases for the accumulators family: Adagrad, RMSprop, Adadelta, Adamax.

One case per distinct code path: optax's aliases and transforms (eps inside or
outside the root, initial accumulators, centering, bias correction, momentum
after the lr, Adadelta without a learning rate) and torch's classes (lr_decay,
maximize before coupled weight decay, RMSprop's momentum before the lr).
"""

from gradtx.optim.chains import adadelta_chain, adagrad_chain, adamax_chain, rmsprop_chain
from tests.harness import OptaxCase, TorchCase

OPTAX_CASES = [
    OptaxCase("adagrad", dict(learning_rate=0.1)),
    OptaxCase("scale_by_rss", dict(initial_accumulator_value=0.0, eps=1e-3)),
    OptaxCase("rmsprop", dict(learning_rate=0.01)),
    OptaxCase("rmsprop", dict(learning_rate=0.01, decay=0.8, eps=1e-3, initial_scale=0.5, eps_in_sqrt=False,
                              momentum=0.9)),
    # bias-corrected centering is 0 - 0 at step 1: a large eps keeps the comparison meaningful
    OptaxCase("rmsprop", dict(learning_rate=0.01, centered=True, eps=0.1, bias_correction=True,
                              momentum=0.5, nesterov=True)),
    OptaxCase("scale_by_rms", dict(decay=0.5, bias_correction=True)),
    OptaxCase("scale_by_stddev", dict(decay=0.9, eps=1e-3, initial_scale=1.0, eps_in_sqrt=False)),
    OptaxCase("adadelta", dict(learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    OptaxCase("adadelta", dict()),  # learning_rate=None: no lr stage at all
    OptaxCase("scale_by_adadelta", dict(rho=0.5)),
    OptaxCase("adamax", dict(learning_rate=0.05)),
    OptaxCase("adamaxw", dict(learning_rate=0.05, weight_decay=0.1)),
    OptaxCase("scale_by_adamax", dict(b1=0.5, b2=0.9, eps=1e-3)),
]

TORCH_CASES = [
    TorchCase("Adagrad", dict(lr=0.1), adagrad_chain),
    TorchCase("Adagrad", dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.5, eps=1e-3), adagrad_chain),
    TorchCase("Adagrad", dict(lr=0.1, weight_decay=0.1, maximize=True), adagrad_chain),
    TorchCase("RMSprop", dict(lr=0.01), rmsprop_chain),
    TorchCase("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-3, weight_decay=0.1, momentum=0.9), rmsprop_chain),
    TorchCase("RMSprop", dict(lr=0.01, centered=True, maximize=True), rmsprop_chain),
    TorchCase("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1), rmsprop_chain),
    TorchCase("Adadelta", dict(), adadelta_chain),
    TorchCase("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True), adadelta_chain),
    TorchCase("Adamax", dict(), adamax_chain),
    TorchCase("Adamax", dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1, maximize=True), adamax_chain),
]
