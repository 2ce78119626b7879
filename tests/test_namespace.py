"""gradtx's public namespace covers optax's top level, name for name, with optax's signatures."""

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

# optax top-level names gradtx does not provide yet. This list may only shrink: the test fails when a name
# is missing that is not listed here, and when a listed name has arrived (remove it from the list then).
NOT_YET_PROVIDED = {
    # subpackages: optax.tree is gradtx.tree; the rest are not part of gradtx's top level
    "assignment", "contrib", "experimental", "losses", "perturbations", "tree_utils",
    # loss functions (optax.losses re-exported at optax's top level): not gradient transformations
    "convex_kl_divergence", "cosine_distance", "cosine_similarity", "ctc_loss", "ctc_loss_with_forward_probs",
    "generalized_kl_divergence", "hinge_loss", "huber_loss", "kl_divergence", "l2_loss", "log_cosh", "ntxent",
    "safe_softmax_cross_entropy", "sigmoid_binary_cross_entropy", "sigmoid_focal_loss", "smooth_labels",
    "softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels", "squared_error",
    # linear algebra and sampling helpers
    "matrix_inverse_pth_root", "power_iteration", "multi_normal", "nnls",
    # optax.tree.map_params under its older top-level name
    "tree_map_params",
}


def _public(module):
    return {name for name in dir(module) if not name.startswith("_")}


def test_every_optax_top_level_name_is_in_gradtx_or_listed():
    missing = _public(optax) - _public(gradtx)
    assert missing - NOT_YET_PROVIDED == set(), "optax names missing from gradtx and not in NOT_YET_PROVIDED"
    assert NOT_YET_PROVIDED - missing == set(), "names gradtx now provides: remove them from NOT_YET_PROVIDED"


@pytest.mark.parametrize("name", sorted(_public(optax) & _public(gradtx)))
def test_shared_names_are_the_same_kind_of_thing(name):
    ours, theirs = getattr(gradtx, name), getattr(optax, name)
    assert inspect.ismodule(ours) == inspect.ismodule(theirs), name
    assert callable(ours) == callable(theirs), name


# Names whose signatures must be optax's: parameter names, order, kinds and defaults.
SAME_SIGNATURE = [
    "MultiSteps", "ema", "lookahead", "zero_nans", "freeze", "selective_transform", "flatten", "conditionally_mask",
    "conditionally_transform", "adaptive_grad_clip", "centralize", "keep_params_nonnegative",
    "per_example_global_norm_clip", "per_example_layer_norm_clip", "apply_every", "monitor", "snapshot",
    "measure_with_ema", "normalize_by_update_norm", "scale_by_param_block_norm", "scale_by_param_block_rms",
    "scale_by_distance_over_gradients", "optimistic_adam", "optimistic_adam_v2", "incremental_update",
    "periodic_update", "inject_hyperparams", "inject_stateful_hyperparams", "WrappedSchedule", "skip_not_finite",
    "skip_large_updates", "with_extra_args_support", "init_empty_state", "apply_updates", "masked", "safe_norm",
    "safe_root_mean_squares", "safe_int32_increment", "update_infinity_moment", "scale_gradient",
    "value_and_grad_from_state", "bias_correction", "update_moment", "update_moment_per_elem_norm",
]


def _same_default(a, b):
    if a is inspect.Parameter.empty or b is inspect.Parameter.empty:
        return a is b
    if isinstance(a, type) or isinstance(b, type):
        return jnp.dtype(a) == jnp.dtype(b) if a is not None and b is not None else a is b
    return a == b or (np.ndim(a) == 0 and np.ndim(b) == 0 and float(a) == float(b))


@pytest.mark.parametrize("name", SAME_SIGNATURE)
def test_signature_matches_optax(name):
    ours = inspect.signature(getattr(gradtx, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs), name
    for key in theirs:
        assert ours[key].kind == theirs[key].kind, f"{name}({key}) kind"
        assert _same_default(ours[key].default, theirs[key].default), f"{name}({key}) default"


STATE_FIELDS = ["EmaState", "MultiStepsState", "LookaheadState", "LookaheadParams", "ZeroNansState", "ApplyEvery",
                "ConditionallyMaskState", "ConditionallyTransformState", "MonitorState", "SnapshotState",
                "InjectStatefulHyperparamsState", "MaskedState", "PartitionState"]


@pytest.mark.parametrize("name", STATE_FIELDS)
def test_state_fields_match_optax(name):
    assert getattr(gradtx, name)._fields == getattr(optax, name)._fields


@pytest.mark.parametrize("name", ["AdaptiveGradClipState", "AddDecayedWeightsState", "ClipByGlobalNormState",
                                  "ClipState", "NonNegativeParamsState", "ScaleState", "ScaleByTrustRatioState"])
def test_empty_state_names_are_empty_states(name):
    assert getattr(gradtx, name) is gradtx.EmptyState
    assert getattr(optax, name) is optax.EmptyState
