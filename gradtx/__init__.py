"""gradtx: gradient transformations for JAX, with an optax-style functional face and a torch.optim-style facade.

Every functional name is here, at one path (``gradtx.adam``, ``gradtx.chain``,
``gradtx.scale_by_adam``, ``gradtx.cosine_decay_schedule``, ...); the modules that
define them are private. The public subpackages are the ones optax has, each
holding its own names: :mod:`gradtx.tree`, :mod:`gradtx.projections`,
:mod:`gradtx.second_order`, :mod:`gradtx.microbatching`, and the views
:mod:`gradtx.schedules` and :mod:`gradtx.transforms`, which repeat exactly the
names optax repeats in ``optax.schedules`` and ``optax.transforms``. The
stateful, torch-style face is :mod:`gradtx.optim`.
"""

# ruff: noqa: F401 - this module re-exports; each name below is public at gradtx.<name>

# The protocol: GradientTransformation, chain, the state and type aliases
from gradtx._base import (
    ArrayTree, EmptyState, GradientTransformation, GradientTransformationExtraArgs, MaskOrFn, OptState, Params,
    ScalarOrSchedule, Schedule, TransformInitFn, TransformUpdateExtraArgsFn, TransformUpdateFn,
    Updates, apply_updates, chain, identity, incremental_update, init_empty_state, named_chain, periodic_update,
    set_to_zero, stateless, stateless_with_tree_map, with_extra_args_support,
)

# The transforms: composable pieces, one family per private module
from gradtx._transforms.scaling import (
    ScaleByScheduleState, maximize, negate_if, scale, scale_by_learning_rate, scale_by_schedule,
)
from gradtx._transforms.momentum import (
    TraceState, trace,
)
from gradtx._transforms.moments import (
    ScaleByAdamState, ScaleByAmsgradState, scale_by_adam, scale_by_amsgrad,
)
from gradtx._transforms.accumulators import (
    ScaleByAdaDeltaState, ScaleByAdamaxState, ScaleByRStdDevState, ScaleByRmsState, ScaleByRssState,
    scale_by_adadelta, scale_by_adamax, scale_by_rms, scale_by_rss, scale_by_stddev,
)
from gradtx._transforms.adam_variants import (
    ScaleByAdanState, ScaleByBeliefState, ScaleByLionState, ScaleByNAdamState, ScaleByNovogradState, scale_by_adan,
    scale_by_belief, scale_by_lion, scale_by_nadam, scale_by_novograd, scale_by_radam, scale_by_trust_ratio,
    scale_by_yogi,
)
from gradtx._transforms.step_rules import (
    AddNoiseState, ScaleByAsgdState, ScaleByOptimisticGradientState, ScaleByRpropState, add_noise, scale_by_asgd,
    scale_by_optimistic_gradient, scale_by_polyak, scale_by_rprop, scale_by_sign,
)
from gradtx._transforms.factored import (
    FactoredState, ScaleByRelativeStepSizeState, ScaleBySM3State, clip_by_block_rms, decay_rate_pow,
    scale_by_factored_rms, scale_by_param_block_rms, scale_by_relative_step_size, scale_by_sm3,
)
from gradtx._transforms.muon import (
    MuonDimensionNumbers, MuonState, orthogonalize_via_newton_schulz, scale_by_muon, scale_by_newton_schulz,
    scale_by_shape,
)
from gradtx._transforms.lbfgs import (
    LBFGSTorchState, ScaleByLBFGSState, lbfgs_torch_init, lbfgs_torch_step, lbfgs_two_loop, scale_by_lbfgs,
)
from gradtx._transforms.linesearch import (
    BacktrackingLinesearchInfo, ScaleByBacktrackingLinesearchState, ScaleByZoomLinesearchState, ZoomLinesearchInfo,
    scale_by_backtracking_linesearch, scale_by_zoom_linesearch, strong_wolfe_search,
)
from gradtx._transforms.sparse import (
    ScaleBySparseAdamState, dense_and_present, scale_by_sparse_adam,
)
from gradtx._transforms.decay import (
    WeightDecayState, add_decayed_weights, decoupled_weight_decay,
)
from gradtx._transforms.clipping import (
    clip, clip_by_global_norm, clip_grad_norm, clip_grad_value, total_norm,
)
from gradtx._transforms.constraining import (
    NonNegativeParamsState, ZeroNansState, keep_params_nonnegative, zero_nans,
)
from gradtx._transforms.numerics import (
    bias_correction, safe_int32_increment, safe_norm, safe_root_mean_squares, scale_gradient,
    update_infinity_moment, update_moment, update_moment_per_elem_norm, value_and_grad_from_state,
)
from gradtx._transforms.wrappers import (
    ApplyIfFiniteState, ConditionallyMaskState, ConditionallyTransformState, MaskedNode, MaskedState,
    MultiTransformState, PartitionState, apply_if_finite, conditionally_mask, conditionally_transform, flatten,
    freeze, masked, multi_transform, partition, selective_transform,
)
from gradtx._transforms.hyperparams import (
    InjectHyperparamsState, InjectStatefulHyperparamsState, WrappedSchedule, WrappedScheduleState,
    inject_hyperparams, inject_stateful_hyperparams,
)
from gradtx._transforms.dtypes import (
    ComplexAsRealState, PromoteState, complex_as_real, promote_to,
)
from gradtx._transforms.accumulation import (
    ApplyEvery, EmaState, MultiSteps, MultiStepsState, ShouldSkipUpdateFunction, apply_every, ema,
    skip_large_updates, skip_not_finite,
)
from gradtx._transforms.blockwise import (
    AdaptiveGradClipState, ScaleByDistanceOverGradientsState, adaptive_grad_clip, centralize,
    normalize_by_update_norm, per_example_global_norm_clip, per_example_layer_norm_clip,
    scale_by_distance_over_gradients, scale_by_param_block_norm,
)
from gradtx._transforms.monitoring import (
    MonitorState, SnapshotState, measure_with_ema, monitor, snapshot,
)
from gradtx._transforms.slow_weights import (
    LookaheadParams, LookaheadState, lookahead,
)
from gradtx._transforms.empty_states import (
    AddDecayedWeightsState, ClipByGlobalNormState, ClipState, ScaleByTrustRatioState, ScaleState,
)
from gradtx._transforms.schedule_free import (
    ScheduleFreeState, ScheduleFreeStepState, averaging_coefficient, schedule_free, schedule_free_eval_params,
    schedule_free_step,
)
from gradtx._transforms.beyond import (
    ScaleByAdemamixState, ScaleBySimplifiedAdEMAMixState, cautious, cautious_mask, scale_by_ademamix,
    scale_by_adopt, scale_by_simplified_ademamix,
)
from gradtx._transforms.prodigy import (
    ProdigyState, prodigy,
)
from gradtx._transforms.galore import (
    GaLoreDimensionNumbers, GaLoreProjectionState, GaLoreState, ScaleByStepSizeRatioState, scale_by_galore,
    scale_by_galore_projection, scale_by_step_size_ratio,
)
from gradtx._transforms.sophia import (
    HutchinsonState, SophiaHState, SophiaState, hutchinson_estimator_diag_hessian, scale_by_sophia,
    scale_by_sophia_h,
)
from gradtx._transforms.psgd import (
    KronState, balance_kron_factors, init_kron_factors, kron_precondition, kron_update_probability, scale_by_kron,
    update_kron_factors,
)
from gradtx._transforms.adam_mini import (
    ADAM_MINI_BLOCKS, ScaleByAdamMiniState, scale_by_adam_mini,
)
from gradtx._transforms.mars import (
    ScaleByLapropState, ScaleByMarsState, scale_by_laprop, scale_by_mars,
)
from gradtx._transforms.preconditioned import (
    DecayAfterStepState, ScaleByShampooState, ScaleBySoapState, decay_after_step, scale_by_shampoo, scale_by_soap,
    soap_merged_shape,
)
from gradtx._transforms.scion import (
    LMO_NORMS, ScaleByLmoMomentumState, lmo_direction, scale_by_lmo, scale_by_lmo_momentum, torch_lerp,
)

# optax.contrib's step-size-free methods and wrappers (at the top level, as every other transform)
from gradtx._transforms.contrib_lr_free import (
    COCOBState, DAdaptAdamWState, DoGState, DoWGState, MadgradState, MomoAdamState, MomoState, dadapt_adamw, momo,
    momo_adam, scale_by_acprop, scale_by_cocob, scale_by_dog, scale_by_dowg, scale_by_madgrad,
)
from gradtx._transforms.contrib_wrappers import (
    DifferentiallyPrivateAggregateState, MechanicState, NormalizeState, SAMState, SplitRealAndImaginaryArrays,
    SplitRealAndImaginaryState, differentially_private_aggregate, mechanize, normalize, sam,
    split_real_and_imaginary,
)

# Optimizers: chains of transforms under optax's names, and the torch-exact chains (``adam_chain``, ...)
from gradtx._aliases.core import (
    adam, adamw, amsgrad, sgd,
)
from gradtx._aliases.accumulators import (
    adadelta, adagrad, adamax, adamaxw, rmsprop,
)
from gradtx._aliases.adam_variants import (
    adabelief, adan, fromage, lamb, lars, lion, nadam, nadamw, novograd, radam, yogi,
)
from gradtx._aliases.step_rules import (
    noisy_sgd, optimistic_gradient_descent, polyak_sgd, rprop, sign_sgd, signum,
)
from gradtx._aliases.factored import (
    adafactor, muon, sm3,
)
from gradtx._aliases.second_order import (
    lbfgs,
)
from gradtx._aliases.optimistic import (
    optimistic_adam, optimistic_adam_v2,
)
from gradtx._aliases.contrib import (
    acprop, cocob, dog, dowg, dpsgd, madgrad,
)
from gradtx._aliases.beyond import (
    ademamix, adopt, schedule_free_adamw, schedule_free_sgd, simplified_ademamix,
)
from gradtx._aliases.projected import (
    galore, kron, sophia,
)
from gradtx._aliases.preconditioned import (
    adam_mini, laprop, mars, scion, shampoo, soap,
)

# Schedules: pure functions of the step count (optax's, and torch.optim.lr_scheduler's rules in closed form)
from gradtx._schedules.optax_style import (
    constant_schedule, cosine_decay_schedule, cosine_onecycle_schedule, exponential_decay, linear_onecycle_schedule,
    linear_schedule, piecewise_constant_schedule, piecewise_interpolate_schedule, polynomial_schedule,
    sgdr_schedule, warmup_constant_schedule, warmup_cosine_decay_schedule, warmup_exponential_decay_schedule,
)
from gradtx._schedules.torch_style import (
    constant_factor_schedule, cosine_annealing_schedule, cosine_restarts_schedule, cyclic_momentum_schedule,
    cyclic_schedule, geometric_schedule, lambda_schedule, linear_factor_schedule, multiplicative_schedule,
    multistep_decay_schedule, onecycle_momentum_schedule, onecycle_schedule, polynomial_decay_schedule,
    step_decay_schedule,
)
from gradtx._schedules.combinators import (
    chain_schedules, join_schedules,
)
from gradtx._schedules.plateau import (
    ReduceLROnPlateauState, reduce_on_plateau,
)
from gradtx._schedules.values import (
    schedule_values,
)
from gradtx._schedules._object import (
    ScheduleFn,
)

# Parameter groups by path, reading and carrying state, checkpoints, sharded state
from gradtx._paths import (
    path_labels, path_mask, path_matches,
)
from gradtx._state_tools import (
    CarryReport, carry_state, current_hyperparams, state_nbytes,
)
from gradtx._checkpoint import (
    load_npz, load_state_dict_npz, save_npz, save_state_dict_npz, state_dict_from_data, state_dict_to_data,
)
from gradtx._sharding import (
    ZeroRedundancyState, state_sharding, zero_redundancy,
)

# optax's top-level helpers that gradtx keeps with the tree functions
from gradtx._microbatching import microbatch
from gradtx._tree import safe_increment
from gradtx._tree import tree_global_norm as global_norm

# Helpers for writing transforms and declarations: a hyperparameter's value at a step, a range check that stands
# aside for traced values, GaLore's projection side, one array's Kron step
from gradtx._hyper import value_at
from gradtx._checks import check_range
from gradtx._transforms.galore import galore_side
from gradtx._transforms.psgd import kron_leaf_step

# The subpackages optax has (the torch-style face, gradtx.optim, is imported on its own)
from gradtx import microbatching, projections, schedules, second_order, transforms, tree

__version__ = "0.1.0"
