"""The torch-exact chains: each facade class's update as a functional ``GradientTransformation``.

``adam_chain(lr=1e-3, betas=(0.9, 0.999), ...)`` takes torch's argument names and
defaults and gives torch's numbers (``gradtx.adam`` gives optax's); it is the
chain that ``gradtx.optim.Adam`` declares (``Adam.chain_builder``), so the
functional face can run torch's arithmetic inside ``jax.jit`` with optax-style
code::

    tx = gradtx.optim.chains.adamw_chain(lr=1e-3, weight_decay=1e-2)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
"""

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.optim.chains.<name>

from gradtx.optim._accumulators import adagrad_chain, rmsprop_chain, adadelta_chain, adamax_chain
from gradtx.optim._adam import adam_chain, adamw_chain
from gradtx.optim._adam_variants import nadam_chain, radam_chain
from gradtx.optim._beyond import adopt_chain, ademamix_chain
from gradtx.optim._factored import adafactor_chain, muon_chain
from gradtx.optim._preconditioned import (
    adam_mini_block, adam_mini_chain, laprop_chain, mars_chain, scion_chain, shampoo_chain, soap_chain,
)
from gradtx.optim._projected import galore_chain, sophia_h_chain
from gradtx.optim._schedule_free import schedule_free_adamw_chain, schedule_free_radam_chain, schedule_free_sgd_chain
from gradtx.optim._second_order import sparse_adam_chain
from gradtx.optim._sgd import sgd_chain
from gradtx.optim._step_rules import rprop_chain, asgd_chain

__all__ = [
    "adagrad_chain", "rmsprop_chain", "adadelta_chain", "adamax_chain", "adam_chain", "adamw_chain",
    "nadam_chain", "radam_chain", "adopt_chain", "ademamix_chain", "adafactor_chain", "muon_chain", "soap_chain",
    "mars_chain", "laprop_chain", "scion_chain", "shampoo_chain", "adam_mini_chain", "adam_mini_block", "galore_chain",
    "sophia_h_chain", "schedule_free_adamw_chain", "schedule_free_radam_chain", "schedule_free_sgd_chain",
    "sparse_adam_chain", "sgd_chain", "rprop_chain", "asgd_chain",
]
