"""gradtx's public namespace covers optax's top level, name for name, with optax's signatures."""

import importlib
import inspect
import pkgutil

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

# optax top-level names gradtx does not provide yet. This list may only shrink: the test fails when a name
# is missing that is not listed here, and when a listed name has arrived (remove it from the list then).
NOT_YET_PROVIDED = {
    # subpackages: optax.contrib's names are at gradtx's top level; the rest are not part of gradtx
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


# One import path per public object. The modules that define things are private (a ``_`` in the path);
# a public module's public names are its ``__all__`` where it has one, else its names without a ``_``.
# gradtx repeats a name only where optax repeats it (``optax.schedules.cosine_decay_schedule`` is
# ``optax.cosine_decay_schedule``; ``optax.ScaleState`` is ``optax.EmptyState``), so optax code runs after
# changing the import. gradtx's top level holds optax.contrib's names too.


def _public_modules() -> list[str]:
    names = ["gradtx"]
    for info in pkgutil.walk_packages(gradtx.__path__, "gradtx."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_names(module) -> list[str]:
    return list(getattr(module, "__all__", None) or _public(module))


def _public_paths() -> dict[int, tuple[object, list[str]]]:
    """Every function and class defined in gradtx, with the public paths that reach it."""
    paths: dict[int, tuple[object, list[str]]] = {}
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in _public_names(module):
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("gradtx"):
                paths.setdefault(id(obj), (obj, []))[1].append(f"{module_name}.{name}")
    return paths


def _optax_counterpart(path: str):
    """What optax has at the same path (gradtx's top level also answers for optax.contrib), or None."""
    parts = path.split(".")[1:]
    for root in ([optax, optax.contrib] if len(parts) == 1 else [optax]):
        obj = root
        for part in parts:
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    return None


def test_the_public_modules_are_the_documented_ones():
    assert set(_public_modules()) == {
        "gradtx", "gradtx.microbatching", "gradtx.projections", "gradtx.schedules", "gradtx.second_order",
        "gradtx.transforms", "gradtx.tree", "gradtx.optim", "gradtx.optim.chains", "gradtx.optim.lr_scheduler",
        "gradtx.optim.swa_utils",
    }


def test_each_public_object_has_one_public_path():
    repeated = {}
    for obj, paths in _public_paths().values():
        if len(paths) > 1:
            theirs = [_optax_counterpart(path) for path in paths]
            if any(t is None for t in theirs) or len({id(t) for t in theirs}) != 1:
                repeated[obj.__qualname__] = paths
    assert not repeated, f"objects reachable by more than one public path (optax does not repeat them): {repeated}"


def test_the_repeated_names_are_optaxs():
    """The views gradtx.schedules and gradtx.transforms hold exactly optax's names, as the same objects."""
    for view in ("schedules", "transforms"):
        ours, theirs = getattr(gradtx, view), getattr(optax, view)
        assert _public(ours) == _public(theirs), view
        for name in _public(theirs) & _public(gradtx):
            assert getattr(ours, name) is getattr(gradtx, name), f"gradtx.{view}.{name}"
