"""torch.optim.lr_scheduler for the facade: the same classes, arguments, numbers and state_dicts.

A scheduler edits ``optimizer.param_groups[i]["lr"]`` (a Python float; with
momentum cycling also ``"momentum"`` or ``betas[0]``); the facade's compiled step
reads these as array arguments, so a scheduler never causes a recompilation.

The numbers are torch's: where torch's ``get_lr`` is recursive ("chainable":
it multiplies the group's current lr) so is ours, with the same operations in
the same order, so schedulers compose with each other and with manual edits
of ``lr`` exactly as in torch. The same rules in closed form, as pure
functions of the step for the functional face, are in :mod:`gradtx.schedules`
(each class names its schedule).

Where torch has traps, these classes do not:

- a :class:`SequentialLR` or :class:`ChainedScheduler` may be a child of a
  :class:`SequentialLR` (torch raises or computes wrong values);
- ``load_state_dict`` resumes exactly: it also writes the saved lrs (and cycled
  momenta) back into the param groups, so resuming does not depend on loading the
  optimizer's state first, and every ``state_dict`` can be pickled;
- a param group added with ``optimizer.add_param_group`` after the scheduler was
  built joins the schedule (its ``lr`` becomes its base lr; per-group arguments
  given as lists are read from the group's own keys, e.g. ``{"max_lr": ...}``).

Warnings are torch's: ``scheduler.step()`` before the first ``optimizer.step()``
(read from the facade optimizer's ``_opt_called``), passing ``epoch`` to
``step``, and calling ``get_lr()`` outside of ``step``.
"""

from gradtx.optim.lr_scheduler._base import LRScheduler
from gradtx.optim.lr_scheduler._closed_form import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    PolynomialLR,
    StepLR,
)
from gradtx.optim.lr_scheduler._composite import ChainedScheduler, SequentialLR
from gradtx.optim.lr_scheduler._cyclic import CyclicLR, OneCycleLR
from gradtx.optim.lr_scheduler._plateau import ReduceLROnPlateau

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]
