"""The names of ``optax.schedules``, for code written against it.

optax keeps its schedules at its top level and repeats them in
``optax.schedules``; gradtx does the same, with the same objects:
``gradtx.schedules.cosine_decay_schedule is gradtx.cosine_decay_schedule``.
Every schedule (optax's, torch.optim.lr_scheduler's rules in closed form,
:func:`gradtx.join_schedules`, :func:`gradtx.schedule_values`, ...) is at the top
level; this module adds only :class:`StatefulSchedule`, which optax keeps here.
"""

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.schedules.<name>

from gradtx._transforms.hyperparams import (
    InjectHyperparamsState, InjectStatefulHyperparamsState, WrappedSchedule, inject_hyperparams,
    inject_stateful_hyperparams,
)
from gradtx._base import (
    Schedule, StatefulSchedule,
)
from gradtx._schedules.optax_style import (
    constant_schedule, cosine_decay_schedule, cosine_onecycle_schedule, exponential_decay, linear_onecycle_schedule,
    linear_schedule, piecewise_constant_schedule, piecewise_interpolate_schedule, polynomial_schedule,
    sgdr_schedule, warmup_constant_schedule, warmup_cosine_decay_schedule, warmup_exponential_decay_schedule,
)
from gradtx._schedules.combinators import (
    join_schedules,
)

__all__ = [
    "InjectHyperparamsState", "InjectStatefulHyperparamsState", "WrappedSchedule", "inject_hyperparams",
    "inject_stateful_hyperparams", "Schedule", "StatefulSchedule", "constant_schedule", "cosine_decay_schedule",
    "cosine_onecycle_schedule", "exponential_decay", "linear_onecycle_schedule", "linear_schedule",
    "piecewise_constant_schedule", "piecewise_interpolate_schedule", "polynomial_schedule", "sgdr_schedule",
    "warmup_constant_schedule", "warmup_cosine_decay_schedule", "warmup_exponential_decay_schedule",
    "join_schedules",
]
