"""Parity cases for optax's smaller transforms: constraints, per-block scaling, accumulation, optimistic Adam."""

import jax.numpy as jnp

from tests.harness import OptaxCase

OPTAX_CASES = [
    OptaxCase("zero_nans"),
    OptaxCase("keep_params_nonnegative"),
    OptaxCase("centralize"),
    OptaxCase("adaptive_grad_clip", dict(clipping=0.1)),
    OptaxCase("adaptive_grad_clip", dict(clipping=0.5, eps=0.2)),
    OptaxCase("adaptive_grad_clip", dict(clipping=0.05, axis=None)),
    OptaxCase("normalize_by_update_norm"),
    OptaxCase("normalize_by_update_norm", dict(scale_factor=0.3, eps=1e-3)),
    OptaxCase("scale_by_param_block_norm"),
    OptaxCase("scale_by_param_block_norm", dict(min_scale=2.0)),
    OptaxCase("scale_by_param_block_rms", dict(min_scale=0.5)),
    OptaxCase("scale_by_distance_over_gradients", dict(param_dtype=jnp.float64)),
    OptaxCase("scale_by_distance_over_gradients", dict(reps_rel=1e-2, eps=1e-6, param_dtype=jnp.float64,
                                                       global_scale=-0.5)),
    OptaxCase("ema", dict(decay=0.9)),
    OptaxCase("ema", dict(decay=0.5, debias=False)),
    OptaxCase("ema", dict(decay=0.8, accumulator_dtype=jnp.float32), dtypes=("float32",)),
    OptaxCase("apply_every", dict(k=3)),
    OptaxCase("apply_every", dict(k=1)),
    OptaxCase("optimistic_adam_v2", dict(learning_rate=0.05)),
    OptaxCase("optimistic_adam_v2", dict(learning_rate=0.05, alpha=0.5, beta=2.0, b1=0.8, nesterov=False)),
]

TORCH_CASES = []
