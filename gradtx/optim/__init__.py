"""gradtx.optim: torch.optim's stateful interface over gradtx's chains.

Change the import and how gradients are obtained::

    import gradtx.optim as optim

    opt = optim.AdamW(params_tree, lr=1e-3)   # or [Parameter, ...], [(name, array), ...], param-group dicts
    for batch in data:
        loss, grads = jax.value_and_grad(loss_fn)(opt.params, batch)
        opt.step(grads)                       # or set p.grad on each Parameter and call opt.step()
        opt.zero_grad()

Every class is a declaration over the functional chains (see
:mod:`gradtx.optim.optimizer` to add one); this module re-exports the ``__all__``
of each optimizer family module and :func:`path_groups` (param groups from path
patterns, :mod:`gradtx.optim.groups`), and ``gradtx.optim.lr_scheduler`` is
imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from gradtx.optim._hooks import RemovableHandle as RemovableHandle
from gradtx.optim._hooks import register_optimizer_step_post_hook as register_optimizer_step_post_hook
from gradtx.optim._hooks import register_optimizer_step_pre_hook as register_optimizer_step_pre_hook
from gradtx.optim.groups import FROZEN as FROZEN
from gradtx.optim.groups import ParamGroups as ParamGroups
from gradtx.optim.groups import path_groups as path_groups
from gradtx.optim.optimizer import Optimizer as Optimizer
from gradtx.optim.optimizer import required as required
from gradtx.optim.parameter import Parameter as Parameter

# One module per family; each lists its optimizer classes in __all__. Modules not written yet are skipped.
_FAMILIES = ("sgd", "adam", "accumulators", "adam_variants", "step_rules", "factored", "second_order", "zero",
             "schedule_free", "beyond", "projected", "preconditioned", "lookahead")

__all__ = ["Optimizer", "Parameter", "RemovableHandle", "required", "register_optimizer_step_pre_hook",
           "register_optimizer_step_post_hook", "path_groups", "ParamGroups", "FROZEN"]
for _name in _FAMILIES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is None:
        continue
    _module = importlib.import_module(f"{__name__}.{_name}")
    globals().update({name: getattr(_module, name) for name in _module.__all__})
    __all__ += list(_module.__all__)


def __getattr__(name: str) -> Any:
    if name == "lr_scheduler":  # imported on first use, as torch.optim.lr_scheduler
        return importlib.import_module(f"{__name__}.lr_scheduler")
    if name == "swa_utils":  # imported on first use, as torch.optim.swa_utils
        return importlib.import_module(f"{__name__}.swa_utils")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from gradtx.optim.torch_io import from_torch_state_dict as from_torch_state_dict  # noqa: E402
from gradtx.optim.torch_io import to_torch_state_dict as to_torch_state_dict  # noqa: E402

__all__ += ["from_torch_state_dict", "to_torch_state_dict"]
# torch.nn.utils' gradient clipping over Parameter boxes.
from gradtx.optim.clip_grad import clip_grad_norm_ as clip_grad_norm_  # noqa: E402
from gradtx.optim.clip_grad import clip_grad_value_ as clip_grad_value_  # noqa: E402
from gradtx.optim.clip_grad import clip_grads_with_norm_ as clip_grads_with_norm_  # noqa: E402
from gradtx.optim.clip_grad import get_total_norm as get_total_norm  # noqa: E402

__all__ += ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]
