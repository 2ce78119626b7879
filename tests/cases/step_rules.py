"""Parity cases for the step rules: sign SGD, Signum, noisy SGD, Polyak SGD, optimistic GD, Rprop and ASGD."""

import jax.numpy as jnp

from gradtx.optim.chains import asgd_chain, rprop_chain
from tests.harness import OptaxCase, TorchCase, loss


def _loss_value(params, grads):
    del grads
    return dict(value=loss(params))


OPTAX_CASES = [
    # optax 0.2.8 applies each Rprop step one step late; gradtx's optax-named functions follow it by default
    OptaxCase("rprop", dict(learning_rate=0.05)),
    # an initial step above max_step_size: optax keeps it until the first sign product is non-zero
    OptaxCase("rprop", dict(learning_rate=0.5, eta_minus=0.3, eta_plus=1.5, min_step_size=0.01, max_step_size=0.2)),
    OptaxCase("scale_by_rprop", dict(learning_rate=0.02), steps=4),
    OptaxCase("sign_sgd", dict(learning_rate=0.05)),
    OptaxCase("signum", dict(learning_rate=0.05)),
    OptaxCase("signum", dict(learning_rate=0.05, beta=0.5, accumulator_dtype=jnp.float32),
              label="signum-beta=0.5,accumulator_dtype=float32"),
    OptaxCase("noisy_sgd", dict(learning_rate=0.05, key=0)),
    OptaxCase("polyak_sgd", dict(), extra_args=_loss_value, label="polyak_sgd-defaults"),
    # the loss falls below f_min at step 3: "sps+" then clips the negative gap to zero
    OptaxCase("polyak_sgd", dict(max_learning_rate=0.3, scaling=0.5, f_min=-2.0, eps=1e-3, variant="sps+"),
              extra_args=_loss_value),
    OptaxCase("optimistic_gradient_descent", dict(learning_rate=0.05)),
    # the bare transforms ascend (no learning rate), so they run a few steps only; they cover the other options
    OptaxCase("scale_by_sign", dict(), steps=4, label="scale_by_sign"),
    OptaxCase("add_noise", dict(eta=0.3, gamma=0.6, key=7), steps=4),
    OptaxCase("scale_by_polyak", dict(f_min=1.0, max_learning_rate=0.2, eps=1e-2), steps=4, extra_args=_loss_value),
    OptaxCase("scale_by_optimistic_gradient", dict(alpha=0.1, beta=0.2), steps=4),
]

TORCH_CASES = [
    TorchCase("Rprop", dict(lr=0.05), rprop_chain),
    # lr above the largest step size: torch clamps it on the first step
    TorchCase("Rprop", dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(0.01, 0.08), maximize=True), rprop_chain),
    TorchCase("ASGD", dict(lr=0.05, t0=3), asgd_chain),
    TorchCase("ASGD", dict(lr=0.05, lambd=0.1, alpha=0.5, t0=2, weight_decay=0.1, maximize=True), asgd_chain),
]
