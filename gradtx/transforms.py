"""The names of ``optax.transforms``, for code written against it.

optax keeps most of its transforms at its top level and repeats some in
``optax.transforms``; gradtx repeats the same ones, with the same objects
(``gradtx.transforms.masked is gradtx.masked``). Every transform is at the
top level; this module adds only what optax keeps here alone:
``ConditionFn``, :func:`unitwise_norm` and :func:`unitwise_clip`.
"""

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.transforms.<name>

from gradtx._transforms.step_rules import (
    AddNoiseState, add_noise,
)
from gradtx._transforms.wrappers import (
    ApplyIfFiniteState, ConditionFn, ConditionallyMaskState, ConditionallyTransformState, MaskedNode, MaskedState,
    PartitionState, apply_if_finite, conditionally_mask, conditionally_transform, flatten, freeze, masked,
    partition, selective_transform,
)
from gradtx._transforms.accumulation import (
    EmaState, MultiSteps, MultiStepsState, ShouldSkipUpdateFunction, ema, skip_large_updates, skip_not_finite,
)
from gradtx._transforms.monitoring import (
    MonitorState, SnapshotState, measure_with_ema, monitor, snapshot,
)
from gradtx._transforms.constraining import (
    NonNegativeParamsState, ZeroNansState, keep_params_nonnegative, zero_nans,
)
from gradtx._transforms.momentum import (
    TraceState, trace,
)
from gradtx._transforms.blockwise import (
    adaptive_grad_clip, per_example_global_norm_clip, per_example_layer_norm_clip, unitwise_clip, unitwise_norm,
)
from gradtx._transforms.decay import (
    add_decayed_weights,
)
from gradtx._base import (
    chain, named_chain,
)
from gradtx._transforms.clipping import (
    clip, clip_by_global_norm,
)
from gradtx._transforms.factored import (
    clip_by_block_rms,
)

__all__ = [
    "AddNoiseState", "add_noise", "ApplyIfFiniteState", "ConditionFn", "ConditionallyMaskState",
    "ConditionallyTransformState", "MaskedNode", "MaskedState", "PartitionState", "apply_if_finite",
    "conditionally_mask", "conditionally_transform", "flatten", "freeze", "masked", "partition",
    "selective_transform", "EmaState", "MultiSteps", "MultiStepsState", "ShouldSkipUpdateFunction", "ema",
    "skip_large_updates", "skip_not_finite", "MonitorState", "SnapshotState", "measure_with_ema", "monitor",
    "snapshot", "NonNegativeParamsState", "ZeroNansState", "keep_params_nonnegative", "zero_nans", "TraceState",
    "trace", "adaptive_grad_clip", "per_example_global_norm_clip", "per_example_layer_norm_clip", "unitwise_clip",
    "unitwise_norm", "add_decayed_weights", "chain", "named_chain", "clip", "clip_by_global_norm",
    "clip_by_block_rms",
]
