"""gradtx.optim: torch.optim's stateful interface over gradtx's chains.

Change the import and how gradients are obtained::

    import gradtx.optim as optim

    opt = optim.AdamW(params_tree, lr=1e-3)   # or [Parameter, ...], [(name, array), ...], param-group dicts
    for batch in data:
        loss, grads = jax.value_and_grad(loss_fn)(opt.params, batch)
        opt.step(grads)                       # or set p.grad on each Parameter and call opt.step()
        opt.zero_grad()

Every class is a declaration over the functional chains (see
:class:`gradtx.optim.Optimizer` to add one); the modules that define them are
private and every name is public here, at one path. :func:`path_groups` makes
param groups from path patterns. The torch-exact chains the classes declare
(``adam_chain``, ``sgd_chain``, ...) are in :mod:`gradtx.optim.chains`;
``gradtx.optim.lr_scheduler`` and ``gradtx.optim.swa_utils`` are imported on
first use, as torch's.
"""

from __future__ import annotations

import importlib
from typing import Any

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.optim.<name>

# The base class, the parameter box, hooks and parameter groups
from gradtx.optim._groups import FROZEN, ParamGroups, path_groups
from gradtx.optim._hooks import RemovableHandle, register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from gradtx.optim._optimizer import Optimizer, number, required
from gradtx.optim._parameter import Parameter

# torch.optim's optimizers, one private module per family
from gradtx.optim._sgd import SGD
from gradtx.optim._adam import Adam, AdamW
from gradtx.optim._accumulators import Adadelta, Adagrad, Adamax, RMSprop
from gradtx.optim._adam_variants import NAdam, RAdam
from gradtx.optim._step_rules import ASGD, Rprop
from gradtx.optim._second_order import LBFGS, SparseAdam
from gradtx.optim._zero import ZeroRedundancyOptimizer

# Optimizers beyond torch.optim, under their reference packages' class names
from gradtx.optim._factored import Adafactor, Muon
from gradtx.optim._schedule_free import AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree
from gradtx.optim._beyond import ADOPT, AdEMAMix, NegativeLRError
from gradtx.optim._prodigy import Prodigy
from gradtx.optim._projected import GaLore, Kron, SophiaH
from gradtx.optim._preconditioned import MARS, SCION, SOAP, AdamMini, LaProp, Shampoo
from gradtx.optim._lookahead import Lookahead

# Saving to and loading from torch's state_dicts; torch.nn.utils' gradient clipping over Parameter boxes
from gradtx.optim._torch_io import from_torch_state_dict, to_torch_state_dict
from gradtx.optim._clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

# The torch-exact chains the classes declare, for the functional face
from gradtx.optim import chains

__all__ = [
    "FROZEN", "ParamGroups", "path_groups", "RemovableHandle", "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook", "Optimizer", "number", "required", "Parameter", "SGD", "Adam", "AdamW",
    "Adadelta", "Adagrad", "Adamax", "RMSprop", "NAdam", "RAdam", "ASGD", "Rprop", "LBFGS", "SparseAdam",
    "ZeroRedundancyOptimizer", "Adafactor", "Muon", "AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree",
    "ADOPT", "AdEMAMix", "NegativeLRError", "Prodigy", "GaLore", "Kron", "SophiaH", "MARS", "SCION", "SOAP",
    "AdamMini", "LaProp", "Shampoo", "Lookahead", "from_torch_state_dict", "to_torch_state_dict",
    "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm",
]


def __getattr__(name: str) -> Any:
    if name == "lr_scheduler":  # imported on first use, as torch.optim.lr_scheduler
        return importlib.import_module(f"{__name__}.lr_scheduler")
    if name == "swa_utils":  # imported on first use, as torch.optim.swa_utils
        return importlib.import_module(f"{__name__}.swa_utils")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
